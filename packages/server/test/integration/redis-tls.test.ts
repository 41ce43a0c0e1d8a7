/**
 * Hot state in a Redis that speaks TLS only (a real `redis-server --tls-port`, certificates from
 * the `palisade certs` code): a node with `rediss://` and `redisCaFile` works end to end (a token
 * is issued, a session is listed, both kept in Redis), and a wrong CA is refused at start.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pino } from 'pino';
import { createPalisade } from '../../src/app.ts';
import { createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';
import { redisServerSkip, startRedis, stopAllRedis, trackRedisClients, disconnectTrackedClients, type RedisProc } from '../support/redis-procs.ts';
import { makePki, type TestPki } from '../support/certs.ts';

const skip = redisServerSkip('Redis TLS tests');
let pki: TestPki;
let other: TestPki;
let redis: RedisProc;

before(async () => {
  if (skip) return;
  trackRedisClients();
  pki = makePki();
  other = makePki();
  const cert = pki.server('redis', { names: ['127.0.0.1', 'localhost'] });
  redis = await startRedis({ tls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: pki.caFile } });
});
after(async () => {
  disconnectTrackedClients();
  await stopAllRedis();
  pki?.remove();
  other?.remove();
});

test('rediss:// with the CA: a token is issued and a session listed, through Redis over TLS', { skip }, async () => {
  assert.match(redis.url, /^rediss:\/\/127\.0\.0\.1:\d+$/);
  let t: TestServer | undefined;
  try {
    t = await startTestServer({ redisUrl: redis.url, redisCaFile: pki.caFile, redisPrefix: `tls${process.pid}` });
    assert.equal(t.server.hot.kind, 'redis');
    await createAdmin(t);
    const tokens = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
    assert.ok(tokens.access_token);
    const res = await t.fetch('/api/v1/sessions', { token: tokens.access_token });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { sessions: Array<{ clientId: string }> };
    assert.equal(body.sessions.length, 1);
    assert.equal(body.sessions[0]!.clientId, 'palisade-cli');
  } finally {
    await t?.close();
  }
});

test('a CA that did not sign Redis\'s certificate: the node refuses to start, saying why', { skip }, async () => {
  await assert.rejects(
    createPalisade({ dataDir: join(pki.dir, 'data-wrong-ca'), redisUrl: redis.url, redisCaFile: other.caFile, logger: pino({ level: 'silent' }) }),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, 'PAL_ERR_UNAVAILABLE');
      assert.match(e.message, /Redis is unreachable \(rediss:\/\/127\.0\.0\.1:\d+\): .*(certificate|UNABLE_TO_VERIFY|self.signed)/i);
      return true;
    },
  );
});

test('no CA at all: the system roots do not know the private CA either', { skip }, async () => {
  await assert.rejects(
    createPalisade({ dataDir: join(pki.dir, 'data-no-ca'), redisUrl: redis.url, logger: pino({ level: 'silent' }) }),
    /Redis is unreachable/,
  );
});

test('a CA with a plain redis:// URL is refused: it would do nothing', async () => {
  const dir = makePki();
  try {
    await assert.rejects(
      createPalisade({ dataDir: join(dir.dir, 'data'), redisUrl: 'redis://127.0.0.1:6379', redisCaFile: dir.caFile, logger: pino({ level: 'silent' }) }),
      /--redis-ca needs a rediss:\/\/ URL \(TLS\); "redis:\/\/127\.0\.0\.1:6379" is plain TCP/,
    );
  } finally {
    dir.remove();
  }
});
