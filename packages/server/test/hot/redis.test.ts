/**
 * The Redis hot store runs the hot-state contract and the OAuth-record contract against the real
 * Redis on 127.0.0.1:6379, under a key prefix of its own that is deleted afterwards. In CI
 * (`CI=true`) it must run; elsewhere, if Redis is unreachable, it is skipped with a loud notice.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { PalisadeError } from '@palisade/protocol';
import { Redis } from 'ioredis';
import { TALLY_SHARES_TTL_MS } from '../../src/hot/types.ts';
import { REVIVE_MS, openRedisHotStore } from '../../src/hot/redis.ts';
import { redisServerSkip, startRedis, stopAllRedis, trackRedisClients, trackedClients, waitFor } from '../support/redis-procs.ts';
import { hotContract } from './contract.ts';
import { oidcContract } from '../store/oidc-contract.ts';
import { REDIS_URL, dropPrefix, monitorRedis, redisSkip, testPrefix } from '../support/redis.ts';

const prefix = testPrefix();
const skip = await redisSkip('Redis hot-store tests');

if (skip) {
  describe('hot-state contract: redis', () => it('skipped: Redis unreachable', { skip }, () => undefined));
} else {
  after(() => dropPrefix(prefix));
  const open = () => openRedisHotStore({ url: REDIS_URL, prefix });
  hotContract('redis', open);
  oidcContract('redis', async () => {
    const h = await open();
    return { oidc: h.oidc!, close: () => h.close() };
  });

  describe('redis across nodes', () => {
    it('bus: a message published on one node reaches the subscribers on the others', async () => {
      const [a, b, c] = await Promise.all([open(), open(), open()]);
      try {
        const topic = `node:${randomUUID()}`;
        const atB: string[] = [];
        const atC: string[] = [];
        await b.bus.subscribe(topic, (m) => atB.push(m));
        await c.bus.subscribe(topic, (m) => atC.push(m));
        await a.bus.publish(topic, 'dispatch t_1');
        for (let i = 0; i < 100 && (atB.length === 0 || atC.length === 0); i++) await new Promise((r) => setTimeout(r, 10));
        assert.deepEqual([atB, atC], [['dispatch t_1'], ['dispatch t_1']]);
      } finally {
        await Promise.all([a.close(), b.close(), c.close()]);
      }
    });

    it('bus: topics dropped together are unsubscribed in one command; one taken again meanwhile stays subscribed', async () => {
      const h = await open();
      const direct = new Redis(REDIS_URL);
      const unsubscribes: string[][] = [];
      const batch = `batch-${randomUUID()}`;
      const monitor = await monitorRedis(REDIS_URL, (args) => {
        if (args[0]?.toLowerCase() === 'unsubscribe' && args.some((a) => a.includes(batch))) unsubscribes.push(args.slice(1));
      });
      try {
        const topics = Array.from({ length: 20 }, (_, i) => `${batch}:${i}`);
        const heard: string[] = [];
        const offs = await Promise.all(topics.map((t) => h.bus.subscribe(t, (m) => heard.push(`${t} ${m}`))));
        await Promise.all(offs.map((off) => off()));
        // Taken again before the batch went out: its subscription is kept, not dropped and redone.
        const again = topics[0]!;
        await h.bus.subscribe(again, (m) => heard.push(`${again} ${m}`));
        await new Promise((r) => setTimeout(r, 100));
        const channels = (await direct.call('PUBSUB', 'CHANNELS', `${prefix}:bus:${batch}:*`)) as string[];
        assert.deepEqual(channels, [`${prefix}:bus:${again}`], 'only the topic taken again is still subscribed');
        assert.equal(unsubscribes.length, 1, `one UNSUBSCRIBE for the batch (got ${unsubscribes.length})`);
        assert.deepEqual(unsubscribes[0]!.sort(), topics.slice(1).map((t) => `${prefix}:bus:${t}`).sort());
        await h.bus.publish(topics[1]!, 'dropped');
        await h.bus.publish(again, 'kept');
        for (let i = 0; i < 100 && heard.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        assert.deepEqual(heard, [`${again} kept`]);
      } finally {
        monitor.close();
        direct.disconnect();
        await h.close();
      }
    });

    // Redis stalls (no reply for longer than the command timeout) and then does everything it was
    // sent: an UNSUBSCRIBE and a SUBSCRIBE of one topic, both timed out here, leave the topic
    // subscribed with nobody holding it. The next batch of unsubscribes takes it with it.
    it('bus: a topic Redis subscribed after its subscribe timed out is unsubscribed with the next batch', async () => {
      const proxy = await stallingProxy(new URL(REDIS_URL).port);
      const h = await openRedisHotStore({ url: proxy.url, prefix, commandTimeoutMs: 300 });
      const direct = new Redis(REDIS_URL);
      const topic = `stall-${randomUUID()}`;
      const channels = async () => (await direct.call('PUBSUB', 'CHANNELS', `${prefix}:bus:stall-*`)) as string[];
      try {
        const off = await h.bus.subscribe(`${topic}:x`, () => undefined);
        await off();
        proxy.stall();
        await new Promise((r) => setTimeout(r, 60)); // the batch (its UNSUBSCRIBE) is sent, and held
        await assert.rejects(h.bus.subscribe(`${topic}:x`, () => undefined), (e: PalisadeError) => e.code === 'PAL_ERR_UNAVAILABLE', 'the subscribe times out');
        proxy.resume();
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(await channels(), [`${prefix}:bus:${topic}:x`], 'Redis did both, in order: subscribed, held by nobody');
        const offY = await h.bus.subscribe(`${topic}:y`, () => undefined);
        await offY();
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(await channels(), [], 'gone with the next batch');
      } finally {
        direct.disconnect();
        await h.close();
        await proxy.close();
      }
    });

    it('a revocation on one node reaches the mirror of another, and a node started later loads it', async () => {
      const [a, b] = await Promise.all([open(), open()]);
      const heard: string[] = [];
      b.revocations.onRevoke((id) => heard.push(id));
      const id = randomUUID();
      await a.revocations.revoke(id, 60_000);
      for (let i = 0; i < 100 && !b.revocations.has(id); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(b.revocations.has(id), true);
      assert.deepEqual(heard, [id]);
      const c = await open();
      assert.equal(c.revocations.has(id), true, 'loaded on start');
      await Promise.all([a.close(), b.close(), c.close()]);
    });

    it('counters are shared: two nodes guessing in parallel pass the limit together no more than one could', async () => {
      const [a, b] = await Promise.all([open(), open()]);
      const key = randomUUID();
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).counters.attempt([{ key, limit: 7 }], 10_000)));
      assert.equal(results.filter((r) => r.allowed).length, 7);
      await Promise.all([a.close(), b.close()]);
    });

    it("tallies: a node's shares expire TALLY_SHARES_TTL_MS after its last write, and an emptied share leaves no key", async () => {
      const h = await open();
      const node = randomUUID();
      const direct = new Redis(REDIS_URL);
      try {
        await h.tallies.acquire(node, [{ key: 'user:x', limit: 5 }]);
        const ttl = await direct.pttl(`${prefix}:tally:${node}`);
        assert.ok(ttl > TALLY_SHARES_TTL_MS - 5000 && ttl <= TALLY_SHARES_TTL_MS, `ttl ${ttl}`);
        await h.tallies.replace(node, new Map([['user:x', 2], ['ip:y', 1]]));
        assert.deepEqual(await direct.hgetall(`${prefix}:tally:${node}`), { 'user:x': '2', 'ip:y': '1' });
        assert.ok((await direct.pttl(`${prefix}:tally:${node}`)) > TALLY_SHARES_TTL_MS - 5000);
        await h.tallies.release(node, ['user:x', 'user:x', 'ip:y']);
        assert.equal(await direct.exists(`${prefix}:tally:${node}`), 0);
        await h.tallies.replace(node, new Map([['user:x', 0]]));
        assert.equal(await direct.exists(`${prefix}:tally:${node}`), 0, 'nothing held, nothing stored');
      } finally {
        direct.disconnect();
        await h.close();
      }
    });

    it('scripts flushed from Redis (a restart, SCRIPT FLUSH) are loaded again on first use', async () => {
      const h = await open();
      const key = randomUUID();
      assert.equal((await h.counters.attempt([{ key, limit: 3 }], 10_000)).allowed, true);
      const direct = new Redis(REDIS_URL);
      await direct.script('FLUSH');
      direct.disconnect();
      assert.deepEqual((await h.counters.attempt([{ key, limit: 3 }], 10_000)).counts, [2]);
      await h.close();
    });

    it('a client ioredis ends under an open store (as during a Sentinel failover) is started again, with its subscriptions', async () => {
      trackRedisClients();
      const before = new Set(trackedClients());
      const [a, b] = await Promise.all([open(), open()]);
      try {
        const topic = `node:${randomUUID()}`;
        const heard: string[] = [];
        await a.bus.subscribe(topic, (m) => heard.push(m));
        const revoked: string[] = [];
        a.revocations.onRevoke((id) => revoked.push(id));
        // End every client of both stores the way ioredis does it on that race (status `end`, no reconnection scheduled).
        const ended = trackedClients().filter((c) => !before.has(c));
        assert.equal(ended.length, 4, 'two clients per store');
        const allEnded = Promise.all(ended.map((c) => new Promise((r) => c.once('end', r))));
        for (const c of ended) c.disconnect();
        await allEnded;
        await assert.rejects(a.counters.attempt([{ key: randomUUID(), limit: 3 }], 10_000), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAVAILABLE');
        await waitFor(() => ended.every((c) => c.status === 'ready'), REVIVE_MS + 3000, 'every client ready again');
        assert.equal((await a.counters.attempt([{ key: randomUUID(), limit: 3 }], 10_000)).allowed, true, 'commands work again');
        // The subscriptions are back: a bus message and a revocation from b reach a by pub/sub.
        await waitFor(() => heard.includes(''), 3000, 'the reconnection notice on the topic');
        await b.bus.publish(topic, 'after');
        const id = randomUUID();
        await b.revocations.revoke(id, 60_000);
        await waitFor(() => heard.includes('after') && revoked.includes(id), 3000, 'the message and the revocation');
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
      // A closed store's clients stay closed.
      const mine = trackedClients().filter((c) => !before.has(c));
      await new Promise((r) => setTimeout(r, REVIVE_MS + 200));
      assert.ok(mine.every((c) => c.status === 'end'), mine.map((c) => c.status).join(','));
    });

    it('an unreachable Redis fails closed with PAL_ERR_UNAVAILABLE, at start and per command', async () => {
      await assert.rejects(openRedisHotStore({ url: 'redis://127.0.0.1:1', prefix }), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAVAILABLE');
    });
  });
}

const serverSkip = redisServerSkip('Redis replica-wait tests');
describe('writes a failover must not lose wait for a replica (Redis WAIT)', { skip: serverSkip || skip }, () => {
  after(stopAllRedis);
  it('an OAuth record, its rotation and a revocation are acknowledged once the replica confirms them; past replicaWaitMs the write stands and the shortfall is told', async () => {
    const primary = await startRedis();
    // The replica reaches its primary through a proxy that can hold what the replica sends: its acknowledgements of the stream.
    const proxy = await stallingProxy(String(primary.port));
    const replica = await startRedis({ replicaOf: { host: '127.0.0.1', port: Number(new URL(proxy.url).port) } });
    const shortfalls: unknown[] = [];
    const p = testPrefix();
    const h = await openRedisHotStore({ url: primary.url, prefix: p, replicaWaits: 1, replicaWaitMs: 700, onReplicaShortfall: (i) => shortfalls.push(i) });
    const exp = Math.floor(Date.now() / 1000) + 600;
    try {
      // A healthy link: acknowledged as soon as the replica has it, nothing told.
      await h.oidc!.upsert('RefreshToken', 'rt1', { payload: { a: 1 }, expiresAt: exp, grantId: 'g1' });
      assert.deepEqual(shortfalls, []);

      // The replica's acknowledgements held: the write is not acknowledged until they pass.
      for (const write of [
        () => h.oidc!.upsert('Session', 's1', { payload: { b: 1 }, expiresAt: exp, accountId: 'u1' }),
        () => h.oidc!.consume('RefreshToken', 'rt1'),
        () => h.revocations.revoke(randomUUID(), 60_000),
      ]) {
        proxy.stall();
        let acknowledged = false;
        const done = write().then(() => (acknowledged = true));
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(acknowledged, false, 'not acknowledged before the replica confirms it');
        proxy.resume();
        await done;
      }
      assert.deepEqual(shortfalls, []);

      // Held past replicaWaitMs: the write stands (it is on the primary) and the shortfall is told.
      proxy.stall();
      const t0 = performance.now();
      await h.oidc!.destroy('Session', 's1');
      assert.ok(performance.now() - t0 >= 650, `waited ${(performance.now() - t0).toFixed(0)} ms`);
      assert.deepEqual(shortfalls, [{ write: 'Session destroyed', replicas: 0, wanted: 1 }]);
      assert.equal(await h.oidc!.find('Session', 's1'), undefined);
      // For REPLICA_SHORT_MS after a shortfall, writes do not wait for a replica that is not answering, and it is told once.
      const t1 = performance.now();
      await h.revocations.revoke(randomUUID(), 60_000);
      assert.ok(performance.now() - t1 < 300, `waited ${(performance.now() - t1).toFixed(0)} ms`);
      assert.equal(shortfalls.length, 1);
    } finally {
      proxy.resume();
      await h.close();
      await proxy.close();
      await replica.stop('SIGKILL');
      await primary.stop('SIGKILL');
    }
  });

  it('a standalone Redis waits for no replica unless told to; a bad setting is refused before connecting', async () => {
    const seen: string[] = [];
    const monitor = await monitorRedis(REDIS_URL, (args) => seen.push(args[0]!.toLowerCase()));
    const h = await openRedisHotStore({ url: REDIS_URL, prefix });
    try {
      await new Promise((r) => setTimeout(r, 100)); // MONITOR is under way
      await h.oidc!.upsert('Session', randomUUID(), { payload: {}, expiresAt: Math.floor(Date.now() / 1000) + 60 });
      await h.revocations.revoke(randomUUID(), 60_000);
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(seen.includes('exec'), 'the writes were seen');
      assert.equal(seen.includes('wait'), false);
    } finally {
      await monitor.close();
      await h.close();
    }
    await assert.rejects(openRedisHotStore({ url: REDIS_URL, prefix, replicaWaits: -1 }), /replicaWaits must be a whole number/);
    await assert.rejects(openRedisHotStore({ url: REDIS_URL, prefix, replicaWaits: 1, replicaWaitMs: 5000 }), /replicaWaitMs must be positive and below the command timeout/);
  });
});

/** A TCP proxy to Redis that can hold what clients send (Redis then answers nothing) and let it through later. */
async function stallingProxy(port: string): Promise<{ url: string; stall(): void; resume(): void; close(): Promise<void> }> {
  let stalled = false;
  const held: (() => void)[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(port), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => (stalled ? held.push(() => upstream.write(chunk)) : upstream.write(chunk)));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stall: () => void (stalled = true),
    resume: () => {
      stalled = false;
      for (const send of held.splice(0)) send();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
