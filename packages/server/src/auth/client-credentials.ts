/**
 * @module auth/client-credentials — the token endpoint's direct path for API clients: a
 * `client_credentials` request that oidc-provider would certainly grant is answered here, with the
 * token oidc-provider would issue (the same claims in the same order, the same header, signed with
 * the same key), the same response and the same security event. Everything else, and anything this
 * path is not sure of, goes to oidc-provider untouched (its body replayed): every refusal, every
 * other grant, every client authentication but HTTP Basic, DPoP, resource indicators, CORS.
 *
 * Why: oidc-provider's token pipeline (Koa, its middleware chain, its models, its JOSE layer)
 * costs a client-credentials token more than all of Palisade's checks around it; inside Palisade's
 * process it measured 0.70–0.80× a bare oidc-provider's throughput (bench/token.bench.ts, budget
 * 0.9×) after every smaller saving was made. This path does the same checks with none of that
 * machinery. `tokenDirectPath: false` turns it off; the test suite checks both paths issue the same.
 *
 * Taken here only when all hold (else oidc-provider):
 *  - `POST /oauth2/token`, no query, `Content-Type: application/x-www-form-urlencoded` (optionally
 *    `; charset=utf-8`), a `Content-Length` of at most 1 KiB; no `Origin`, `DPoP` or client
 *    attestation header;
 *  - `Authorization: Basic` with a well-formed client id and secret (RFC 6749 §2.3.1 encoding);
 *  - a body of `grant_type=client_credentials` once and `scope` at most once, nothing else;
 *  - an API client (not first-party) the directory knows and has not revoked, whose secret matches;
 *  - every requested scope valid in syntax and among the client's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createPrivateKey, randomBytes, sign, type JsonWebKey } from 'node:crypto';
import { parse as parseForm } from 'node:querystring';
import type { JWK } from 'jose';
import type { ClientDirectory } from './clients.ts';
import { clientSecretMatches } from './clients.ts';
import type { SecurityEvents } from '../siem/events.ts';

/** Largest body this path reads; a client-credentials request is a few dozen bytes. */
export const DIRECT_MAX_BODY = 1024;

export interface DirectTokenOptions {
  issuer: string;
  audience: string;
  /** Access-token lifetime, s. */
  ttlS: number;
  clients: ClientDirectory;
  events: SecurityEvents;
  /** The key that signs new tokens: the ring's current key, the one oidc-provider is given beside this path. */
  signingKey: JWK;
  /** Client ids oidc-provider owns (first-party public clients): never taken here. */
  isStatic: (clientId: string) => boolean;
  /** Scopes the API resource server accepts. */
  resourceScopes: ReadonlySet<string>;
}

export interface DirectTokenPath {
  /** Answers `req` if it is a request this path takes; else calls `fallback` (body replayed). */
  handle(req: IncomingMessage, res: ServerResponse, ip: string, fallback: () => void): void;
}

// oidc-provider's own syntax checks (client_auth.js `isValidBase64`, `noVSCHAR`; is_valid_scope.js).
const BASIC = /^basic ([A-Za-z0-9+/]+={0,2})$/i;
const NO_VSCHAR = /[^\x20-\x7E]/;
const SCOPE_SYNTAX = /^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$/;
const FORM = /^application\/x-www-form-urlencoded(?:;\s*charset=utf-8)?$/i;
const PASS_HEADERS = ['origin', 'dpop', 'oauth-client-attestation', 'oauth-client-attestation-pop'] as const;
/**
 * oidc-provider's headers on a token response: no caching; its CORS middleware's answer to a
 * request without `Origin` (any origin, the one header a script may read, varies by origin).
 */
const PROVIDER_HEADERS = {
  'cache-control': 'no-store',
  vary: 'Origin',
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'WWW-Authenticate',
  'content-type': 'application/json; charset=utf-8',
} as const;

/**
 * The direct path, or undefined where oidc-provider would not issue its tokens as it does: an
 * audience that is not an absolute URI without a fragment (oidc-provider then refuses every token
 * request: `invalid_target`), or a signing key that is not a P-256 key with a `kid` (this path signs
 * ES256 and names the key). Every request then goes to oidc-provider.
 */
export function createDirectTokenPath(o: DirectTokenOptions): DirectTokenPath | undefined {
  const href = URL.parse(o.audience)?.href;
  if (!href || href.includes('#')) return undefined;
  const k = o.signingKey;
  if (k.kty !== 'EC' || k.crv !== 'P-256' || typeof k.kid !== 'string' || k.kid.length === 0 || (k.alg !== undefined && k.alg !== 'ES256')) return undefined;
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  // oidc-provider's header for a JWT access token (helpers/jwt.js: alg, typ, then kid).
  const key = createPrivateKey({ key: o.signingKey as JsonWebKey, format: 'jwk' });
  const header = b64(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: o.signingKey.kid }));

  /** The client's credentials from the header, if well-formed (else oidc-provider explains why not). */
  const basic = (authorization: string | undefined): { id: string; secret: string } | undefined => {
    const m = authorization !== undefined && authorization.length <= 2048 ? BASIC.exec(authorization) : null;
    if (!m || !paddedRight(m[1]!)) return undefined;
    const text = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon <= 0) return undefined;
    try {
      const id = decodeURIComponent(text.slice(0, colon).replace(/\+/g, '%20'));
      const secret = decodeURIComponent(text.slice(colon + 1).replace(/\+/g, '%20'));
      if (!secret || NO_VSCHAR.test(id) || NO_VSCHAR.test(secret)) return undefined;
      return { id, secret };
    } catch {
      return undefined;
    }
  };

  /** The requested scopes if the body is exactly what this path takes. */
  const formScope = (body: Buffer): { scope: string | undefined } | undefined => {
    const form = parseForm(body.toString('utf8'));
    let scope: string | undefined;
    for (const [k, v] of Object.entries(form)) {
      if (typeof v !== 'string') return undefined; // repeated: oidc-provider refuses or decides
      if (k === 'grant_type') {
        if (v !== 'client_credentials') return undefined;
      } else if (k === 'scope') {
        if (!SCOPE_SYNTAX.test(v)) return undefined;
        scope = v;
      } else {
        return undefined;
      }
    }
    return form.grant_type === 'client_credentials' ? { scope } : undefined;
  };

  const issue = async (req: IncomingMessage, body: Buffer): Promise<{ token: string; clientId: string; scope: string | undefined } | undefined> => {
    const creds = basic(req.headers.authorization);
    const form = formScope(body);
    if (!creds || !form || o.isStatic(creds.id)) return undefined;
    const client = await o.clients.get(creds.id);
    if (!client || !clientSecretMatches(client.secretHash, creds.secret)) return undefined;
    const requested = form.scope === undefined ? [] : [...new Set(form.scope.split(' '))];
    if (requested.some((s) => !client.scopes.includes(s))) return undefined;
    const scope = requested.filter((s) => o.resourceScopes.has(s)).join(' ') || undefined;
    const iat = Math.floor(Date.now() / 1000);
    // oidc-provider's JWT access token (formats/jwt.js): these claims, in this order.
    const payload = { jti: randomBytes(32).toString('base64url'), sub: client.clientId, iat, exp: iat + o.ttlS, scope, client_id: client.clientId, iss: o.issuer, aud: o.audience };
    const input = `${header}.${b64(JSON.stringify(payload))}`;
    const signature = await new Promise<Buffer>((resolve, reject) => {
      sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }, (err, sig) => (err ? reject(err) : resolve(sig)));
    });
    return { token: `${input}.${signature.toString('base64url')}`, clientId: client.clientId, scope };
  };

  return {
    handle(req, res, ip, fallback) {
      const length = Number(req.headers['content-length']);
      if (
        req.method !== 'POST' || req.url !== '/oauth2/token' || !FORM.test(req.headers['content-type'] ?? '')
        || !(length > 0 && length <= DIRECT_MAX_BODY) || PASS_HEADERS.some((h) => req.headers[h] !== undefined)
        || !BASIC.test(req.headers.authorization ?? '')
      ) return fallback();
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('error', () => {}); // a request cut mid-body: nothing to answer (no 'end' follows)
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= DIRECT_MAX_BODY) chunks.push(c);
      });
      req.once('end', () => {
        const body = Buffer.concat(chunks);
        const passOn = () => {
          replayBody(req, body);
          fallback();
        };
        // Node ends a body at its Content-Length; kept as a guard (oidc-provider refuses a body of another length).
        if (size !== length) return passOn();
        issue(req, body).then((t) => {
          if (!t) return passOn();
          // The event before the answer: a listener that throws leaves nothing written, and
          // oidc-provider answers instead (with the 500 it gives when its own event's listener throws).
          o.events.emit({ class: 'authentication', activity: 'oauth.token', outcome: 'success', message: 'token issued (client_credentials)', actor: { clientId: t.clientId }, src: { ip } });
          const json = JSON.stringify({ access_token: t.token, expires_in: o.ttlS, scope: t.scope, token_type: 'Bearer' });
          res.writeHead(200, { ...PROVIDER_HEADERS, 'content-length': Buffer.byteLength(json) });
          res.end(json);
        }).catch((e: unknown) => {
          // A store or the signer failing: oidc-provider answers (503, 500) as it does. Once the
          // answer has started, nothing else can be said on this response.
          if (!res.headersSent) passOn();
          else res.destroy(e instanceof Error ? e : undefined);
        });
      });
    },
  };
}

/** Base64 whose padding is what its length needs (oidc-provider's `isValidBase64`; Node's decoder would take more). */
function paddedRight(b64: string): boolean {
  const pad = b64.length - b64.replace(/=+$/, '').length;
  const data = b64.length - pad;
  if (data === 0) return false;
  return pad === 0 ? data % 4 !== 1 : (data + pad) % 4 === 0 && pad === 4 - (data % 4);
}

/**
 * Makes a request whose body was read look unread to oidc-provider's body parser (`selective_body.js`
 * reads `req.readable` and `req.iterator()`), which then reads these same bytes.
 */
function replayBody(req: IncomingMessage, body: Buffer): void {
  Object.defineProperty(req, 'readable', { value: true, configurable: true });
  Object.defineProperty(req, 'iterator', {
    configurable: true,
    value: async function* replay() {
      if (body.length > 0) yield body;
    },
  });
}
