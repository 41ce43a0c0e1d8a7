/**
 * The connection caps' bookkeeping over the hot store's tallies: a place is taken before the
 * upgrade and given back on close, a place taken while the connection closed goes back at once,
 * and the node's bookkeeping, written whole, mends what the store lost or was told twice.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { PalisadeError } from '@palisade/protocol';
import { ConnectionCaps } from '../../src/gateway/agents.ts';
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import type { Tallies } from '../../src/hot/types.ts';

const CAPS = { maxConnections: 3, maxConnectionsPerIp: 2, maxConnectionsPerUser: 1 };

/**
 * The in-process tallies, as a store that can be unreachable: while `down`, every call fails; with
 * `lostReplies`, an acquire is applied but its caller gets an error (a reply lost to a timeout).
 */
function flakyTallies(): { tallies: Tallies; down: boolean; lostReplies: boolean; failed: number } {
  const real = createMemoryHotStore().tallies;
  const state = {
    down: false,
    lostReplies: false,
    failed: 0,
    tallies: {
      acquire: async (nodeId, limits) => {
        fail();
        const r = await real.acquire(nodeId, limits);
        if (state.lostReplies) throw unreachable();
        return r;
      },
      count: (nodeId, key) => real.count(nodeId, key),
      release: async (nodeId, keys) => {
        fail();
        return real.release(nodeId, keys);
      },
      replace: async (nodeId, shares) => {
        fail();
        return real.replace(nodeId, shares);
      },
    } satisfies Tallies,
  };
  const unreachable = () => new PalisadeError('PAL_ERR_UNAVAILABLE', 'the hot-state store (Redis) is unreachable; try again shortly');
  function fail(): void {
    if (!state.down) return;
    state.failed++;
    throw unreachable();
  }
  return state;
}

const FAST = { syncMs: 60_000, resyncMs: 100 };

describe('connection caps', () => {
  it('per IP, per user and per node, each crossed; release gives every place back', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', FAST);
    const one = await caps.reserve('10.0.0.1');
    const two = await caps.reserve('10.0.0.1');
    await assert.rejects(caps.reserve('10.0.0.1'), (e: PalisadeError) => e.code === 'PAL_ERR_TOO_MANY_CONNECTIONS' && /from one address/.test(e.message));
    assert.equal(caps.total, 2, 'a refused reservation holds nothing');
    await one.addUser('u1');
    await one.addUser('u1');
    assert.equal(await s.tallies.count('n1', 'user:u1'), 1, 'a second addUser on one slot counts once');
    await assert.rejects(two.addUser('u1'), (e: PalisadeError) => e.code === 'PAL_ERR_TOO_MANY_CONNECTIONS' && /of one user/.test(e.message));
    const three = await caps.reserve('10.0.0.2');
    await assert.rejects(caps.reserve('10.0.0.3'), (e: PalisadeError) => e.code === 'PAL_ERR_UNAVAILABLE');
    assert.deepEqual(caps.tracked, { ips: 2, users: 1, synced: true });
    for (const slot of [one, two, three, one]) slot.release();
    assert.equal(caps.total, 0);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, synced: true });
    await sleep(0);
    for (const key of ['ip:10.0.0.1', 'ip:10.0.0.2', 'user:u1']) assert.equal(await s.tallies.count('n1', key), 0, key);
    caps.stop();
  });

  it('a user place taken while the connection closed is given back at once', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', FAST);
    const slot = await caps.reserve('10.0.0.1');
    const adding = slot.addUser('u1');
    slot.release();
    await adding;
    await sleep(0);
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, synced: true });
    caps.stop();
  });

  it('a give-back the store refused is mended: the shares are written whole once it answers', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', FAST);
    const kept = await caps.reserve('10.0.0.2');
    const slot = await caps.reserve('10.0.0.1');
    await slot.addUser('u1');
    s.down = true;
    slot.release();
    await sleep(10);
    assert.deepEqual(caps.tracked, { ips: 1, users: 0, synced: false });
    assert.equal(await s.tallies.count('n1', 'user:u1'), 1, 'the store still counts the place');
    await sleep(FAST.resyncMs * 3);
    assert.ok(s.failed >= 2, 'written again while the store was down');
    s.down = false;
    await sleep(FAST.resyncMs * 3);
    assert.deepEqual(caps.tracked, { ips: 1, users: 0, synced: true });
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.1'), 0);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.2'), 1, 'what the node still holds stays counted');
    kept.release();
    caps.stop();
  });

  it('an acquire the store applied but whose reply was lost is mended, not counted for ever', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', FAST);
    s.lostReplies = true;
    await assert.rejects(caps.reserve('10.0.0.1'), (e: PalisadeError) => e.code === 'PAL_ERR_UNAVAILABLE');
    s.lostReplies = false;
    assert.equal(caps.total, 0);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.1'), 1, 'the store applied it');
    await sleep(FAST.resyncMs * 3);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.1'), 0);
    assert.equal(caps.tracked.synced, true);
    caps.stop();
  });

  it('shares the store lost (a failover, a restart) are written again at the next whole write', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', { syncMs: 200, resyncMs: 100 });
    const slot = await caps.reserve('10.0.0.1');
    await slot.addUser('u1');
    await s.tallies.replace('n1', new Map());
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0, 'lost');
    await sleep(500);
    assert.equal(await s.tallies.count('n1', 'user:u1'), 1);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.1'), 1);
    slot.release();
    caps.stop();
  });

  it('a node started again under the same id drops what its previous run left', async () => {
    const s = flakyTallies();
    await s.tallies.acquire('n1', [{ key: 'user:u1', limit: 5 }]);
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1', FAST);
    await sleep(20);
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0);
    caps.stop();
  });
});
