/**
 * @module edge/headers — the security headers every response carries: a strict Content Security
 * Policy, HSTS over TLS, `nosniff`, no referrer, no framing, same-origin window and resource
 * isolation, no powerful browser features, no caching. docs/SECURITY-HEADERS.md says why each.
 *
 * `responseHeaders()` sets them on the raw response as the server's request handler receives it,
 * before anything answers: oidc-provider (which answers `/oauth2/*` outside Fastify), Fastify's
 * routes, hooks and error handlers, and what Fastify or other code write without them (a malformed
 * URL's 400, 503 while closing, `interactionFinished` redirects, event streams). A response that
 * needs another value sets it and wins (Node merges `setHeader` values under `writeHead`'s).
 * `securityHeaders()` gives Fastify's HTML answers the page policy.
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';

/** The policy of everything that is not an HTML page: nothing may load, frame, or post from it. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** HSTS: one year, subdomains included (no `preload`: that is a commitment for the deployment's domain to make). */
export const HSTS = 'max-age=31536000; includeSubDomains';

/** Browser features no Palisade page uses, disabled for them and anything they could embed. */
export const PERMISSIONS_POLICY = 'accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()';

export interface SecurityHeaderOptions {
  /** Send `Strict-Transport-Security`: only when browsers reach the server over TLS. */
  hsts: boolean;
}

/** The headers every response starts with, as `[name, value]` pairs (`Cache-Control: no-store` included; a cacheable response overrides it). */
export function securityHeaderList({ hsts }: SecurityHeaderOptions): ReadonlyArray<readonly [string, string]> {
  const list: Array<readonly [string, string]> = [
    ['content-security-policy', API_CSP],
    ['x-content-type-options', 'nosniff'],
    ['referrer-policy', 'no-referrer'],
    // For browsers without CSP `frame-ancestors`.
    ['x-frame-options', 'DENY'],
    ['cross-origin-opener-policy', 'same-origin'],
    ['cross-origin-resource-policy', 'same-origin'],
    ['permissions-policy', PERMISSIONS_POLICY],
    ['cache-control', 'no-store'],
  ];
  if (hsts) list.push(['strict-transport-security', HSTS]);
  return list;
}

/** A fresh CSP nonce (128 random bits, base64). */
export function newNonce(): string {
  return randomBytes(16).toString('base64');
}

/**
 * The policy of an HTML page: scripts only with this response's `nonce` (and what they load:
 * `'strict-dynamic'`), the one stylesheet and images from this server, no plugins, no `<base>`, never
 * framed. `formAction` lists where the page's forms — and the redirects that follow them, which
 * Chromium checks too — may go; `null` leaves the directive out (see interactions.ts for when).
 */
export function pageCsp(nonce: string, formAction: string | null = "'self'"): string {
  return `default-src 'none'; script-src 'nonce-${nonce}' 'strict-dynamic'; style-src 'self'; img-src 'self'; ${formAction ? `form-action ${formAction}; ` : ''}frame-ancestors 'none'; base-uri 'none'; object-src 'none'`;
}

/** Gives every Fastify HTML answer that did not choose its own policy the page policy, with a fresh nonce. */
export function securityHeaders(app: FastifyInstance): void {
  app.addHook('onSend', (_req, reply, payload, done) => {
    const type = reply.getHeader('content-type');
    if (typeof type === 'string' && type.startsWith('text/html') && reply.getHeader('content-security-policy') === API_CSP) {
      void reply.header('content-security-policy', pageCsp(newNonce()));
    }
    done(null, payload);
  });
}

/** `/oauth2` paths whose answers can be HTML pages: the device-code pages, the authorization endpoint (errors, form_post), sign-out. */
const OAUTH_PAGES = ['/oauth2/device', '/oauth2/auth', '/oauth2/session'];

/**
 * Sets the headers on a response before anything answers it (`url` is the request's): a loop over
 * constant values (this is the token endpoint's path too), plus the page policy with a fresh nonce
 * where oidc-provider renders pages — it adds the hash of its own inline script (the form_post
 * page) to that policy's `script-src`. oidc-provider sets its own `Cache-Control` where it needs to.
 */
export function responseHeaders(options: SecurityHeaderOptions): (res: ServerResponse, url: string) => void {
  const list = securityHeaderList(options);
  return (res, url) => {
    for (const [name, value] of list) res.setHeader(name, value);
    if (OAUTH_PAGES.some((p) => url.startsWith(p))) res.setHeader('content-security-policy', pageCsp(newNonce()));
  };
}
