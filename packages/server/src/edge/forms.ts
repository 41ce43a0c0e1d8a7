/**
 * @module edge/forms — cross-site request forgery checks for the server's HTML forms: a form POST
 * must come from a page of this server (Fetch Metadata, then `Origin`), and a form whose session
 * is a cookie must carry the anti-forgery token its page was given.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** Name of the hidden form field that carries the anti-forgery token. */
export const FORM_TOKEN_FIELD = 'csrf';

/**
 * Why a form POST with these request headers did not come from one of `origins` (this server's),
 * or undefined if nothing says it did not:
 *
 * 1. `Sec-Fetch-Site: cross-site` or `same-site` — the browser says another site sent it.
 * 2. An `Origin` that is not one of ours. `Origin: null` is accepted: browsers send it for our own
 *    same-origin forms, because every page is served with `Referrer-Policy: no-referrer` (Fetch
 *    standard, "serializing a request origin"); a browser recent enough to send `Sec-Fetch-Site`
 *    has vouched in step 1, and for older ones the anti-forgery token and `SameSite` cookies remain.
 *
 * No `Sec-Fetch-Site` and no `Origin` is not a browser: nothing to forge.
 */
export function crossSiteFormRefusal(headers: IncomingHttpHeaders, origins: readonly string[]): string | undefined {
  const site = headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return `the form was sent from another site (Sec-Fetch-Site: ${site})`;
  const origin = headers.origin;
  if (origin !== undefined && origin !== 'null' && !origins.includes(origin)) return `the form was sent from another origin (${origin.slice(0, 100)})`;
  return undefined;
}

/** The anti-forgery token of a form bound to `binding` (e.g. an interaction's id): HMAC-SHA256 with the server's `key`. */
export function formToken(key: string, binding: string): string {
  return createHmac('sha256', key).update(`palisade-form:${binding}`).digest('base64url');
}

/** Whether `presented` is the token of `binding` (compared in constant time). */
export function formTokenValid(key: string, binding: string, presented: unknown): boolean {
  if (typeof presented !== 'string' || presented.length > 100) return false;
  const a = Buffer.from(formToken(key, binding));
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
