/**
 * @module worker/storage — the keys the extension keeps, and where. Long-lived state and the
 * rotating refresh token live in `chrome.storage.local`, whose access level the worker sets to
 * `TRUSTED_CONTEXTS` at start (content scripts cannot read it; see `background.ts`); the short-lived
 * access token and a pending device sign-in live in `chrome.storage.session` (memory only, trusted
 * contexts only by default).
 */

/** The part of a `chrome.storage` area this extension uses. */
export interface KeyValue {
  get(keys: string[]): Promise<Record<string, unknown>>;
  set(items: Record<string, unknown>): Promise<void>;
  remove(keys: string[]): Promise<void>;
}

/** `chrome.storage.local` keys. */
export const LOCAL = {
  server: 'server',
  insecure: 'insecure',
  refreshToken: 'refreshToken',
  account: 'account',
  instanceId: 'instanceId',
  sites: 'sites',
} as const;

/** `chrome.storage.session` keys. */
export const SESSION = {
  accessToken: 'accessToken',
  accessTokenExpiresAt: 'accessTokenExpiresAt',
  deviceFlow: 'deviceFlow',
} as const;

/** `area`, used only once `restricted` has resolved (its access level is set); rejects if it failed. */
export function trustedOnly(area: KeyValue, restricted: Promise<void>): KeyValue {
  return {
    get: async (keys) => (await restricted, area.get(keys)),
    set: async (items) => (await restricted, area.set(items)),
    remove: async (keys) => (await restricted, area.remove(keys)),
  };
}

/** An in-memory `KeyValue` (tests, and a fallback). */
export class MemoryKeyValue implements KeyValue {
  readonly data = new Map<string, unknown>();
  async get(keys: string[]): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const k of keys) if (this.data.has(k)) out[k] = structuredClone(this.data.get(k));
    return out;
  }
  async set(items: Record<string, unknown>): Promise<void> {
    for (const [k, v] of Object.entries(items)) this.data.set(k, structuredClone(v));
  }
  async remove(keys: string[]): Promise<void> {
    for (const k of keys) this.data.delete(k);
  }
}

export const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
export const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
