/** The signing-key ring over a real store: rotation order, retirement, concurrent rotations, first start. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { newSigningKey, openKeyRing } from '../../src/auth/keys.ts';

const kids = (ring: { set: { keys: { jwk: { kid: string }; status: string }[] } }, status: string) => ring.set.keys.filter((k) => k.status === status).map((k) => k.jwk.kid);

describe('signing key ring', () => {
  it('starts with a current and a next key; only the current one may sign; private parts never leave in public keys', async () => {
    const store = openSqliteStore(':memory:');
    const ring = await openKeyRing({ meta: store.meta, keepRetiredMs: 1000 });
    assert.equal(kids(ring, 'current').length, 1);
    assert.equal(kids(ring, 'next').length, 1);
    const jwks = ring.providerJwks();
    assert.equal(jwks[0]!.kid, kids(ring, 'current')[0]);
    assert.equal(jwks[0]!.key_ops, undefined);
    assert.deepEqual(jwks[1]!.key_ops, ['verify'], 'the next key is published but cannot sign');
    for (const k of ring.publicKeys()) assert.equal(k.d, undefined);
    await store.close();
  });

  it('rotation: next becomes current, current is retired until its tokens expire, then dropped', async () => {
    const store = openSqliteStore(':memory:');
    let now = Date.parse('2026-01-01T00:00:00Z');
    const ring = await openKeyRing({ meta: store.meta, keepRetiredMs: 60_000, now: () => now });
    const [c0] = kids(ring, 'current');
    const [n0] = kids(ring, 'next');
    await ring.rotate();
    assert.deepEqual(kids(ring, 'current'), [n0], 'the key published as next now signs');
    assert.deepEqual(kids(ring, 'retired'), [c0]);
    assert.equal(ring.set.keys.find((k) => k.status === 'retired')!.retireAfter, new Date(now + 60_000).toISOString());
    assert.equal(kids(ring, 'next').length, 1);
    now += 30_000;
    await ring.rotate();
    assert.equal(kids(ring, 'retired').length, 2, 'still within its tokens\' lifetime');
    now += 31_000;
    await ring.rotate();
    assert.ok(!kids(ring, 'retired').includes(c0!), 'dropped once its last token has expired');
    assert.equal(ring.set.version, 4);
    await store.close();
  });

  it('two nodes rotating at once never fork the ring; a node that reloads sees the other\'s rotation', async () => {
    const store = openSqliteStore(':memory:');
    const a = await openKeyRing({ meta: store.meta, keepRetiredMs: 60_000 });
    const b = await openKeyRing({ meta: store.meta, keepRetiredMs: 60_000 });
    assert.deepEqual(a.set, b.set, 'both start from the stored ring');
    await Promise.all([a.rotate(), b.rotate()]);
    await a.reload();
    await b.reload();
    assert.deepEqual(a.set, b.set);
    assert.equal(a.set.version, 3);
    assert.equal(kids(a, 'current').length, 1);
    assert.equal(kids(a, 'next').length, 1);
    await store.close();
  });

  it('an earlier version\'s key seeds the ring, so its tokens stay valid after the upgrade', async () => {
    const store = openSqliteStore(':memory:');
    const legacy = (await newSigningKey('current')).jwk;
    const ring = await openKeyRing({ meta: store.meta, keepRetiredMs: 1000, seed: legacy });
    assert.deepEqual(kids(ring, 'current'), [legacy.kid]);
    await store.close();
  });
});
