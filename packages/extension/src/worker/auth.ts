/**
 * @module worker/auth — sign-in with the OAuth 2.0 device authorization grant (RFC 8628) against the
 * server the user entered, and the tokens that follow: the rotating refresh token in local storage,
 * the access token in session storage, refreshed before it expires.
 *
 * Endpoints come from `${server}/oauth2/.well-known/openid-configuration` and must be on the
 * server's own origin (a discovery document cannot send the device code or tokens elsewhere).
 */
import { Type } from '@sinclair/typebox';
import { PalisadeError, validator } from '@palisade/protocol';
import { LOCAL, SESSION, num, str, type KeyValue } from './storage.ts';

/** OAuth client of the extension (public, no secret). */
export const CLIENT_ID = 'palisade-extension';
export const SCOPE = 'openid offline_access agent';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_MS = 60_000;
/** Bound on any OAuth response body we read. */
const MAX_BODY = 64 * 1024;

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Checks the server URL the user typed: `https:` always; `http:` only for 127.0.0.1 / localhost
 * (then `insecure` is true and the popup shows a warning). Returns the origin.
 */
export function checkServerUrl(raw: string): { server: string; insecure: boolean } {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the server URL is not a valid absolute URL');
  }
  if (url.username || url.password) throw new PalisadeError('PAL_ERR_URL_REFUSED', 'credentials in the server URL are refused');
  if (url.protocol === 'https:') return { server: url.origin, insecure: false };
  if (url.protocol === 'http:' && LOOPBACK.has(url.hostname)) return { server: url.origin, insecure: true };
  throw new PalisadeError('PAL_ERR_URL_REFUSED', 'the server URL must use https (http only for 127.0.0.1 or localhost)');
}

/** The WebSocket URL of the agent endpoint for a server origin. */
export function agentSocketUrl(server: string): string {
  const url = new URL('/ws/agent', server);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

const Discovery = validator(
  Type.Object({ device_authorization_endpoint: Type.String({ maxLength: 2048 }), token_endpoint: Type.String({ maxLength: 2048 }) }),
);
const DeviceResponse = validator(
  Type.Object({
    device_code: Type.String({ minLength: 1, maxLength: 4096 }),
    user_code: Type.String({ minLength: 1, maxLength: 64 }),
    verification_uri: Type.String({ maxLength: 2048 }),
    verification_uri_complete: Type.Optional(Type.String({ maxLength: 2048 })),
    expires_in: Type.Number({ minimum: 1, maximum: 86_400 }),
    interval: Type.Optional(Type.Number({ minimum: 0, maximum: 3600 })),
  }),
);
const TokenResponse = validator(
  Type.Object({
    access_token: Type.String({ minLength: 1, maxLength: 8192 }),
    expires_in: Type.Optional(Type.Number({ minimum: 1 })),
    refresh_token: Type.Optional(Type.String({ minLength: 1, maxLength: 8192 })),
    id_token: Type.Optional(Type.String({ maxLength: 16_384 })),
  }),
);
const OAuthError = validator(Type.Object({ error: Type.String({ maxLength: 128 }), error_description: Type.Optional(Type.String({ maxLength: 1024 })) }));

/** A device sign-in waiting for the user. */
export interface DeviceFlow {
  server: string;
  tokenEndpoint: string;
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  /** `verification_uri_complete` when given (opens with the code filled in). */
  verificationUriComplete: string | undefined;
  intervalMs: number;
  expiresAt: number;
}

export type AuthState = 'signed-out' | 'pending' | 'signed-in';

export interface AuthDeps {
  fetch: typeof fetch;
  local: KeyValue;
  session: KeyValue;
  now?: () => number;
  /** Waits `ms`, or rejects when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Called after every change of state (sign-in, refresh, sign-out, error). */
  onChange?: () => void;
}

const defaultSleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });

/**
 * Sign-in state and tokens.
 * @example
 * const auth = new Auth({ fetch, local: chrome.storage.local, session: chrome.storage.session });
 * const { userCode } = await auth.signIn('https://palisade.example');
 */
export class Auth {
  state: AuthState = 'signed-out';
  server: string | undefined;
  insecure = false;
  account: string | undefined;
  device: DeviceFlow | undefined;
  lastError: string | undefined;

  readonly #d: Required<AuthDeps>;
  #poll: AbortController | undefined;
  #refreshing: Promise<string | undefined> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(deps: AuthDeps) {
    this.#d = { now: Date.now, sleep: defaultSleep, onChange: () => {}, ...deps };
  }

  /** Reads the stored state; resumes a pending device sign-in and the refresh schedule. */
  async load(): Promise<void> {
    const l = await this.#d.local.get([LOCAL.server, LOCAL.insecure, LOCAL.refreshToken, LOCAL.account]);
    const s = await this.#d.session.get([SESSION.accessToken, SESSION.accessTokenExpiresAt, SESSION.deviceFlow]);
    this.server = str(l[LOCAL.server]);
    this.insecure = l[LOCAL.insecure] === true;
    this.account = str(l[LOCAL.account]);
    const signedIn = str(l[LOCAL.refreshToken]) !== undefined || str(s[SESSION.accessToken]) !== undefined;
    const flow = s[SESSION.deviceFlow] as DeviceFlow | undefined;
    if (signedIn) {
      this.state = 'signed-in';
      this.device = undefined;
      this.#scheduleRefresh(num(s[SESSION.accessTokenExpiresAt]));
    } else if (flow && typeof flow === 'object' && flow.expiresAt > this.#d.now()) {
      this.state = 'pending';
      this.device = flow;
      if (!this.#poll) void this.#pollLoop(flow);
    } else {
      this.state = 'signed-out';
    }
    this.#d.onChange();
  }

  /** Starts a device sign-in; the user then enters `userCode` at `verificationUri`. Polling runs on its own. */
  async signIn(rawServer: string): Promise<DeviceFlow> {
    const { server, insecure } = checkServerUrl(rawServer);
    this.cancelSignIn();
    this.lastError = undefined;
    const discovery = await this.#json(`${server}/oauth2/.well-known/openid-configuration`, undefined, Discovery, 'discovery document');
    const deviceEndpoint = sameOrigin(discovery.device_authorization_endpoint, server);
    const tokenEndpoint = sameOrigin(discovery.token_endpoint, server);
    const body = new URLSearchParams({ client_id: CLIENT_ID, scope: SCOPE });
    const r = await this.#json(deviceEndpoint, body, DeviceResponse, 'device authorization');
    const flow: DeviceFlow = {
      server,
      tokenEndpoint,
      deviceCode: r.device_code,
      userCode: r.user_code,
      verificationUri: sameOrigin(r.verification_uri, server),
      verificationUriComplete: r.verification_uri_complete === undefined ? undefined : sameOrigin(r.verification_uri_complete, server),
      intervalMs: Math.max(1, r.interval ?? 5) * 1000,
      expiresAt: this.#d.now() + r.expires_in * 1000,
    };
    await this.#d.local.set({ [LOCAL.server]: server, [LOCAL.insecure]: insecure });
    await this.#d.session.set({ [SESSION.deviceFlow]: flow });
    this.server = server;
    this.insecure = insecure;
    this.device = flow;
    this.state = 'pending';
    this.#d.onChange();
    void this.#pollLoop(flow);
    return flow;
  }

  /** Abandons a pending device sign-in. */
  cancelSignIn(): void {
    this.#poll?.abort(new Error('cancelled'));
    this.#poll = undefined;
    if (this.state === 'pending') {
      this.state = 'signed-out';
      this.device = undefined;
      void this.#d.session.remove([SESSION.deviceFlow]);
      this.#d.onChange();
    }
  }

  /** A valid access token (refreshed first when it expires within a minute), or `undefined` if signed out. */
  async accessToken(): Promise<string | undefined> {
    const s = await this.#d.session.get([SESSION.accessToken, SESSION.accessTokenExpiresAt]);
    const token = str(s[SESSION.accessToken]);
    const exp = num(s[SESSION.accessTokenExpiresAt]) ?? 0;
    if (token !== undefined && exp - REFRESH_MARGIN_MS > this.#d.now()) return token;
    return this.refresh();
  }

  /**
   * Exchanges the refresh token for new tokens, keeping the newest refresh token (they rotate).
   * One refresh at a time. `undefined` when signed out or the server is unreachable.
   */
  refresh(): Promise<string | undefined> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  /** Forgets every token and the server's sign-in (the server URL is kept for convenience). */
  async signOut(): Promise<void> {
    this.cancelSignIn();
    clearTimeout(this.#refreshTimer);
    await this.#d.local.remove([LOCAL.refreshToken, LOCAL.account]);
    await this.#d.session.remove([SESSION.accessToken, SESSION.accessTokenExpiresAt, SESSION.deviceFlow]);
    this.state = 'signed-out';
    this.account = undefined;
    this.device = undefined;
    this.#d.onChange();
  }

  async #refresh(): Promise<string | undefined> {
    const l = await this.#d.local.get([LOCAL.server, LOCAL.refreshToken]);
    const server = str(l[LOCAL.server]);
    const refreshToken = str(l[LOCAL.refreshToken]);
    if (server === undefined || refreshToken === undefined) return undefined;
    try {
      const discovery = await this.#json(`${server}/oauth2/.well-known/openid-configuration`, undefined, Discovery, 'discovery document');
      const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: CLIENT_ID });
      const res = await this.#post(sameOrigin(discovery.token_endpoint, server), body);
      if (TokenResponse.check(res.body)) {
        await this.#storeTokens(res.body);
        return res.body.access_token;
      }
      if (OAuthError.check(res.body) && (res.body.error === 'invalid_grant' || res.body.error === 'invalid_client')) {
        this.lastError = 'the session ended; sign in again';
        await this.signOut();
        return undefined;
      }
      this.lastError = `token refresh failed (HTTP ${res.status})`;
    } catch (e) {
      this.lastError = `token refresh failed: ${(e as Error).message}`;
    }
    this.#d.onChange();
    return undefined;
  }

  async #pollLoop(flow: DeviceFlow): Promise<void> {
    const ctl = new AbortController();
    this.#poll = ctl;
    let interval = flow.intervalMs;
    try {
      while (this.#d.now() < flow.expiresAt) {
        await this.#d.sleep(interval, ctl.signal);
        const body = new URLSearchParams({ grant_type: DEVICE_GRANT, device_code: flow.deviceCode, client_id: CLIENT_ID });
        let res: { status: number; body: unknown };
        try {
          res = await this.#post(flow.tokenEndpoint, body);
        } catch {
          continue; // network trouble: try again at the next interval
        }
        if (ctl.signal.aborted) return;
        if (TokenResponse.check(res.body)) {
          await this.#d.session.remove([SESSION.deviceFlow]);
          this.device = undefined;
          this.lastError = undefined;
          await this.#storeTokens(res.body); // → signed-in
          return;
        }
        const error = OAuthError.check(res.body) ? res.body.error : `HTTP ${res.status}`;
        if (error === 'authorization_pending') continue;
        if (error === 'slow_down') {
          interval += 5000; // RFC 8628 §3.5
          continue;
        }
        this.lastError = error === 'access_denied' ? 'sign-in was denied' : error === 'expired_token' ? 'the code expired; sign in again' : `sign-in failed: ${error}`;
        break;
      }
      if (this.lastError === undefined) this.lastError = 'the code expired; sign in again';
      await this.#d.session.remove([SESSION.deviceFlow]);
      this.device = undefined;
      this.state = 'signed-out';
      this.#d.onChange();
    } catch {
      // aborted: cancelSignIn() already updated the state
    } finally {
      if (this.#poll === ctl) this.#poll = undefined;
    }
  }

  async #storeTokens(t: { access_token: string; expires_in?: number; refresh_token?: string; id_token?: string }): Promise<void> {
    const expiresAt = this.#d.now() + (t.expires_in ?? 900) * 1000;
    const local: Record<string, unknown> = {};
    if (t.refresh_token !== undefined) local[LOCAL.refreshToken] = t.refresh_token;
    const account = t.id_token === undefined ? undefined : accountFromIdToken(t.id_token);
    if (account !== undefined) {
      local[LOCAL.account] = account;
      this.account = account;
    }
    if (Object.keys(local).length > 0) await this.#d.local.set(local);
    await this.#d.session.set({ [SESSION.accessToken]: t.access_token, [SESSION.accessTokenExpiresAt]: expiresAt });
    this.state = 'signed-in';
    this.#scheduleRefresh(expiresAt);
    this.#d.onChange();
  }

  #scheduleRefresh(expiresAt: number | undefined): void {
    clearTimeout(this.#refreshTimer);
    if (expiresAt === undefined) return;
    const wait = Math.max(5_000, expiresAt - REFRESH_MARGIN_MS - this.#d.now());
    this.#refreshTimer = setTimeout(() => void this.refresh(), wait);
    (this.#refreshTimer as { unref?: () => void }).unref?.(); // (Node only) never keeps a test process alive
  }

  async #post(url: string, body: URLSearchParams): Promise<{ status: number; body: unknown }> {
    const res = await this.#d.fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body,
      credentials: 'omit',
      redirect: 'error',
    });
    return { status: res.status, body: await readJson(res) };
  }

  async #json<T>(url: string, body: URLSearchParams | undefined, v: { check(x: unknown): x is T }, what: string): Promise<T> {
    let res: { status: number; body: unknown };
    try {
      if (body === undefined) {
        const r = await this.#d.fetch(url, { headers: { accept: 'application/json' }, credentials: 'omit', redirect: 'error' });
        res = { status: r.status, body: await readJson(r) };
      } else {
        res = await this.#post(url, body);
      }
    } catch (e) {
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `cannot reach the server for the ${what}: ${(e as Error).message}`);
    }
    if (res.status >= 200 && res.status < 300 && v.check(res.body)) return res.body;
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the server's ${what} is not valid (HTTP ${res.status})`);
  }
}

async function readJson(res: Response): Promise<unknown> {
  const text = await res.text();
  if (text.length > MAX_BODY) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function sameOrigin(raw: string, server: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the server sent an invalid endpoint URL');
  }
  if (url.origin !== server) throw new PalisadeError('PAL_ERR_URL_REFUSED', `the server sent an endpoint on another origin (${url.origin})`);
  return url.href;
}

/** A label for "signed in as" from the ID token's claims (display only, not trusted for anything). */
export function accountFromIdToken(idToken: string): string | undefined {
  const payload = idToken.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '='))) as Record<string, unknown>;
    const label = [claims.preferred_username, claims.email, claims.name, claims.sub].find((v) => typeof v === 'string');
    return typeof label === 'string' ? label.slice(0, 128) : undefined;
  } catch {
    return undefined;
  }
}
