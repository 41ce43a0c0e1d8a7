/**
 * @module auth/adapter — oidc-provider's storage adapter. Sessions, grants, device codes, refresh
 * tokens and interactions live in an `OidcRepo`: the durable store's (SQLite, PostgreSQL) or, with
 * Redis configured, the hot store's; either way they survive a restart. The `Client` model resolves
 * API clients created by admins from the durable store; their metadata carries the secret's hash,
 * never the secret.
 */
import { createHash } from 'node:crypto';
import { errors as oidcErrors } from 'oidc-provider';
import { PalisadeError } from '@palisade/protocol';
import type { OidcRecord, OidcRepo } from '../store/types.ts';
import type { ClientDirectory } from './clients.ts';

type Payload = Record<string, unknown> & { grantId?: string; userCode?: string; uid?: string; jti?: string; accountId?: string };

/**
 * Models whose id is itself a bearer token (an opaque refresh token or code): stored under the
 * SHA-256 of the id, with the id left out of the payload, so a copy of the database holds no
 * usable token. (Sessions and device codes are also looked up by uid / user code, which needs
 * their id in the payload; encrypting those at rest comes with the encryption-at-rest work.)
 */
export const HASHED_MODELS: ReadonlySet<string> = new Set(['RefreshToken', 'AuthorizationCode', 'AccessToken', 'ClientCredentials']);
const hashId = (id: string) => `sha256:${createHash('sha256').update(id).digest('base64url')}`;

/**
 * An unreachable store becomes OAuth's `temporarily_unavailable` with HTTP 503 (the provider adds
 * `Retry-After`), not a 500 `server_error`: the request is refused, and the caller told to retry.
 */
async function available<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (e) {
    if (!(e instanceof PalisadeError) || e.code !== 'PAL_ERR_UNAVAILABLE') throw e;
    const err = new oidcErrors.TemporarilyUnavailable('a store is unreachable; try again shortly', { cause: e });
    Object.assign(err, { status: 503, statusCode: 503, expose: true, code: e.code });
    throw err;
  }
}

/** Builds the adapter class oidc-provider instantiates once per model name. */
export function createOidcAdapter(records: OidcRepo, clients: ClientDirectory) {
  return class PalisadeOidcAdapter {
    readonly model: string;
    constructor(model: string) {
      this.model = model;
      this.#hashed = HASHED_MODELS.has(model);
    }

    readonly #hashed: boolean;

    #key(id: string): string {
      return this.#hashed ? hashId(id) : id;
    }

    async upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
      let stored = payload;
      if (this.#hashed && payload.jti !== undefined) {
        const { jti: _jti, ...rest } = payload;
        stored = rest;
      }
      const record: OidcRecord = {
        payload: stored,
        expiresAt: expiresIn ? Math.floor(Date.now() / 1000) + expiresIn : undefined,
        grantId: payload.grantId,
        userCode: payload.userCode,
        uid: payload.uid,
        accountId: payload.accountId,
      };
      await available(records.upsert(this.model, this.#key(id), record));
    }

    async find(id: string): Promise<Payload | undefined> {
      if (this.model === 'Client') return available(findClient(clients, id));
      const payload = live(await available(records.find(this.model, this.#key(id))));
      return payload && this.#hashed ? { ...payload, jti: id } : payload;
    }

    async findByUserCode(userCode: string): Promise<Payload | undefined> {
      return live(await available(records.findByUserCode(this.model, userCode)));
    }

    async findByUid(uid: string): Promise<Payload | undefined> {
      return live(await available(records.findByUid(this.model, uid)));
    }

    async consume(id: string): Promise<void> {
      await available(records.consume(this.model, this.#key(id)));
    }

    async destroy(id: string): Promise<void> {
      await available(records.destroy(this.model, this.#key(id)));
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await available(records.revokeByGrantId(grantId));
    }
  };
}

/** The record's payload (repositories never return expired records). */
function live(r: OidcRecord | undefined): Payload | undefined {
  return r?.payload as Payload | undefined;
}

async function findClient(clients: ClientDirectory, id: string): Promise<Payload | undefined> {
  const c = await clients.get(id);
  if (!c) return undefined;
  return {
    client_id: c.clientId,
    client_secret: c.secretHash,
    client_name: c.name,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: c.scopes.join(' '),
  };
}
