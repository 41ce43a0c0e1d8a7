/**
 * @module auth/clients — API clients (client credentials). The secret is 256 random bits, shown
 * once and stored as a SHA-256 hash: a high-entropy secret needs no slow hash, and the token
 * endpoint stays fast. oidc-provider compares secrets through `compareClientSecret`, which
 * `installHashedSecrets` points at the hash.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiClientRecord } from '../store/types.ts';

export const CLIENT_SCOPES = ['tasks'] as const;

/** Hashes a client secret for storage: `sha256:<base64url>`. */
export function hashClientSecret(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('base64url')}`;
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
