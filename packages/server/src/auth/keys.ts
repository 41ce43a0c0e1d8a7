/**
 * @module auth/keys — the token-signing key ring, rotated without downtime. Kept in the durable
 * store, so every node signs and verifies with the same keys.
 *
 * Three kinds of key, all ES256 and all published in the JWKS:
 *  - `current` signs every new token;
 *  - `next` is published (so verifiers, ours and anyone caching our JWKS, know it) but signs nothing
 *    until the next rotation makes it current;
 *  - `retired` signs nothing and stays published until the last token it signed has expired
 *    (`retireAfter`), then it is dropped.
 * A rotation is: next → current, current → retired, a new next. It is one compare-and-set on the
 * stored ring, so two nodes (or two admins) rotating at once never fork it: one rotation applies
 * first, the other then rotates the result.
 */
import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { PalisadeError } from '@palisade/protocol';
import type { MetaRepo } from '../store/types.ts';

export type PrivateJwk = JWK & { kid: string; alg: 'ES256'; use: 'sig' };

export interface SigningKey {
  jwk: PrivateJwk;
  status: 'current' | 'next' | 'retired';
  createdAt: string;
  /** Retired keys: when the last token they signed has expired and they are dropped. */
  retireAfter?: string | undefined;
}

export interface KeySet {
  version: number;
  keys: SigningKey[];
}

/** What an admin sees of a key: never the private part. */
export interface KeyView {
  kid: string;
  status: SigningKey['status'];
  createdAt: string;
  retireAfter?: string | undefined;
}

export interface KeyRing {
  /** The key set in use on this node. */
  readonly set: KeySet;
  /** Private JWKs for oidc-provider: only `current` may sign (the others are `key_ops: verify`). */
  providerJwks(): JWK[];
  /** Public JWKs every token is verified against. */
  publicKeys(): JWK[];
  view(): KeyView[];
  /** Rotates (next → current → retired, a new next) and drops expired retired keys. */
  rotate(): Promise<KeySet>;
  /** Reloads the stored set (another node may have rotated); true if it changed. */
  reload(): Promise<boolean>;
}

const META_KEY = 'signing_keys';

export async function newSigningKey(status: SigningKey['status']): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomBytes(12).toString('base64url'), alg: 'ES256', use: 'sig' } as PrivateJwk;
  return { jwk, status, createdAt: new Date().toISOString() };
}

export interface KeyRingOptions {
  meta: MetaRepo;
  /** How long a retired key stays published: the longest lifetime of a token it may have signed, ms. */
  keepRetiredMs: number;
  /** The key to start the ring with when the store has none (an earlier version's key, so its tokens stay valid). */
  seed?: PrivateJwk | undefined;
  now?: () => number;
}

export async function openKeyRing({ meta, keepRetiredMs, seed, now = Date.now }: KeyRingOptions): Promise<KeyRing> {
  const read = async (): Promise<{ raw: string; set: KeySet } | undefined> => {
    const raw = await meta.get(META_KEY);
    return raw === undefined ? undefined : { raw, set: JSON.parse(raw) as KeySet };
  };
  let loaded = await read();
  if (!loaded) {
    const current = seed ? { jwk: seed, status: 'current' as const, createdAt: new Date(now()).toISOString() } : await newSigningKey('current');
    const fresh: KeySet = { version: 1, keys: [current, await newSigningKey('next')] };
    // Nodes starting together on an empty store: one ring wins, everyone uses it.
    await meta.compareAndSet(META_KEY, undefined, JSON.stringify(fresh));
    loaded = await read();
    if (!loaded) throw new PalisadeError('PAL_ERR_INTERNAL', 'the signing keys could not be stored');
  }
  let { raw, set } = loaded;

  const ring: KeyRing = {
    get set() {
      return set;
    },
    providerJwks() {
      const current = set.keys.find((k) => k.status === 'current');
      if (!current) throw new PalisadeError('PAL_ERR_INTERNAL', 'no current signing key');
      return [current.jwk, ...set.keys.filter((k) => k !== current).map((k) => ({ ...k.jwk, key_ops: ['verify'] }))];
    },
    publicKeys() {
      return set.keys.map((k) => publicJwk(k.jwk));
    },
    view() {
      return set.keys.map((k) => ({ kid: k.jwk.kid, status: k.status, createdAt: k.createdAt, retireAfter: k.retireAfter }));
    },
    async rotate() {
      for (let attempt = 0; attempt < 5; attempt++) {
        const t = now();
        const next = set.keys.find((k) => k.status === 'next') ?? await newSigningKey('next');
        const rotated: KeySet = {
          version: set.version + 1,
          keys: [
            { ...next, status: 'current' },
            ...set.keys.filter((k) => k.status === 'current').map((k) => ({ ...k, status: 'retired' as const, retireAfter: new Date(t + keepRetiredMs).toISOString() })),
            ...set.keys.filter((k) => k.status === 'retired' && Date.parse(k.retireAfter ?? '') > t),
            await newSigningKey('next'),
          ],
        };
        const text = JSON.stringify(rotated);
        if (await meta.compareAndSet(META_KEY, raw, text)) {
          raw = text;
          set = rotated;
          return set;
        }
        await ring.reload(); // another node rotated meanwhile: start from its ring
      }
      throw new PalisadeError('PAL_ERR_CONFLICT', 'the signing keys kept changing during the rotation; try again');
    },
    async reload() {
      const r = await read();
      if (!r || r.raw === raw) return false;
      raw = r.raw;
      set = r.set;
      return true;
    },
  };
  return ring;
}

/** The public half of a private JWK. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, key_ops: _ops, ...pub } = jwk;
  return pub;
}
