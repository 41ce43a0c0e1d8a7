/**
 * The hot-state contract: the in-process and the Redis store run exactly these tests. Call
 * `hotContract(name, open)` from the adapter's test file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HotStore } from '../../src/hot/types.ts';

export function hotContract(name: string, open: () => Promise<HotStore>): void {
  describe(`hot-state contract: ${name}`, () => {
    let h: HotStore;
    before(async () => {
      h = await open();
    });
    after(async () => h?.close());
    const k = () => randomUUID();

    it('counters: allowed up to the limit, then refused with the time left', async () => {
      const key = k();
      for (let i = 1; i <= 3; i++) assert.deepEqual(await h.counters.attempt([{ key, limit: 3 }], 10_000), { allowed: true, counts: [i], retryAfterMs: 0 });
      const refused = await h.counters.attempt([{ key, limit: 3 }], 10_000);
      assert.equal(refused.allowed, false);
      assert.deepEqual(refused.counts, [3]);
      assert.ok(refused.retryAfterMs > 9_000 && refused.retryAfterMs <= 10_000, `retry after ${refused.retryAfterMs}`);
      assert.equal(await h.counters.peek(key), 3, 'a refused attempt changes nothing');
    });

    it('counters: parallel attempts never pass the limit', async () => {
      const key = k();
      const results = await Promise.all(Array.from({ length: 50 }, () => h.counters.attempt([{ key, limit: 5 }], 10_000)));
      assert.equal(results.filter((r) => r.allowed).length, 5);
      assert.equal(await h.counters.peek(key), 5);
    });

    it('counters: several keys move together or not at all', async () => {
      const [a, b] = [k(), k()];
      await h.counters.attempt([{ key: b, limit: 1 }], 10_000);
      const r = await h.counters.attempt([{ key: a, limit: 5 }, { key: b, limit: 1 }], 10_000);
      assert.equal(r.allowed, false);
      assert.deepEqual(r.counts, [0, 1]);
      assert.equal(await h.counters.peek(a), 0, 'the counter under its limit was not bumped');
    });

    it('counters: release takes one back (never below zero), reset forgets, the window ends', async () => {
      const key = k();
      await h.counters.attempt([{ key, limit: 5 }], 10_000);
      await h.counters.attempt([{ key, limit: 5 }], 10_000);
      await h.counters.release(key);
      assert.equal(await h.counters.peek(key), 1);
      await h.counters.release(key);
      await h.counters.release(key);
      assert.equal(await h.counters.peek(key), 0);
      await h.counters.attempt([{ key, limit: 5 }], 10_000);
      await h.counters.reset(key);
      assert.equal(await h.counters.peek(key), 0);
      const short = k();
      await h.counters.attempt([{ key: short, limit: 1 }], 80);
      assert.equal((await h.counters.attempt([{ key: short, limit: 1 }], 80)).allowed, false);
      await sleep(150);
      assert.equal((await h.counters.attempt([{ key: short, limit: 1 }], 80)).allowed, true, 'a new window starts after the old one ends');
    });

    it('revocations: revoked ids are known at once, listeners hear of them, they expire', async () => {
      const id = k();
      const heard: string[] = [];
      const off = h.revocations.onRevoke((x) => heard.push(x));
      assert.equal(h.revocations.has(id), false);
      await h.revocations.revoke(id, 200);
      assert.equal(h.revocations.has(id), true);
      for (let i = 0; i < 50 && !heard.includes(id); i++) await sleep(10);
      assert.ok(heard.includes(id), 'the listener heard of the revocation');
      off();
      await sleep(300);
      assert.equal(h.revocations.has(id), false, 'a revocation ends with its time to live');
    });

    it('presence: set, list by user, removed only by the node that holds it, expires', async () => {
      const userId = k();
      const entry = { agentId: k(), userId, nodeId: 'node-a', since: new Date().toISOString(), grants: ['https://example.com', 'http://127.0.0.1:9'] };
      await h.presence.set(entry, 10_000);
      await h.presence.set({ ...entry, agentId: k() }, 100);
      assert.equal((await h.presence.forUser(userId)).length, 2);
      await h.presence.remove(entry.agentId, 'node-b');
      assert.ok((await h.presence.forUser(userId)).some((e) => e.agentId === entry.agentId), 'another node cannot remove it');
      await sleep(200);
      assert.deepEqual(await h.presence.forUser(userId), [entry], 'the short-lived entry expired');
      await h.presence.remove(entry.agentId, 'node-a');
      assert.deepEqual(await h.presence.forUser(userId), []);
    });

    it('transient: taken once, by one of concurrent takers, and expires', async () => {
      const key = k();
      await h.transient.put(key, 'v', 10_000);
      const taken = await Promise.all([h.transient.take(key), h.transient.take(key)]);
      assert.deepEqual(taken.sort(), ['v', undefined].sort());
      const short = k();
      await h.transient.put(short, 'v', 50);
      await sleep(120);
      assert.equal(await h.transient.take(short), undefined);
    });

    const calm = { strikes: 1000, windowMs: 60_000, blockMs: 60_000 };

    it('rates: a burst is allowed, then refused with the wait until the next request', async () => {
      const rule = { key: k(), limit: 10, periodMs: 10_000, burst: 3 };
      const seen = [];
      for (let i = 0; i < 3; i++) seen.push(await h.rates.consume([rule], calm));
      assert.deepEqual(seen.map((d) => [d.allowed, d.remaining]), [[true, 2], [true, 1], [true, 0]]);
      const refused = await h.rates.consume([rule], calm);
      assert.equal(refused.allowed, false);
      assert.equal(refused.blocked, false);
      // One request every 1000 ms: the next is due within one interval.
      assert.ok(refused.retryAfterMs > 900 && refused.retryAfterMs <= 1000, `retry after ${refused.retryAfterMs}`);
    });

    it('rates: the bucket refills at the rate', async () => {
      const rule = { key: k(), limit: 20, periodMs: 1000, burst: 1 };
      assert.equal((await h.rates.consume([rule], calm)).allowed, true);
      assert.equal((await h.rates.consume([rule], calm)).allowed, false);
      await sleep(70);
      assert.equal((await h.rates.consume([rule], calm)).allowed, true, 'one request per 50 ms');
    });

    it('rates: parallel requests never pass the burst', async () => {
      const rule = { key: k(), limit: 1, periodMs: 60_000, burst: 7 };
      const results = await Promise.all(Array.from({ length: 40 }, () => h.rates.consume([rule], calm)));
      assert.equal(results.filter((r) => r.allowed).length, 7);
    });

    it('rates: several rules are taken from together or not at all; the refusing rule is named', async () => {
      const wide = { key: k(), limit: 100, periodMs: 60_000, burst: 100 };
      const narrow = { key: k(), limit: 1, periodMs: 60_000, burst: 1 };
      const first = await h.rates.consume([wide, narrow], calm);
      assert.deepEqual([first.allowed, first.rule, first.remaining], [true, 1, 0], 'the tightest rule is reported');
      const second = await h.rates.consume([wide, narrow], calm);
      assert.deepEqual([second.allowed, second.rule], [false, 1]);
      const alone = await h.rates.consume([wide], calm);
      assert.equal(alone.remaining, 98, 'the refused request took nothing from the wide rule (2 of 100 taken)');
    });

    it('rates: repeated refusals block the key for the block time, reported once', async () => {
      const rule = { key: k(), limit: 1, periodMs: 60_000, burst: 1 };
      const esc = { strikes: 3, windowMs: 10_000, blockMs: 150 };
      assert.equal((await h.rates.consume([rule], esc)).allowed, true);
      const strikes = [];
      for (let i = 0; i < 3; i++) strikes.push(await h.rates.consume([rule], esc));
      assert.deepEqual(strikes.map((d) => [d.allowed, d.blocked, d.newlyBlocked]), [[false, false, false], [false, false, false], [false, true, true]]);
      const during = await h.rates.consume([rule], esc);
      assert.deepEqual([during.allowed, during.blocked, during.newlyBlocked], [false, true, false]);
      assert.ok(during.retryAfterMs > 0 && during.retryAfterMs <= 150, `retry after ${during.retryAfterMs}`);
      const other = { key: k(), limit: 1, periodMs: 60_000, burst: 1 };
      assert.equal((await h.rates.consume([other], esc)).allowed, true, 'other keys are not blocked');
      await sleep(200);
      const after = await h.rates.consume([rule], esc);
      assert.equal(after.blocked, false, 'the block expired');
    });

    it('bus: subscribers of a topic get what is published on it, in order; other topics and unsubscribed handlers do not', async () => {
      const topic = k();
      const got: string[] = [];
      const also: string[] = [];
      const other: string[] = [];
      const off = await h.bus.subscribe(topic, (m) => got.push(m));
      const offAlso = await h.bus.subscribe(topic, (m) => also.push(m));
      const offOther = await h.bus.subscribe(k(), (m) => other.push(m));
      for (let i = 0; i < 50; i++) await h.bus.publish(topic, `m${i}`);
      for (let i = 0; i < 100 && (got.length < 50 || also.length < 50); i++) await sleep(10);
      assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`));
      assert.deepEqual(also, got);
      assert.deepEqual(other, []);
      await offAlso();
      await h.bus.publish(topic, 'after');
      for (let i = 0; i < 100 && got.length < 51; i++) await sleep(10);
      assert.equal(got.at(-1), 'after');
      assert.equal(also.length, 50, 'an unsubscribed handler hears nothing more');
      await off();
      await offOther();
      await h.bus.publish(topic, 'nobody');
      await sleep(50);
      assert.equal(got.length, 51);
    });

    it('tallies: shares of live nodes add up to the limit, then every node is refused; a release makes room', async () => {
      const [a, b, user, ip] = [k(), k(), k(), k()];
      await h.nodes.beat(a, 10_000);
      await h.nodes.beat(b, 10_000);
      assert.deepEqual(await h.tallies.acquire(a, [{ key: ip, limit: 3 }, { key: user, limit: 2 }]), { allowed: true, refused: -1, counts: [1, 1] });
      assert.deepEqual(await h.tallies.acquire(b, [{ key: ip, limit: 3 }, { key: user, limit: 2 }]), { allowed: true, refused: -1, counts: [2, 2] });
      assert.deepEqual(await h.tallies.acquire(a, [{ key: ip, limit: 3 }, { key: user, limit: 2 }]), { allowed: false, refused: 1, counts: [2, 2] }, 'the user is at 2 across both nodes');
      assert.equal(await h.tallies.count(a, ip), 2, 'a refusal changes nothing, not even the tallies under their limit');
      assert.equal(await h.tallies.count(b, ip), 2, 'every node reads the same count');
      await h.tallies.release(b, [ip, user]);
      assert.deepEqual(await h.tallies.acquire(a, [{ key: ip, limit: 3 }, { key: user, limit: 2 }]), { allowed: true, refused: -1, counts: [2, 2] });
      await h.tallies.release(a, [ip, user, ip, user]);
      await h.tallies.release(a, [ip, user]);
      assert.equal(await h.tallies.count(a, ip), 0, 'a share never goes below zero');
      assert.deepEqual((await h.tallies.acquire(b, [{ key: user, limit: 1 }])).counts, [1]);
      await h.tallies.release(b, [user]);
    });

    it('tallies: parallel acquires from two nodes never pass the limit', async () => {
      const [a, b, key] = [k(), k(), k()];
      await h.nodes.beat(a, 10_000);
      await h.nodes.beat(b, 10_000);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => h.tallies.acquire(i % 2 ? a : b, [{ key, limit: 7 }])));
      assert.equal(results.filter((r) => r.allowed).length, 7);
      assert.equal(await h.tallies.count(a, key), 7);
      await h.tallies.release(a, Array(20).fill(key));
      await h.tallies.release(b, Array(20).fill(key));
      assert.equal(await h.tallies.count(a, key), 0);
    });

    it("tallies: replace sets a node's shares whole; the other nodes' stay", async () => {
      const [a, b, user, ip] = [k(), k(), k(), k()];
      await h.nodes.beat(a, 10_000);
      await h.nodes.beat(b, 10_000);
      await h.tallies.acquire(a, [{ key: user, limit: 10 }]);
      await h.tallies.acquire(b, [{ key: user, limit: 10 }]);
      await h.tallies.replace(a, new Map([[user, 3], [ip, 2]]));
      assert.equal(await h.tallies.count(b, user), 4);
      assert.equal(await h.tallies.count(b, ip), 2);
      await h.tallies.replace(a, new Map([[ip, 1]]));
      assert.equal(await h.tallies.count(b, user), 1, "keys left out of a replace go to zero; b's share stays");
      assert.equal(await h.tallies.count(a, ip), 1);
      await h.tallies.replace(a, new Map());
      await h.tallies.release(b, [user]);
      assert.equal(await h.tallies.count(a, user) + await h.tallies.count(a, ip), 0);
    });

    it("tallies: a node that stops beating stops counting; the asking node always counts", async () => {
      const [a, dead, never, key] = [k(), k(), k(), k()];
      await h.nodes.beat(a, 10_000);
      await h.nodes.beat(dead, 150);
      assert.equal((await h.tallies.acquire(dead, [{ key, limit: 2 }])).allowed, true);
      assert.equal((await h.tallies.acquire(never, [{ key, limit: 2 }])).allowed, true, 'a node that never beat counts for itself');
      assert.equal(await h.tallies.count(never, key), 2, "the dead node's share counts while its beat lasts");
      assert.equal(await h.tallies.count(a, key), 1, 'to others, a node that never beat holds nothing');
      assert.deepEqual(await h.tallies.acquire(a, [{ key, limit: 1 }]), { allowed: false, refused: 0, counts: [1] });
      await sleep(250);
      assert.equal(await h.tallies.count(a, key), 0, "a dead node's share lapses with its beat");
      assert.deepEqual(await h.tallies.acquire(a, [{ key, limit: 1 }]), { allowed: true, refused: -1, counts: [1] });
      await h.tallies.release(a, [key]);
      await h.tallies.release(never, [key]);
    });

    it('nodes: a node is alive while it beats within its time to live, gone once it stops', async () => {
      const [a, b, never] = [k(), k(), k()];
      assert.deepEqual(await h.nodes.alive([]), new Set());
      await h.nodes.beat(a, 150);
      await h.nodes.beat(b, 10_000);
      assert.deepEqual(await h.nodes.alive([a, b, never]), new Set([a, b]));
      await sleep(100);
      await h.nodes.beat(a, 150);
      await sleep(100);
      assert.deepEqual(await h.nodes.alive([a, b]), new Set([a, b]), 'a beat extends the time to live');
      await sleep(120);
      assert.deepEqual(await h.nodes.alive([a, b, never]), new Set([b]), 'a node that stopped beating is gone');
    });
  });
}
