/**
 * @module browser-login — signing a person in with the authorization code flow and PKCE (RFC 7636,
 * S256) on a loopback redirect (RFC 8252 §7.3), as `palisade login --browser` does. Node only: it
 * listens on 127.0.0.1 for the browser to come back.
 *
 * @example
 * const tokens = await browserLogin({ server, onUrl: (url) => console.log(`Open ${url}`), open: true });
 */
import { PalisadeError } from '@palisade/protocol';
import { CLI_CLIENT_ID, CLI_SCOPE, type ServerOptions } from './device.ts';
import { errorFromBody } from './lib/errors.ts';
import { Transport } from './lib/http.ts';
import { Discovery, postForm, toTokenSet, type DiscoveryDocument, type TokenSet } from './lib/oauth.ts';

/** How long `browserLogin` waits for the browser to come back by default: 5 minutes. */
export const BROWSER_LOGIN_TIMEOUT_MS = 5 * 60_000;

export interface BrowserLoginOptions extends Omit<ServerOptions, 'timeoutMs'> {
  /** Default {@link CLI_SCOPE}. */
  scope?: string | undefined;
  /** Shows the authorization link to the person. Called once, when the loopback receiver listens. */
  onUrl: (url: string) => void | Promise<void>;
  /**
   * Also try to open the link in the system browser (`open` on macOS, `rundll32` on Windows,
   * `xdg-open` elsewhere when a display is set). A failure to open is ignored. Default `false`.
   */
  open?: boolean | undefined;
  /** How long to wait for the person to finish in the browser; default {@link BROWSER_LOGIN_TIMEOUT_MS}. */
  timeoutMs?: number | undefined;
  /** Timeout of each HTTP request to the server; default 30 s. */
  requestTimeoutMs?: number | undefined;
  /** Told about every request to the receiver it refused (wrong `state`, a second callback, wrong host); it keeps waiting. */
  onRefusedCallback?: ((reason: string) => void) | undefined;
  signal?: AbortSignal | undefined;
}

type NodeLoopback = typeof import('./lib/node-loopback.ts');

/**
 * Loads `lib/node-loopback.ts` (Node only). The specifier is built at run time so that browser
 * bundlers never follow it into `node:http`.
 */
async function loadLoopback(): Promise<NodeLoopback> {
  const specifier = new URL('./lib/node-loopback.ts', import.meta.url).href;
  try {
    return (await import(specifier)) as NodeLoopback;
  } catch (err) {
    const e = new PalisadeError('PAL_ERR_VALIDATION', 'browserLogin needs Node.js (it listens on 127.0.0.1 for the redirect)', { internal: err });
    e.cause = err;
    throw e;
  }
}

function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** 32 random bytes, base64url: a `state` or a PKCE `code_verifier` (43 characters, RFC 7636 §4.1). */
function randomToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The S256 `code_challenge` of a verifier (RFC 7636 §4.2). */
async function s256(verifier: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
}

/** What the authorization server wrote, fit for a terminal: no control characters, at most 200 characters. */
function printable(text: string): string {
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').trim();
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

/** One value of a callback parameter; more than one is refused. */
function single(params: URLSearchParams, name: string): string | undefined {
  const all = params.getAll(name);
  if (all.length > 1) throw new PalisadeError('PAL_ERR_VALIDATION', `the sign-in callback carries ${name} more than once`);
  return all[0];
}

/** RFC 9207: the response names the issuer the flow started with (no mix-up between servers). */
function checkIssuer(params: URLSearchParams, doc: DiscoveryDocument): void {
  const iss = single(params, 'iss');
  if (iss === undefined) {
    if (doc.authorization_response_iss_parameter_supported) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in callback does not name its issuer (iss), though the server says it does');
    }
    return;
  }
  if (iss !== doc.issuer) {
    throw new PalisadeError('PAL_ERR_VALIDATION', `the sign-in callback comes from issuer ${JSON.stringify(printable(iss))}, not ${doc.issuer}`);
  }
}

/** The code of the callback, or the error the authorization server sent back. */
function codeOf(params: URLSearchParams): string {
  const error = single(params, 'error');
  if (error !== undefined) {
    const description = printable(single(params, 'error_description') ?? '');
    if (error === 'access_denied') {
      throw new PalisadeError('PAL_ERR_FORBIDDEN', `the sign-in was denied in the browser${description ? ` (${description})` : ''}`, {
        internal: Object.fromEntries(params),
      });
    }
    const { code } = errorFromBody(400, { error });
    throw new PalisadeError(code, `the sign-in failed in the browser: ${printable(error)}${description ? ` (${description})` : ''}`, {
      internal: Object.fromEntries(params),
    });
  }
  const code = single(params, 'code');
  if (!code) throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in callback carries neither a code nor an error');
  return code;
}

/** Settles with `promise`, or rejects when `ms` pass or `signal` aborts. */
function within<T>(promise: Promise<T>, ms: number, signal: AbortSignal | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      const minutes = ms % 60_000 === 0 ? `${ms / 60_000} min` : ms < 1000 ? `${ms} ms` : `${Math.round(ms / 1000)} s`;
      reject(new PalisadeError('PAL_ERR_TIMEOUT', `the sign-in was not completed in the browser within ${minutes}; run the login again`));
    }, ms);
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * Runs the authorization code flow with PKCE (S256) for the CLI's public client: listens on
 * `http://127.0.0.1:<free port>/callback`, hands the authorization link (with a fresh `state` and
 * code challenge) to `onUrl`, optionally opens it, and waits for the browser to come back. A
 * callback with another `state` is answered 400 and ignored; the first one with the right `state`
 * ends the wait: its `iss` must be the server's, an `error` rejects (`PAL_ERR_FORBIDDEN` for
 * `access_denied`), a `code` is exchanged with the verifier. The browser is told the outcome on a
 * plain-text page, then the receiver closes. Rejects with `PAL_ERR_TIMEOUT` after `timeoutMs`.
 */
export async function browserLogin(options: BrowserLoginOptions): Promise<TokenSet> {
  const transport = new Transport({ server: options.server, ca: options.ca, fetch: options.fetch, timeoutMs: options.requestTimeoutMs });
  const doc = await new Discovery(transport).get();
  if (!doc.authorization_endpoint) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the server does not offer the authorization code flow (no authorization_endpoint)');
  }
  const clientId = options.clientId ?? CLI_CLIENT_ID;
  const state = randomToken();
  const verifier = randomToken();
  const loopback = await loadLoopback();
  options.signal?.throwIfAborted();
  const receiver = await loopback.listenLoopback({ state, onRefused: options.onRefusedCallback });
  try {
    const url = new URL(doc.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      scope: options.scope ?? CLI_SCOPE,
      // `offline_access` (a refresh token) is only granted with explicit consent (OpenID Connect Core §11).
      prompt: 'consent',
      redirect_uri: receiver.redirectUri,
      state,
      code_challenge: await s256(verifier),
      code_challenge_method: 'S256',
    }).toString();
    await options.onUrl(url.href);
    if (options.open) void loopback.openSystemBrowser(url.href);

    const callback = await within(receiver.callback, options.timeoutMs ?? BROWSER_LOGIN_TIMEOUT_MS, options.signal);
    try {
      checkIssuer(callback.params, doc);
      const code = codeOf(callback.params);
      const res = await postForm(
        transport,
        doc.token_endpoint,
        { grant_type: 'authorization_code', code, redirect_uri: receiver.redirectUri, client_id: clientId, code_verifier: verifier },
        { signal: options.signal, what: 'token request' },
      );
      if (res.status < 200 || res.status > 299) throw errorFromBody(res.status, res.body);
      const tokens = toTokenSet(res.body);
      callback.reply(200, 'Signed in to Palisade. You can close this tab and return to the terminal.');
      return tokens;
    } catch (err) {
      const reason = err instanceof PalisadeError ? err.message : 'an unexpected error';
      callback.reply(400, `The sign-in to Palisade did not complete: ${reason}.\nYou can close this tab; the terminal says more.`);
      throw err;
    }
  } finally {
    await receiver.close();
  }
}
