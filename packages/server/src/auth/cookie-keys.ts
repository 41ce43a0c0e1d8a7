/**
 * @module auth/cookie-keys — signs and checks oidc-provider's cookies (the sign-in session, the
 * interaction, the resume cookie) exactly as `keygrip` does, which `cookies` (Koa's) uses by default:
 * HMAC-SHA1 of `name=value`, URL-safe base64 without padding, the first key signs, every key is
 * tried on the way in (so a key can be rotated in). Cookies signed by one are accepted by the other.
 *
 * Why not `keygrip` itself: given an array, `cookies` builds a new Keygrip for every request, which
 * hands the key string to `createHmac` on every signature, and compares signatures with `tsscmp`:
 * two more HMACs under fresh random bytes per comparison. A sign-in checks the interaction cookie
 * twice; measured, that was ~14 % of a sign-in's main-thread time. Here each key is imported once
 * (`createSecretKey`) and the comparison is `timingSafeEqual` (constant time for the fixed length of
 * a signature; a digest of another length is refused before it, which tells an attacker nothing).
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

/** What `cookies` asks of its `keys` (keygrip's interface). */
export interface CookieSigner {
  sign(data: string): string;
  verify(data: string, digest: string): boolean;
  /** The index of the key that signed `data` with `digest`, or -1. */
  index(data: string, digest: string): number;
}

export function cookieKeys(keys: readonly string[]): CookieSigner {
  if (keys.length === 0) throw new Error('cookie keys: at least one key is needed');
  const imported: KeyObject[] = keys.map((k) => createSecretKey(Buffer.from(k, 'utf8')));
  const sign = (data: string, key: KeyObject) => createHmac('sha1', key).update(data).digest('base64url');
  return {
    sign: (data) => sign(String(data), imported[0]!),
    verify(data, digest) {
      return this.index(data, digest) > -1;
    },
    index(data, digest) {
      const given = Buffer.from(String(digest));
      for (let i = 0; i < imported.length; i++) {
        const expected = Buffer.from(sign(String(data), imported[i]!));
        if (expected.length === given.length && timingSafeEqual(expected, given)) return i;
      }
      return -1;
    },
  };
}
