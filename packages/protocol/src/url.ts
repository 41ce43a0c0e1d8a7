/**
 * @module url — the navigation policy shared by the server and the extension: only `http:` and
 * `https:`, only to granted origins. `javascript:`, `data:`, `file:`, `chrome:` and every other
 * scheme are refused.
 */
import { PalisadeError } from './errors.ts';

const ALLOWED_SCHEMES = new Set(['http:', 'https:']);

/**
 * Parses `raw` as an origin (`https://example.com[:port]`); throws `PAL_ERR_URL_REFUSED` for any
 * other scheme and `PAL_ERR_VALIDATION` for anything that is not a bare origin.
 */
export function parseOrigin(raw: string): string {
  const url = safeUrl(raw);
  if (!ALLOWED_SCHEMES.has(url.protocol)) throw new PalisadeError('PAL_ERR_URL_REFUSED', `scheme "${url.protocol}" is refused; only http: and https: sites`);
  if (url.username || url.password) throw new PalisadeError('PAL_ERR_URL_REFUSED', 'credentials in a site URL are refused');
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new PalisadeError('PAL_ERR_VALIDATION', `"${raw}" is not an origin (scheme://host[:port])`);
  }
  return url.origin;
}

/**
 * Checks a navigation target: an absolute http(s) URL whose origin is `site`.
 * Returns the normalised URL; throws `PAL_ERR_URL_REFUSED` otherwise.
 */
export function checkNavigation(raw: string, site: string): string {
  const url = safeUrl(raw);
  if (!ALLOWED_SCHEMES.has(url.protocol)) throw new PalisadeError('PAL_ERR_URL_REFUSED', `navigation to a "${url.protocol}" URL is refused`);
  if (url.username || url.password) throw new PalisadeError('PAL_ERR_URL_REFUSED', 'credentials in a URL are refused');
  if (url.origin !== site) throw new PalisadeError('PAL_ERR_URL_REFUSED', `navigation to ${url.origin} leaves the task's site ${site}`);
  return url.href;
}

/** Whether `origin` is covered by one of `grants` (exact origins). */
export function isGranted(origin: string, grants: Iterable<string>): boolean {
  for (const g of grants) if (g === origin) return true;
  return false;
}

/** Converts an origin into the match pattern Chrome uses for host permissions (`https://host/*`; ports are ignored by Chrome's patterns). */
export function originToPattern(origin: string): string {
  const url = new URL(origin);
  return `${url.protocol}//${url.hostname}/*`;
}

function safeUrl(raw: string): URL {
  try {
    return new URL(raw.trim());
  } catch {
    throw new PalisadeError('PAL_ERR_VALIDATION', `"${raw.slice(0, 200)}" is not an absolute URL`);
  }
}
