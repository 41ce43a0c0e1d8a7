/**
 * @module auth/clients — API clients (client credentials). The secret is 256 random bits, shown
 * once and stored as a SHA-256 hash: a high-entropy secret needs no slow hash, and the token
 * endpoint stays fast. oidc-provider compares secrets through `compareClientSecret`, which
 * `installHashedSecrets` points at the hash.
 */
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiClientRecord, ClientRepo } from '../store/types.ts';
import type { Revocations } from '../hot/types.ts';

export const CLIENT_SCOPES = ['tasks'] as const;

/** Hashes a client secret for storage: `sha256:<base64url>`. */
export function hashClientSecret(secret: string): string {
  return `sha256:${hash('sha256', secret, 'base64url')}`;
}

/** Constant-time check of a presented secret against the stored hash. */
export function clientSecretMatches(storedHash: string, presented: string): boolean {
  const a = Buffer.from(storedHash);
  const b = Buffer.from(hashClientSecret(presented));
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A new API client record and its one-time secret. */
export function newApiClient(ownerUserId: string, name: string, scopes: string[]): { record: ApiClientRecord; secret: string } {
  const secret = `pal_sk_${randomBytes(32).toString('base64url')}`;
  return {
    secret,
    record: {
      clientId: `pal_${randomBytes(12).toString('base64url')}`,
      ownerUserId,
      name,
      secretHash: hashClientSecret(secret),
      scopes,
      createdAt: new Date().toISOString(),
    },
  };
}

/** Makes the provider's client authentication compare against stored hashes. */
export function installHashedSecrets(ClientClass: { prototype: object }): void {
  Object.defineProperty(ClientClass.prototype, 'compareClientSecret', {
    configurable: true,
    value: function compareClientSecret(this: { clientSecret?: string }, presented: string): boolean {
      const stored = this.clientSecret;
      return typeof stored === 'string' && stored.startsWith('sha256:') && clientSecretMatches(stored, presented);
    },
  });
}

/**
 * Makes the provider's `Client.find` reuse the Client it built from an API client's record for as
 * long as the directory caches that record (the same object): oidc-provider otherwise hashes the
 * metadata of every client its adapter finds (SHA-256 of its JSON) to pick its own cached Client,
 * ~7 µs of every token request. A revoked client is still refused at once: the directory answers
 * undefined. Static (first-party) clients are left to the library.
 */
export function reuseApiClients(ClientClass: { find(id: unknown): Promise<unknown> }, directory: ClientDirectory, isStatic: (id: string) => boolean): void {
  const find = ClientClass.find.bind(ClientClass);
  const built = new WeakMap<ApiClientRecord, unknown>();
  Object.defineProperty(ClientClass, 'find', {
    configurable: true,
    value: async function findClient(id: unknown): Promise<unknown> {
      if (typeof id !== 'string' || id.length === 0 || isStatic(id)) return find(id);
      const record = await directory.get(id);
      if (!record) return undefined;
      let client = built.get(record);
      if (client === undefined) {
        client = await find(id);
        if (client !== undefined) built.set(record, client);
      }
      return client;
    },
  });
}

/**
 * API clients as the token endpoint and the token checks see them: read from the store at most once
 * per `ttlMs` per node (the token endpoint reads the client on every request; this was 10–15 % of
 * its cost). A revocation reaches every node's cache at once through the hot store's revocation
 * channel, so a revoked client is refused everywhere immediately, cache or not.
 */
export interface ClientDirectory {
  /** The client if it exists and is not revoked. */
  get(clientId: string): Promise<ApiClientRecord | undefined>;
  /** Revokes the client in the store and on every node; false if there was nothing to revoke. */
  revoke(clientId: string): Promise<boolean>;
}

export interface ClientDirectoryOptions {
  clients: ClientRepo;
  revocations: Revocations;
  /** How long a client read from the store is reused, ms. Default 30 s. */
  ttlMs?: number;
  /** Most clients cached. Default 10,000. */
  max?: number;
  /** How long the revocation notice is kept (at least the cache's lifetime), ms. */
  noticeMs: number;
}

const revokedId = (clientId: string) => `client:${clientId}`;

export function createClientDirectory({ clients, revocations, ttlMs = 30_000, max = 10_000, noticeMs }: ClientDirectoryOptions): ClientDirectory {
  const cache = new Map<string, { record: ApiClientRecord; until: number }>();
  revocations.onRevoke((id) => {
    if (id.startsWith('client:')) cache.delete(id.slice('client:'.length));
  });
  return {
    async get(clientId) {
      if (revocations.has(revokedId(clientId))) return undefined;
      const hit = cache.get(clientId);
      if (hit && hit.until > Date.now()) return hit.record;
      const record = await clients.byId(clientId);
      cache.delete(clientId);
      if (!record || record.revokedAt) return undefined;
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(clientId, { record, until: Date.now() + ttlMs });
      return record;
    },
    async revoke(clientId) {
      const done = await clients.revoke(clientId, new Date().toISOString());
      if (done) await revocations.revoke(revokedId(clientId), Math.max(noticeMs, ttlMs + 60_000));
      cache.delete(clientId);
      return done;
    },
  };
}
