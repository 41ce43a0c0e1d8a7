/**
 * @module auth/tokens — checks an access token on every request and connection: signature (ES256
 * only, our keys only), `typ: at+jwt`, issuer, audience, expiry, then resolves who it acts for.
 * A token of an API client acts for the client's owner; a token of a first-party public client acts
 * for its `sub`.
 */
import { createLocalJWKSet, jwtVerify, errors as joseErrors, type JWK, type JWTPayload } from 'jose';
import { PalisadeError } from '@palisade/protocol';
import type { DurableStore } from '../store/types.ts';
import { FIRST_PARTY_CLIENTS } from './provider.ts';
import { assertSessionLive, type SessionManager } from './sessions.ts';
import type { ClientDirectory } from './clients.ts';

/** Who a request acts for. */
export interface Principal {
  /** The user whose agents and tasks this is. */
  userId: string;
  clientId: string;
  scopes: ReadonlySet<string>;
  kind: 'user' | 'client';
  role: 'admin' | 'user';
  /** Token expiry, epoch seconds. */
  exp: number;
  /** The session (grant) a person's token belongs to; API clients have none. */
  sessionId?: string | undefined;
}

export interface TokenVerifier {
  verify(token: string | undefined): Promise<Principal>;
  /** Replaces the keys tokens are verified against (after a key rotation); forgets verified tokens. */
  setPublicKeys(keys: JWK[]): void;
}

export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  publicKeys: JWK[];
  store: DurableStore;
  /** API clients (cached; a revoked client is refused at once). */
  clients: ClientDirectory;
  /** Sessions: a person's token is refused once its session is revoked. */
  sessions: SessionManager;
}

/** Most signature-checked tokens remembered at once. */
export const VERIFIED_CACHE_SIZE = 10_000;

export function createTokenVerifier({ issuer, audience, publicKeys, store, clients, sessions }: TokenVerifierOptions): TokenVerifier {
  let jwks = createLocalJWKSet({ keys: publicKeys });
  // Signature checks are the costly part (WebCrypto, off the main thread); a token whose signature and
  // claims were checked is remembered until it expires. Who it acts for is resolved on every use, so
  // a revoked client or deleted user is refused at once.
  const verified = new Map<string, JWTPayload>();
  const check = async (token: string): Promise<JWTPayload> => {
    const hit = verified.get(token);
    if (hit && Number(hit.exp) * 1000 > Date.now()) return hit;
    if (hit) verified.delete(token);
    const { payload } = await jwtVerify(token, jwks, { issuer, audience, algorithms: ['ES256'], typ: 'at+jwt', requiredClaims: ['exp', 'client_id'] });
    // A person's token is checked against its session once per node (it must still exist: this
    // covers revocations from before this node started); later uses check the revocation mirror.
    if (Object.hasOwn(FIRST_PARTY_CLIENTS, String(payload.client_id))) {
      if (typeof payload.gid !== 'string' || !(await sessions.validate(payload.gid))) throw new PalisadeError('PAL_ERR_SESSION_REVOKED', 'this session was revoked or has ended; sign in again');
    }
    if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value!);
    verified.set(token, payload);
    return payload;
  };
  return {
    setPublicKeys(keys) {
      jwks = createLocalJWKSet({ keys });
      verified.clear();
    },
    async verify(token) {
      if (!token) throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'an access token is required');
      let payload;
      try {
        payload = await check(token);
      } catch (e) {
        if (e instanceof PalisadeError) throw e;
        const reason = e instanceof joseErrors.JWTExpired ? 'the access token has expired'
          : e instanceof joseErrors.JWTClaimValidationFailed ? `the access token's "${e.claim}" claim is not accepted`
          : 'the access token is not valid';
        throw new PalisadeError('PAL_ERR_TOKEN_INVALID', reason, { internal: e });
      }
      const clientId = String(payload.client_id);
      const scopes = new Set(String(payload.scope ?? '').split(' ').filter(Boolean));
      const exp = Number(payload.exp);
      if (Object.hasOwn(FIRST_PARTY_CLIENTS, clientId)) {
        const user = payload.sub ? await store.users.byId(payload.sub) : undefined;
        if (!user) throw new PalisadeError('PAL_ERR_TOKEN_INVALID', 'the token names no known user');
        const sessionId = String(payload.gid);
        assertSessionLive(sessions, sessionId);
        return { userId: user.id, clientId, scopes, kind: 'user', role: user.role, exp, sessionId };
      }
      const client = await clients.get(clientId);
      if (!client) throw new PalisadeError('PAL_ERR_TOKEN_INVALID', 'the token belongs to an unknown or revoked client');
      return { userId: client.ownerUserId, clientId, scopes, kind: 'client', role: 'user', exp };
    },
  };
}

/** Throws `PAL_ERR_FORBIDDEN` unless the principal holds `scope`. */
export function requireScope(p: Principal, scope: string): void {
  if (!p.scopes.has(scope)) throw new PalisadeError('PAL_ERR_FORBIDDEN', `this action needs the "${scope}" scope`);
}

/** Reads a bearer token from an Authorization header value. */
export function bearer(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header.trim());
  return m?.[1];
}
