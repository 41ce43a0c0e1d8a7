/**
 * @module device — signing a person in with the OAuth 2.0 device grant (RFC 8628), as the CLI does,
 * and keeping them signed in with rotating refresh tokens.
 *
 * @example
 * const tokens = await deviceLogin({ server, onCode: (c) => console.log(`Open ${c.verificationUriComplete}`) });
 */
import { PalisadeError } from '@palisade/protocol';
import { errorFromBody } from './lib/errors.ts';
import { Transport, type FetchLike } from './lib/http.ts';
import { sleep } from './lib/sleep.ts';
import { Discovery, postForm, toTokenSet, TOKEN_REFRESH_MARGIN_MS, type TokenSet, type TokenRequest } from './lib/oauth.ts';

export type { TokenSet } from './lib/oauth.ts';

/** The public client the CLI signs in as. */
export const CLI_CLIENT_ID = 'palisade-cli';
/** The scopes the CLI asks for. */
export const CLI_SCOPE = 'openid offline_access tasks admin';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** What to show the person: open `verificationUri` and enter `userCode` (or open `verificationUriComplete`). */
export interface DeviceCode {
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Seconds the code stays valid. */
  expiresIn: number;
  /** Seconds between polls, as the server asked. */
  interval: number;
}

/** Where and how to reach the server's OAuth endpoints. */
export interface ServerOptions {
  /** Base URL, e.g. `https://127.0.0.1:8443`. */
  server: string;
  /** PEM of a private CA (Node only). */
  ca?: string | undefined;
  fetch?: FetchLike | undefined;
  /** Per-request timeout; default 30 s. */
  timeoutMs?: number | undefined;
  /** Default {@link CLI_CLIENT_ID}. */
  clientId?: string | undefined;
}

export interface DeviceLoginOptions extends ServerOptions {
  /** Default {@link CLI_SCOPE}. */
  scope?: string;
  /** Shows the code and the link to the person. Called once, before polling starts. */
  onCode: (code: DeviceCode) => void | Promise<void>;
  signal?: AbortSignal;
  /** Waits between polls; replaceable in tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  now?: () => number;
}

function transportFor(options: ServerOptions): Transport {
  return new Transport({ server: options.server, ca: options.ca, fetch: options.fetch, timeoutMs: options.timeoutMs });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Runs the device grant: asks for a code, hands it to `onCode`, then polls the token endpoint
 * every `interval` seconds (5 more after each `slow_down`) until the person approves. Rejects with
 * `PAL_ERR_FORBIDDEN` if they deny, `PAL_ERR_TIMEOUT` when the code expires.
 */
export async function deviceLogin(options: DeviceLoginOptions): Promise<TokenSet> {
  const transport = transportFor(options);
  const doc = await new Discovery(transport).get();
  const clientId = options.clientId ?? CLI_CLIENT_ID;
  const now = options.now ?? Date.now;
  const wait = options.sleep ?? sleep;
  if (!doc.device_authorization_endpoint) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the server does not offer the device grant (no device_authorization_endpoint)');
  }
  const started = now();
  const auth = await postForm(
    transport,
    doc.device_authorization_endpoint,
    { client_id: clientId, scope: options.scope ?? CLI_SCOPE },
    { signal: options.signal, what: 'device authorization' },
  );
  if (auth.status < 200 || auth.status > 299) throw errorFromBody(auth.status, auth.body);
  const b = auth.body;
  if (
    !isRecord(b) ||
    typeof b.device_code !== 'string' ||
    typeof b.user_code !== 'string' ||
    typeof b.verification_uri !== 'string' ||
    typeof b.expires_in !== 'number'
  ) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the device authorization response is incomplete');
  }
  const code: DeviceCode = {
    userCode: b.user_code,
    verificationUri: b.verification_uri,
    expiresIn: b.expires_in,
    interval: typeof b.interval === 'number' && b.interval > 0 ? b.interval : 5,
  };
  if (typeof b.verification_uri_complete === 'string') code.verificationUriComplete = b.verification_uri_complete;
  await options.onCode(code);

  const deadline = started + code.expiresIn * 1000;
  let intervalMs = code.interval * 1000;
  while (true) {
    if (now() + intervalMs > deadline) break;
    await wait(intervalMs, options.signal);
    const res = await postForm(
      transport,
      doc.token_endpoint,
      { grant_type: DEVICE_GRANT, device_code: b.device_code, client_id: clientId },
      { signal: options.signal, what: 'token request' },
    );
    if (res.status >= 200 && res.status <= 299) return toTokenSet(res.body, now());
    const error = isRecord(res.body) ? res.body.error : undefined;
    if (error === 'authorization_pending') continue;
    if (error === 'slow_down') {
      intervalMs += 5000;
      continue;
    }
    if (error === 'access_denied') throw new PalisadeError('PAL_ERR_FORBIDDEN', 'the sign-in was denied', { internal: res.body });
    if (error === 'expired_token') break;
    throw errorFromBody(res.status, res.body);
  }
  throw new PalisadeError('PAL_ERR_TIMEOUT', 'the sign-in code expired before it was approved; run the login again');
}

/**
 * Exchanges a refresh token for new tokens. Refresh tokens rotate: keep the returned
 * `refreshToken` (the old one is spent); if the server sends none, the old one stays valid.
 */
export async function refreshTokens(options: ServerOptions & { refreshToken: string; signal?: AbortSignal }): Promise<TokenSet> {
  const transport = transportFor(options);
  const doc = await new Discovery(transport).get();
  const res = await postForm(
    transport,
    doc.token_endpoint,
    { grant_type: 'refresh_token', refresh_token: options.refreshToken, client_id: options.clientId ?? CLI_CLIENT_ID },
    { signal: options.signal, what: 'token refresh' },
  );
  if (res.status < 200 || res.status > 299) {
    const err = errorFromBody(res.status, res.body);
    if (err.code === 'PAL_ERR_TOKEN_INVALID') {
      throw new PalisadeError('PAL_ERR_TOKEN_INVALID', 'the saved sign-in has expired or was revoked; sign in again', { internal: res.body });
    }
    throw err;
  }
  const tokens = toTokenSet(res.body);
  tokens.refreshToken ??= options.refreshToken;
  return tokens;
}

/** Revokes a refresh token if the server offers revocation; best effort, never throws. */
export async function revokeToken(options: ServerOptions & { token: string }): Promise<boolean> {
  try {
    const transport = transportFor(options);
    const doc = await new Discovery(transport).get();
    if (!doc.revocation_endpoint) return false;
    const res = await postForm(
      transport,
      doc.revocation_endpoint,
      { token: options.token, token_type_hint: 'refresh_token', client_id: options.clientId ?? CLI_CLIENT_ID },
      { what: 'revocation' },
    );
    return res.status >= 200 && res.status <= 299;
  } catch {
    return false;
  }
}

/**
 * A `tokenProvider` for `new Palisade(...)` from a signed-in person's tokens: refreshes
 * {@link TOKEN_REFRESH_MARGIN_MS} before expiry (and once after a 401), one refresh at a time,
 * and hands every new token set to `onTokens` so the newest refresh token is always stored.
 */
export function refreshingTokenProvider(options: {
  tokens: TokenSet;
  /** Performs the refresh; default {@link refreshTokens} against `server`. */
  refresh?: (current: TokenSet) => Promise<TokenSet>;
  server?: ServerOptions;
  onTokens?: (tokens: TokenSet) => void | Promise<void>;
  now?: () => number;
}): (request: TokenRequest) => Promise<string> {
  let current = options.tokens;
  let inflight: Promise<string> | undefined;
  const now = options.now ?? Date.now;
  const refresh =
    options.refresh ??
    ((tokens: TokenSet) => {
      if (!options.server) throw new PalisadeError('PAL_ERR_VALIDATION', 'refreshingTokenProvider needs `server` or `refresh`');
      if (!tokens.refreshToken) throw new PalisadeError('PAL_ERR_TOKEN_INVALID', 'no refresh token; sign in again');
      return refreshTokens({ ...options.server, refreshToken: tokens.refreshToken });
    });
  return async (request) => {
    const fresh = now() < current.expiresAt - TOKEN_REFRESH_MARGIN_MS;
    if (fresh && (!request.forceRefresh || (request.rejected !== undefined && request.rejected !== current.accessToken))) {
      return current.accessToken;
    }
    inflight ??= (async () => {
      const next = await refresh(current);
      current = next;
      await options.onTokens?.(next);
      return next.accessToken;
    })().finally(() => (inflight = undefined));
    return inflight;
  };
}
