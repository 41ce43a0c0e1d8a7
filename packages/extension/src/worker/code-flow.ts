/**
 * @module worker/code-flow — the pieces of the authorization code flow with PKCE (RFC 7636, S256
 * only) that sign-in in a browser window (`chrome.identity.launchWebAuthFlow`, see `worker/auth`)
 * is made of: the random `state` and code verifier, the authorization request, and the checks the
 * answer passes before its code is exchanged. Web-standard APIs only (WebCrypto, `URL`), no state.
 *
 * The answer (`readRedirect`) passes, in order: it is the extension's own redirect URL → its
 * `state` is exactly the one sent → its `iss` is the server's issuer (RFC 9207) → it carries no
 * `error` → it carries a code.
 */
import { PalisadeError } from '@palisade/protocol';

/** Random bytes in the code verifier and in `state` (32 → 43 base64url characters, RFC 7636 §4.1). */
export const RANDOM_BYTES = 32;

/** Unpadded base64url (RFC 4648 §5) of `bytes`. */
export function base64url(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A fresh random value for `state` or a code verifier: 32 bytes from `crypto.getRandomValues`, base64url. */
export function randomToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(RANDOM_BYTES)));
}

/** The S256 code challenge of a verifier: base64url(SHA-256(ASCII(verifier))) (RFC 7636 §4.2). */
export async function s256(verifier: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
}

/** A new PKCE pair. `plain` is never used: the server refuses it, and it would protect nothing. */
export async function createPkce(): Promise<{ verifier: string; challenge: string }> {
  const verifier = randomToken();
  return { verifier, challenge: await s256(verifier) };
}

/** What one authorization request asks for. */
export interface AuthorizationRequest {
  clientId: string;
  scope: string;
  /** Exactly `chrome.identity.getRedirectURL()`: `https://<extension id>.chromiumapp.org/`. */
  redirectUri: string;
  state: string;
  challenge: string;
}

/**
 * The parameters of the authorization request, in this order: `response_type=code`, `client_id`,
 * `scope`, `prompt=consent` (a refresh token for `offline_access` needs it, OpenID Connect Core
 * §11), `redirect_uri`, `state`, `code_challenge`, `code_challenge_method=S256`.
 */
export function authorizationParams(r: AuthorizationRequest): URLSearchParams {
  return new URLSearchParams({
    response_type: 'code',
    client_id: r.clientId,
    scope: r.scope,
    prompt: 'consent',
    redirect_uri: r.redirectUri,
    state: r.state,
    code_challenge: r.challenge,
    code_challenge_method: 'S256',
  });
}

/** What the answer must match. */
export interface ExpectedRedirect {
  redirectUri: string;
  state: string;
  /** The server's `issuer` from discovery, when it gave one. */
  issuer: string | undefined;
  /** The server announced `authorization_response_iss_parameter_supported`: `iss` must be present. */
  issRequired: boolean;
}

/** One check of the answer; throws to refuse it. */
type RedirectCheck = (url: URL, expected: ExpectedRedirect) => void;

/** The answer is the extension's own redirect URL (Chrome only hands back those; checked anyway). */
export const isOwnRedirect: RedirectCheck = (url, e) => {
  const target = new URL(e.redirectUri);
  if (url.origin !== target.origin || url.pathname !== target.pathname) {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer came back to an unexpected address; nothing was stored');
  }
};

/** `state` is exactly the one this sign-in sent (an answer to another request is refused: CSRF, RFC 6749 §10.12). */
export const stateMatches: RedirectCheck = (url, e) => {
  const states = url.searchParams.getAll('state');
  if (states.length !== 1 || states[0] !== e.state) {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer does not belong to this sign-in (state mismatch); nothing was stored');
  }
};

/** `iss`, when present (and it must be when the server announced it), is the server's issuer (RFC 9207). */
export const issuerMatches: RedirectCheck = (url, e) => {
  const iss = url.searchParams.get('iss');
  if (iss === null) {
    if (e.issRequired) throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer does not name its issuer; nothing was stored');
    return;
  }
  if (e.issuer !== undefined && iss !== e.issuer) {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer comes from another issuer than the server; nothing was stored');
  }
};

/** An `error` from the server (RFC 6749 §4.1.2.1) is surfaced with its description. */
export const noError: RedirectCheck = (url) => {
  const error = url.searchParams.get('error');
  if (error === null) return;
  const description = url.searchParams.get('error_description');
  throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', describeOAuthError(error, description ?? undefined));
};

/** Every check, in the order they run. */
export const REDIRECT_CHECKS: readonly RedirectCheck[] = [isOwnRedirect, stateMatches, issuerMatches, noError];

/**
 * Reads the URL `launchWebAuthFlow` returned: runs `REDIRECT_CHECKS`, then returns the `code`.
 * @example const code = readRedirect(responseUrl, { redirectUri, state, issuer, issRequired: true });
 */
export function readRedirect(responseUrl: string, expected: ExpectedRedirect): string {
  let url: URL;
  try {
    url = new URL(responseUrl);
  } catch {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer is not a URL; nothing was stored');
  }
  for (const check of REDIRECT_CHECKS) check(url, expected);
  const code = url.searchParams.get('code');
  if (code === null || code === '' || code.length > 4096) throw new PalisadeError('PAL_ERR_VALIDATION', 'the sign-in answer carries no authorization code');
  return code;
}

/** A message for an OAuth `error` (bounded; the description is the server's, shown as text only). */
export function describeOAuthError(error: string, description: string | undefined): string {
  const detail = description ? `: ${description.slice(0, 300)}` : '';
  if (error === 'access_denied') return `sign-in was denied${detail}`;
  return `the server refused the sign-in (${error.slice(0, 64)})${detail}`;
}

/**
 * What a `launchWebAuthFlow` rejection means. Chromium's messages:
 * "The user did not approve access." when the window is closed;
 * "Authorization page could not be loaded." when a page in the window fails to load — which, in
 * Chromium 156, includes any page answered with an HTTP error status: the window closes at once.
 * (Palisade's own sign-in pages therefore answer a mistyped password or a lock with 200 and the
 * reason on the page.)
 */
export function launchError(e: unknown): PalisadeError {
  const message = e instanceof Error ? e.message : String(e);
  if (/did not approve access/i.test(message)) return new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'sign-in was cancelled: the window was closed before it finished');
  if (/could not be loaded/i.test(message)) {
    return new PalisadeError(
      'PAL_ERR_UNAUTHENTICATED',
      'the sign-in window closed because a page of the server answered with an error (the server may be unreachable or refused the request); try again',
    );
  }
  return new PalisadeError('PAL_ERR_UNAUTHENTICATED', `sign-in in a browser window failed: ${message.slice(0, 200)}`);
}
