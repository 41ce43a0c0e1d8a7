/**
 * @module edge/cors — Cross-Origin Resource Sharing for the REST API and the service description
 * (`/api/…` and `/`), from an explicit allow-list (`corsOrigins`; empty = no CORS, the default).
 *
 * - An allowed `Origin` is echoed back exactly; an Origin that is not on the list gets no
 *   `Access-Control-*` header at all. Never `*`, never a reflected arbitrary Origin, never
 *   credentials (the API takes bearer tokens, not cookies).
 * - Every answer in scope carries `Vary: Origin` when a list is configured.
 * - A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed Origin, for an
 *   allowed method and headers, gets 204 with the `Access-Control-*` answer; any other preflight,
 *   anywhere, gets a 403 problem (`PAL_ERR_ORIGIN_REFUSED`) and a security event.
 *
 * `/oauth2/*` is oidc-provider's, with its own CORS rules (public metadata, client-based CORS).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PalisadeError } from '@palisade/protocol';
import type { SecurityEvents } from '../siem/events.ts';

/** Methods the API answers cross-origin. */
export const CORS_METHODS = ['GET', 'HEAD', 'POST', 'DELETE'] as const;
/** Request headers the API reads (beyond the CORS-safelisted ones). */
export const CORS_REQUEST_HEADERS = ['authorization', 'content-type', 'idempotency-key', 'prefer', 'last-event-id'] as const;
/** Response headers a cross-origin caller may read (beyond the CORS-safelisted ones). */
export const CORS_EXPOSED_HEADERS = ['location', 'preference-applied', 'retry-after', 'ratelimit', 'ratelimit-policy'] as const;
/** How long a browser may cache a preflight answer, s. */
export const CORS_MAX_AGE_S = 600;

export interface CorsOptions {
  /** Allowed origins, each exactly `scheme://host[:port]` (see `checkCorsOrigin`). Empty: no CORS. */
  origins: readonly string[];
  events: SecurityEvents;
}

/**
 * Why `origin` cannot be on the CORS allow-list, or undefined if it can: it must be an `http:` or
 * `https:` origin written exactly as browsers send it (`https://app.example.com`, no path, no
 * trailing slash, default port left out). `*` is refused: a wildcard would let every site read the API.
 */
export function checkCorsOrigin(origin: string): string | undefined {
  if (origin.includes('*')) return `"${origin}": wildcards are refused; list each origin`;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `"${origin}" is not an origin (expected scheme://host[:port])`;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `"${origin}": only http and https origins`;
  if (url.origin !== origin) return `"${origin}" is not an origin as browsers send it (expected "${url.origin}")`;
  return undefined;
}

/** Installs CORS on every Fastify route; throws if an origin on the list is not valid (see `checkCorsOrigin`). */
export function cors(app: FastifyInstance, { origins, events }: CorsOptions): void {
  for (const o of origins) {
    const bad = checkCorsOrigin(o);
    if (bad) throw new Error(`corsOrigins: ${bad}`);
  }
  const allowed = new Set(origins);
  const methods = new Set<string>(CORS_METHODS);
  const requestHeaders = new Set<string>(CORS_REQUEST_HEADERS);
  const allowMethods = CORS_METHODS.join(', ');
  const allowHeaders = CORS_REQUEST_HEADERS.join(', ');
  const exposeHeaders = CORS_EXPOSED_HEADERS.join(', ');

  /** A preflight: answered here, never routed. */
  function preflight(req: FastifyRequest, reply: FastifyReply, origin: string | undefined): FastifyReply {
    const method = String(req.headers['access-control-request-method']);
    const unknownHeader = String(req.headers['access-control-request-headers'] ?? '').split(',').map((h) => h.trim().toLowerCase()).find((h) => h && !requestHeaders.has(h));
    const refusal = origin === undefined ? 'no Origin'
      : !allowed.has(origin) ? 'this Origin is not allowed'
        : !inScope(req.url) ? 'no cross-origin access to this path'
          : !methods.has(method) ? `method ${method.slice(0, 20)} is not allowed cross-origin`
            : unknownHeader !== undefined ? `header ${unknownHeader.slice(0, 40)} is not allowed cross-origin`
              : undefined;
    if (allowed.size > 0) void reply.header('vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers');
    if (refusal) {
      events.emit({ class: 'api_activity', activity: 'cors.preflight', outcome: 'failure', code: 'PAL_ERR_ORIGIN_REFUSED', message: `cross-origin request refused: ${refusal}`, src: { ip: req.ip, origin: origin?.slice(0, 200) }, data: { method: method.slice(0, 20), path: req.url.slice(0, 200) } });
      const problem = new PalisadeError('PAL_ERR_ORIGIN_REFUSED', `cross-origin request refused: ${refusal}`).toProblem();
      return reply.code(403).type('application/problem+json').send(problem);
    }
    return reply.code(204).headers({
      'access-control-allow-origin': origin!,
      'access-control-allow-methods': allowMethods,
      'access-control-allow-headers': allowHeaders,
      'access-control-max-age': String(CORS_MAX_AGE_S),
    }).send();
  }

  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) return preflight(req, reply, origin);
    if (allowed.size === 0 || !inScope(req.url)) return;
    // On the raw response, like the security headers: event streams write their own head.
    const res = reply.raw;
    res.setHeader('vary', 'Origin');
    if (origin !== undefined && allowed.has(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-expose-headers', exposeHeaders);
    }
  });
}

/** The API and the service description; pages, assets and the rest never answer cross-origin. */
function inScope(url: string): boolean {
  return url === '/' || url.startsWith('/?') || url.startsWith('/api/');
}
