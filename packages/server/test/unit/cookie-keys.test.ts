/**
 * The cookie signer oidc-provider is given (auth/cookie-keys.ts) against `keygrip`, the signer
 * `cookies` uses by default: the same signatures, the same answers for every key, wrong and
 * malformed digests refused — so cookies signed before and after the change (or by nodes of two
 * versions during a rolling upgrade) are read alike.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Keygrip from 'keygrip';
import { cookieKeys } from '../../src/auth/cookie-keys.ts';

const key = () => randomBytes(32).toString('base64url');
const data = ['palisade-session=abc', '__Host-palisade-interaction=Zx9-_q', 'x=' + 'é'.repeat(40), ''];

describe('cookie signatures (auth/cookie-keys.ts) against keygrip', () => {
  it('signs as keygrip does, with the first key', () => {
    const keys = [key(), key(), 'a plain passphrase'];
    const ours = cookieKeys(keys);
    const theirs = new Keygrip(keys);
    for (const d of data) assert.equal(ours.sign(d), theirs.sign(d), d);
  });

  it('finds the key that signed, as keygrip does (a key rotated in is still accepted), and -1 for none', () => {
    const [k0, k1, k2] = [key(), key(), key()];
    const ours = cookieKeys([k0, k1]);
    const theirs = new Keygrip([k0, k1]);
    for (const d of data) {
      for (const [signer, expected] of [[k0, 0], [k1, 1], [k2, -1]] as const) {
        const digest = new Keygrip([signer]).sign(d);
        assert.equal(ours.index(d, digest), expected, `${d} signed with key ${expected}`);
        assert.equal(ours.index(d, digest), theirs.index(d, digest));
        assert.equal(ours.verify(d, digest), expected !== -1);
      }
    }
  });

  it('refuses a signature of other data, a truncated or padded one, one in plain base64, and an empty one', () => {
    const k = key();
    const ours = cookieKeys([k]);
    const good = ours.sign('a=1');
    const bad = [ours.sign('a=2'), good.slice(0, -1), `${good}=`, `${good}A`, good.replace(/-/g, '+').replace(/_/g, '/'), ''];
    for (const digest of bad) {
      if (digest === good) continue; // a signature without - or _ reads the same in both alphabets
      assert.equal(ours.index('a=1', digest), -1, digest);
      assert.equal(new Keygrip([k]).index('a=1', digest), -1, `keygrip agrees on ${digest}`);
    }
    assert.equal(ours.index('a=1', good), 0);
  });

  it('needs at least one key', () => {
    assert.throws(() => cookieKeys([]), /at least one key/);
  });
});
