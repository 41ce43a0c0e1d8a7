/**
 * @module worker/auth — sign-in against the server the user entered, two ways: the OAuth 2.0 device
 * authorization grant (RFC 8628: a code typed on the server's page) and the authorization code flow
 * with PKCE in a browser window (`chrome.identity.launchWebAuthFlow`, pieces in `worker/code-flow`);
 * and the tokens that follow either: the rotating refresh token in local storage, the access token
 * in session storage, refreshed before it expires.
 *
 * Endpoints come from `${server}/oauth2/.well-known/openid-configuration` and must be on the
 * server's own origin (a discovery document cannot send a code, a verifier or tokens elsewhere).
 */
import { Type } from '@sinclair/typebox';
import { PalisadeError, validator } from '@palisade/protocol';
import { authorizationParams, createPkce, describeOAuthError, launchError, randomToken, readRedirect } from './code-flow.ts';
import { LOCAL, SESSION, num, str, type KeyValue } from './storage.ts';

/** OAuth client of the extension (public, no secret). */
export const CLIENT_ID = 'palisade-extension';
export const SCOPE = 'openid offline_access agent';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_MS = 60_000;
/** Bound on any OAuth response body we read. */
const MAX_BODY = 64 * 1024;
/** A sign-in window is given up after this long (the server's sign-in interaction lasts 10 minutes). */
export const BROWSER_SIGNIN_TIMEOUT_MS = 10 * 60_000;
/** While a sign-in window is open, an extension API is called this often so Chrome keeps the worker alive. */
export const KEEP_ALIVE_MS = 25_000;

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

const Url = Type.String({ maxLength: 2048 });
const Discovery = validator(
  Type.Object({
    issuer: Type.Optional(Url),
    device_authorization_endpoint: Url,
    token_endpoint: Url,
    authorization_endpoint: Type.Optional(Url),
    pushed_authorization_request_endpoint: Type.Optional(Url),
    code_challenge_methods_supported: Type.Optional(Type.Array(Type.String({ maxLength: 32 }), { maxItems: 16 })),
    authorization_response_iss_parameter_supported: Type.Optional(Type.Boolean()),
  }),
);
/** Answer of the pushed authorization request endpoint (RFC 9126 §2.2). */
const ParResponse = validator(Type.Object({ request_uri: Type.String({ minLength: 1, maxLength: 2048 }), expires_in: Type.Number({ minimum: 1 }) }));
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

/** `pending` is a device sign-in waiting for its code; a sign-in window open is `Auth.browserSignIn`. */
export type AuthState = 'signed-out' | 'pending' | 'signed-in';

/** The part of `chrome.identity` that sign-in in a browser window uses. */
export interface Identity {
  launchWebAuthFlow(details: { url: string; interactive: boolean }): Promise<string | undefined>;
  /** `https://<extension id>.chromiumapp.org/`. */
  getRedirectURL(): string;
}

export interface AuthDeps {
  fetch: typeof fetch;
  local: KeyValue;
  session: KeyValue;
  /** `chrome.identity`; without it only the device grant is offered. */
  identity?: Identity;
  now?: () => number;
  /** Waits `ms`, or rejects when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Called after every change of state (sign-in, refresh, sign-out, error). */
  onChange?: () => void;
  /**
   * Called every `KEEP_ALIVE_MS` while a sign-in window is open. In the worker, a cheap extension
   * API call (`chrome.runtime.getPlatformInfo`), which resets Chrome's 30-second idle timer so the
   * worker (and the PKCE verifier it holds in memory) outlives the user typing a password. Default: nothing.
   */
  keepAlive?: () => void;
  /** How long a sign-in window may stay open. Default `BROWSER_SIGNIN_TIMEOUT_MS` (10 minutes). */
  browserSignInTimeoutMs?: number;
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
  /** A sign-in window (`signInWithBrowser`) is open. */
  browserSignIn = false;

  readonly #d: Required<Omit<AuthDeps, 'identity'>>;
  readonly #identity: Identity | undefined;
  #poll: AbortController | undefined;
  #browser: AbortController | undefined;
  #refreshing: Promise<string | undefined> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(deps: AuthDeps) {
    const { identity, ...rest } = deps;
    this.#d = { now: Date.now, sleep: defaultSleep, onChange: () => {}, keepAlive: () => {}, browserSignInTimeoutMs: BROWSER_SIGNIN_TIMEOUT_MS, ...rest };
    this.#identity = identity;
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

  /**
   * Signs in with the authorization code flow and PKCE in a browser window:
   * discovery → the request (pushed to the server first when it offers PAR, RFC 9126, so a refusal —
   * an extension id the server is not configured with — is reported here before any window opens)
   * → `launchWebAuthFlow` opens the server's sign-in and consent pages → the answer passes
   * `readRedirect`'s checks → the code and verifier are exchanged at the token endpoint → the tokens
   * are stored as after a device sign-in, and the connection starts.
   * Resolves when signed in; rejects (and sets `lastError`) on a refusal, an error or cancellation.
   */
  async signInWithBrowser(rawServer: string): Promise<void> {
    const { server, insecure } = checkServerUrl(rawServer);
    const identity = this.#identity;
    if (identity === undefined) throw new PalisadeError('PAL_ERR_INTERNAL', 'sign-in in a browser window is not available here');
    if (this.#browser !== undefined) throw new PalisadeError('PAL_ERR_CONFLICT', 'a sign-in window is already open; finish or close it first');
    this.cancelSignIn();
    const ctl = new AbortController();
    this.#browser = ctl;
    this.browserSignIn = true;
    this.lastError = undefined;
    this.#d.onChange();
    try {
      const tokens = await this.#browserFlow(server, insecure, identity, ctl.signal);
      if (ctl.signal.aborted) throw cancelled();
      await this.#storeTokens(tokens); // → signed-in
    } catch (e) {
      const error = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', (e as Error).message);
      if (this.#browser === ctl) this.lastError = error.message;
      throw error;
    } finally {
      if (this.#browser === ctl) {
        this.#browser = undefined;
        this.browserSignIn = false;
        this.#d.onChange();
      }
    }
  }

  async #browserFlow(server: string, insecure: boolean, identity: Identity, signal: AbortSignal): Promise<TokenSet> {
    const discovery = await this.#json(`${server}/oauth2/.well-known/openid-configuration`, undefined, Discovery, 'discovery document');
    if (discovery.authorization_endpoint === undefined) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'this server does not offer sign-in in a browser window; sign in with a code');
    const authorizationEndpoint = sameOrigin(discovery.authorization_endpoint, server);
    const tokenEndpoint = sameOrigin(discovery.token_endpoint, server);
    const parEndpoint = discovery.pushed_authorization_request_endpoint === undefined ? undefined : sameOrigin(discovery.pushed_authorization_request_endpoint, server);
    const methods = discovery.code_challenge_methods_supported;
    if (methods !== undefined && !methods.includes('S256')) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'this server does not support PKCE with S256; sign in with a code');

    const redirectUri = identity.getRedirectURL();
    const state = randomToken();
    const { verifier, challenge } = await createPkce();
    const params = authorizationParams({ clientId: CLIENT_ID, scope: SCOPE, redirectUri, state, challenge });
    const url = new URL(authorizationEndpoint);
    if (parEndpoint === undefined) {
      for (const [k, v] of params) url.searchParams.append(k, v);
    } else {
      url.searchParams.set('client_id', CLIENT_ID);
      url.searchParams.set('request_uri', await this.#pushRequest(parEndpoint, params, redirectUri));
    }

    await this.#d.local.set({ [LOCAL.server]: server, [LOCAL.insecure]: insecure });
    this.server = server;
    this.insecure = insecure;
    if (signal.aborted) throw cancelled();
    const responseUrl = await this.#launch(identity, url.href, signal);
    const code = readRedirect(responseUrl, {
      redirectUri,
      state,
      issuer: discovery.issuer,
      issRequired: discovery.authorization_response_iss_parameter_supported === true,
    });

    const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: CLIENT_ID, code_verifier: verifier });
    let res: { status: number; body: unknown };
    try {
      res = await this.#post(tokenEndpoint, body);
    } catch (e) {
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `cannot reach the server for the token exchange: ${(e as Error).message}`);
    }
    if (res.status >= 200 && res.status < 300 && TokenResponse.check(res.body)) return res.body;
    if (OAuthError.check(res.body)) throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', describeOAuthError(res.body.error, res.body.error_description));
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the server's token answer is not valid (HTTP ${res.status})`);
  }

  /** Pushes the authorization request (RFC 9126); its `request_uri`, or a clear refusal. */
  async #pushRequest(endpoint: string, params: URLSearchParams, redirectUri: string): Promise<string> {
    let res: { status: number; body: unknown };
    try {
      res = await this.#post(endpoint, params);
    } catch (e) {
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `cannot reach the server for the sign-in request: ${(e as Error).message}`);
    }
    if (res.status >= 200 && res.status < 300 && ParResponse.check(res.body)) return res.body.request_uri;
    if (OAuthError.check(res.body)) {
      const { error, error_description: description } = res.body;
      // Every parameter is fixed but the redirect URI, so a malformed or unauthorized request means
      // this client has no such redirect on the server: a server started without this extension's
      // id ("requested response_type is not allowed"), or with other ids ("redirect_uri did not match").
      if (NOT_CONFIGURED.has(error)) {
        const id = new URL(redirectUri).hostname.split('.')[0] ?? '';
        throw new PalisadeError(
          'PAL_ERR_ORIGIN_REFUSED',
          `this server does not allow sign-in in a browser window for this extension (id ${id}); its administrator can allow it with --extension-id ${id}. Sign in with a code instead. (The server said: ${(description ?? error).slice(0, 200)})`,
        );
      }
      throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', describeOAuthError(error, description));
    }
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the server's answer to the sign-in request is not valid (HTTP ${res.status})`);
  }

  /** `launchWebAuthFlow`, kept alive while it runs, given up after the timeout or when `signal` aborts. */
  async #launch(identity: Identity, url: string, signal: AbortSignal): Promise<string> {
    const keepAlive = setInterval(() => this.#d.keepAlive(), KEEP_ALIVE_MS);
    (keepAlive as { unref?: () => void }).unref?.();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const stop = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PalisadeError('PAL_ERR_TIMEOUT', 'the sign-in window was open too long; start again')), this.#d.browserSignInTimeoutMs);
        (timer as { unref?: () => void }).unref?.(); // (Node only) never keeps a test process alive
        onAbort = () => reject(cancelled());
        signal.addEventListener('abort', onAbort, { once: true });
      });
      const flow = identity.launchWebAuthFlow({ url, interactive: true }).then(
        (r) => {
          if (typeof r !== 'string') throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'the sign-in window returned nothing');
          return r;
        },
        (e: unknown) => {
          throw launchError(e);
        },
      );
      flow.catch(() => {}); // settles after a timeout or a cancel too; nobody is listening then
      return await Promise.race([flow, stop]);
    } finally {
      clearInterval(keepAlive);
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** Abandons a pending sign-in: stops polling a device code; a sign-in window's answer will be ignored. */
  cancelSignIn(): void {
    if (this.#browser !== undefined) {
      this.#browser.abort(cancelled());
      this.#browser = undefined;
      this.browserSignIn = false;
      this.#d.onChange();
    }
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

  async #storeTokens(t: TokenSet): Promise<void> {
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

type TokenSet = { access_token: string; expires_in?: number; refresh_token?: string; id_token?: string };

/** Answers of the pushed-request endpoint that mean: this extension's redirect is not configured on the server. */
const NOT_CONFIGURED = new Set(['invalid_request', 'invalid_redirect_uri', 'unauthorized_client', 'unsupported_response_type']);

const cancelled = (): PalisadeError => new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'sign-in was cancelled');

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
