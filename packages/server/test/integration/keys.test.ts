/**
 * Signing keys rotate without downtime: the next key is in the JWKS before it signs, tokens signed
 * by the old key keep working until they expire, and a second node on the same database picks the
 * rotation up by itself. Two nodes share PostgreSQL (and Redis for hot state, when available).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeProtectedHeader } from 'jose';
import { apiClient, clientToken, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../support/redis.ts';

const schema = `palisade_keys_${process.pid}`;
const skip = await postgresSkip('key rotation across nodes');
const noRedis = await redisSkip('key rotation across nodes (hot state)');
const prefix = testPrefix();

describe('signing-key rotation', { skip }, () => {
  let a: TestServer;
  let b: TestServer;
  let admin: string;
  before(async () => {
    const shared = { databaseUrl: POSTGRES_URL, databaseSchema: schema, keyReloadMs: 200, ...(noRedis ? {} : { redisUrl: REDIS_URL, redisPrefix: prefix }) };
    a = await startTestServer(shared);
    await createAdmin(a);
    b = await startTestServer({ ...shared, publicUrl: a.url }); // one deployment: one issuer
    admin = (await deviceLogin(a, 'palisade-cli', 'openid offline_access tasks admin')).access_token;
  });
  after(async () => {
    await a?.close();
    await b?.close();
    if (!skip) await dropSchema(schema);
    if (!noRedis) await dropPrefix(prefix);
  });

  const jwks = async (t: TestServer) => ((await (await t.fetch('/oauth2/jwks')).json()) as { keys: { kid: string; d?: string }[] }).keys.map((k) => { assert.equal(k.d, undefined, 'no private part published'); return k.kid; });
  const kidOf = (token: string) => decodeProtectedHeader(token).kid!;

  it('lists the ring to admins only, and refuses rotation to non-admins', async () => {
    const res = await a.fetch('/api/v1/keys', { token: admin });
    assert.equal(res.status, 200);
    const { keys } = (await res.json()) as { keys: { kid: string; status: string }[] };
    assert.deepEqual(keys.map((k) => k.status).sort(), ['current', 'next']);
    const client = await apiClient(a, 'not an admin');
    assert.equal((await a.fetch('/api/v1/keys/rotate', { method: 'POST', token: client.token })).status, 403);
  });

  it('rotates: the new signer was published before it signed, old tokens still verify on both nodes, the other node follows', async () => {
    const client = await apiClient(a, 'rotation');
    const before = await clientToken(a, client.clientId, client.clientSecret);
    const published = await jwks(a);
    assert.equal(published.length, 2);
    const oldKid = kidOf(before);
    const nextKid = published.find((k) => k !== oldKid)!;

    const res = await a.fetch('/api/v1/keys/rotate', { method: 'POST', token: admin });
    assert.equal(res.status, 200);
    const { keys } = (await res.json()) as { keys: { kid: string; status: string; retireAfter?: string }[] };
    assert.equal(keys.find((k) => k.status === 'current')?.kid, nextKid, 'the key published as next now signs');
    assert.equal(keys.find((k) => k.status === 'retired')?.kid, oldKid);
    assert.ok(Date.parse(keys.find((k) => k.status === 'retired')!.retireAfter!) > Date.now() + 900_000, 'kept until its last token expires');

    const after = await clientToken(a, client.clientId, client.clientSecret);
    assert.equal(kidOf(after), nextKid);
    assert.equal((await jwks(a)).length, 3, 'retired, current and a new next are published');
    for (const t of [a, b]) {
      const r = await t.fetch('/api/v1/me', { token: before });
      assert.equal(r.status, 200, `a token signed by the retired key still works: ${await r.text()}`);
      assert.equal((await t.fetch('/api/v1/me', { token: after })).status, 200, 'a token signed by the new key works on every node at once');
    }
    // Node B picks up the rotation on its own and signs with the new key too.
    let kidB = '';
    for (let i = 0; i < 50 && kidB !== nextKid; i++) {
      kidB = kidOf(await clientToken(b, client.clientId, client.clientSecret));
      if (kidB !== nextKid) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(kidB, nextKid);
    assert.deepEqual((await jwks(b)).sort(), (await jwks(a)).sort());
    assert.ok(a.securityEvents.some((e) => e.activity_name === 'keys.rotate'));
  });
});
