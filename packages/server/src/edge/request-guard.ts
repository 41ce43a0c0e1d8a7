/**
 * @module edge/request-guard — the checks every HTTP request passes before any handler runs, as one
 * visible pipeline:
 *
 *   checkUrlLength (414) → checkHost (400) → checkMemory (503 on routes that start new work, while the
 *   node sheds; edge/memory-guard.ts) → resolve client IP (trusted proxies) → classify (endpoint class)
 *   → rateLimit per IP, and per client on token requests (429 + RateLimit headers)
 *
 * Routes that check the caller's token themselves (the API) may take the per-IP check over: it is
 * then made after the token, together with the principal's, in one check (one Redis round trip
 * instead of two in a row); on a token refused, the IP's alone, so every request is still counted.
 * An address this node was told is refused is checked here first all the same, before any token is.
 *
 * Request heads past `maxHeaderBytes` are refused by Node's parser; `onClientError` answers those
 * (431) and other malformed requests (400) with problem details too. JSON bodies deeper than
 * `maxJsonDepth` are refused (400) before they are parsed (`jsonDepthExceeds`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { PalisadeError } from '@palisade/protocol';
import type { RateClass, ServerConfig } from '../config.ts';
import type { ClientIpResolver } from './client-ip.ts';
import { rateLimitError, type RateLimiter, type RateVerdict } from './rate-limit.ts';
import { OVERLOAD_RETRY_AFTER_S, type MemoryGuard } from './memory-guard.ts';

const FORWARDED = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'] as const;

/**
 * Routes (`METHOD pattern`, as the router matched them) that start new work, refused while the node
 * is short of memory. Everything else goes on: reads, event streams of running tasks, cancelling,
 * revoking, health checks, and the OAuth endpoints (a refused token refresh would close the open
 * agent connections it keeps alive).
 */
export const SHED_ROUTES: ReadonlySet<string> = new Set(['POST /api/v1/tasks']);

/** OAuth endpoints that issue, exchange or inspect tokens (paths below `/oauth2`). */
const TOKEN_PATHS = new Set(['/token', '/token/revocation', '/token/introspection', '/device/auth', '/request']);

/** The endpoint class of a request (undefined: not limited, e.g. health checks). `path` excludes the query. */
export function classify(method: string, path: string): RateClass | undefined {
  if (path.startsWith('/oauth2/') || path === '/oauth2') {
    const sub = path.slice('/oauth2'.length);
    if (TOKEN_PATHS.has(sub)) return 'token';
    if (method === 'POST' && sub.startsWith('/device')) return 'signin';
    return 'web';
  }
  if (path.startsWith('/api/')) return 'api';
  if (path === '/healthz' || path === '/readyz') return undefined;
  if (method === 'POST' && (path.startsWith('/interaction/') || path === '/setup')) return 'signin';
  return 'web';
}

/** The client id of an HTTP Basic `Authorization` header (RFC 6749 §2.3.1 form-encodes it), if any. */
export function basicClientId(header: string | undefined): string | undefined {
  if (!header || header.length > 2048 || !/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' ')).slice(0, 200);
  } catch {
    return undefined;
  }
}

/**
 * A `Host` header that names a host: a DNS name or IPv4 address, or a bracketed IPv6 address, with
 * an optional port. Anything else (`javascript:…`, `%2e%2e%2f`, `a/b`) is refused before a handler
 * builds a URL from it. An absent Host is left to Node (HTTP/1.1 requires it).
 */
const HOST = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;
export function hostValid(host: string | undefined): boolean {
  return host === undefined || HOST.test(host);
}

/** Writes a problem-details answer on a raw Node response (outside Fastify). */
export function sendProblem(res: ServerResponse, err: PalisadeError, headers: readonly [string, string][] = []): void {
  const body = JSON.stringify(err.toProblem());
  for (const [k, v] of headers) res.setHeader(k, v);
  res.writeHead(err.status, { 'content-type': 'application/problem+json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Answers requests Node's HTTP parser refused (head too large, malformed) with problem details, then closes. */
export function onClientError(err: Error & { code?: string }, socket: Duplex): void {
  // A TLS-level error (a renegotiation attempt, a bad record) leaves a socket no answer can be
  // written on: it is cut at once, or it would stay open for ever.
  if (err.code?.startsWith('ERR_SSL') || !socket.writable || (socket as Duplex & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const e = err.code === 'HPE_HEADER_OVERFLOW'
    ? new PalisadeError('PAL_ERR_HEADERS_TOO_LARGE', 'the request line and headers are larger than allowed')
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ECONNRESET'
      ? undefined
      : new PalisadeError('PAL_ERR_VALIDATION', 'malformed HTTP request');
  if (!e) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(e.toProblem());
  socket.end(`HTTP/1.1 ${e.status} ${e.status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/**
 * Whether a JSON text nests objects/arrays deeper than `max`. A linear scan that skips strings, run
 * before `JSON.parse` so a deeply nested body costs no recursion (and no stack) in the parser.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > max) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

export interface RequestGuard {
  /** Runs the pipeline on a raw request (the OAuth endpoints); calls `next` with the client's address only if it passes. */
  raw(req: IncomingMessage, res: ServerResponse, next: (ip: string) => void): void;
  /**
   * Runs the pipeline for a Fastify request: returns the verdict (headers to send), or throws the
   * refusal. `route` is the pattern the router matched (`/api/v1/tasks`), undefined when none did:
   * matched, not compared as text, so no spelling of the URL (`%74asks`) slips past `checkMemory`.
   * `ipLater`: the matched route checks the IP's rate of that class itself (see above; the class
   * the route names, whatever the spelling of its URL); then `IP_CHECK_LATER` is returned, unless the
   * address is one this node was told is refused (checked here, as any other).
   */
  check(req: IncomingMessage, ip: string, route?: string, ipLater?: RateClass): Promise<RateVerdict | typeof IP_CHECK_LATER | undefined>;
}

/** What `RequestGuard.check` returns when the route checks the IP's rate itself, after authentication. */
export const IP_CHECK_LATER = 'ip-check-later';

export function createRequestGuard(o: { config: ServerConfig; limiter: RateLimiter; ips: ClientIpResolver; memory: Pick<MemoryGuard, 'shedding' | 'refuse'>; onError: (err: unknown) => void }): RequestGuard {
  const { config, limiter, ips, memory } = o;
  const tooLong = (url: string) => url.length > config.maxUrlBytes;
  const pathOf = (url: string) => {
    const q = url.indexOf('?');
    return q < 0 ? url : url.slice(0, q);
  };
  const urlError = () => new PalisadeError('PAL_ERR_URI_TOO_LONG', `the request URL is longer than ${config.maxUrlBytes} bytes`);
  const hostError = () => new PalisadeError('PAL_ERR_VALIDATION', 'the Host header is not a host name, address or host:port');
  const checkMemory = (method: string, route: string | undefined) => {
    if (memory.shedding && route !== undefined && SHED_ROUTES.has(`${method} ${route}`)) {
      throw Object.assign(memory.refuse('task'), { headers: [['retry-after', String(OVERLOAD_RETRY_AFTER_S)]] });
    }
  };

  return {
    raw(req, res, next) {
      const url = req.url ?? '/';
      if (tooLong(url)) return sendProblem(res, urlError());
      if (!hostValid(req.headers.host)) return sendProblem(res, hostError());
      const ip = ips.of(req);
      // oidc-provider (Koa) believes X-Forwarded-* only when proxies are trusted (`provider.proxy`):
      // it then gets exactly the address resolved here, and the other headers only from a trusted peer.
      if (ips.trusted(req.socket.remoteAddress ?? '')) req.headers['x-forwarded-for'] = ip;
      else for (const h of FORWARDED) delete req.headers[h];
      const cls = classify(req.method ?? 'GET', pathOf(url));
      if (!cls) return next(ip);
      const pass = (v: RateVerdict) => {
        if (!v.allowed) return sendProblem(res, rateLimitError(v), v.headers);
        for (const [k, val] of v.headers) res.setHeader(k, val);
        next(ip);
      };
      const fail = (err: unknown) => {
        o.onError(err);
        sendProblem(res, err instanceof PalisadeError ? err : new PalisadeError('PAL_ERR_INTERNAL', 'internal error'));
      };
      // In-process buckets answer at once: the request goes on in this same turn (no promise hop).
      let v: RateVerdict | Promise<RateVerdict>;
      try {
        v = limiter.check(cls, { ip, principal: cls === 'token' ? clientPrincipal(req.headers.authorization) : undefined });
      } catch (e) {
        return fail(e);
      }
      if (v instanceof Promise) v.then(pass, fail);
      else pass(v);
    },
    async check(req, ip, route, ipLater) {
      const url = req.url ?? '/';
      if (tooLong(url)) throw urlError();
      if (!hostValid(req.headers.host)) throw hostError();
      checkMemory(req.method ?? 'GET', route);
      const cls = ipLater ?? classify(req.method ?? 'GET', pathOf(url));
      if (!cls) return undefined;
      if (ipLater && !limiter.refusing(cls, ip)) return IP_CHECK_LATER;
      const v = await limiter.check(cls, { ip });
      if (!v.allowed) throw Object.assign(rateLimitError(v), { headers: v.headers });
      return v;
    },
  };
}

function clientPrincipal(authorization: string | undefined): string | undefined {
  const id = basicClientId(authorization);
  return id === undefined ? undefined : `client:${id}`;
}
