/**
 * The connection caps' bookkeeping over the hot store's tallies: a place is taken before the
 * upgrade and given back on close, a place taken while the connection closed goes back at once,
 * and a give-back the store refused is owed and retried until it lands.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { PalisadeError } from '@palisade/protocol';
import { ConnectionCaps, OWED_RETRY_MS } from '../../src/gateway/agents.ts';
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import type { Tallies } from '../../src/hot/types.ts';

const CAPS = { maxConnections: 3, maxConnectionsPerIp: 2, maxConnectionsPerUser: 1 };

/** The in-process tallies, with releases that fail while `down` is set (the store unreachable). */
function flakyTallies(): { tallies: Tallies; failed: number; down: boolean } {
  const real = createMemoryHotStore().tallies;
  const state = {
    failed: 0,
    down: false,
    tallies: {
      acquire: (nodeId, limits) => real.acquire(nodeId, limits),
      count: (nodeId, key) => real.count(nodeId, key),
      release: async (nodeId, keys) => {
        if (state.down) {
          state.failed++;
          throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the hot-state store (Redis) is unreachable; try again shortly');
        }
        return real.release(nodeId, keys);
      },
    } satisfies Tallies,
  };
  return state;
}

describe('connection caps', () => {
  it('per IP, per user and per node, each crossed; release gives every place back', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1');
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
    assert.deepEqual(caps.tracked, { ips: 2, users: 1, owed: 0 });
    for (const slot of [one, two, three, one]) slot.release();
    assert.equal(caps.total, 0);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, owed: 0 });
    await sleep(0);
    for (const key of ['ip:10.0.0.1', 'ip:10.0.0.2', 'user:u1']) assert.equal(await s.tallies.count('n1', key), 0, key);
  });

  it('a user place taken while the connection closed is given back at once', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1');
    const slot = await caps.reserve('10.0.0.1');
    const adding = slot.addUser('u1');
    slot.release();
    await adding;
    await sleep(0);
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, owed: 0 });
  });

  it('a give-back the store refuses is owed, retried, and lands once the store answers', async () => {
    const s = flakyTallies();
    const caps = new ConnectionCaps(CAPS, s.tallies, 'n1');
    const slot = await caps.reserve('10.0.0.1');
    await slot.addUser('u1');
    s.down = true;
    slot.release();
    await sleep(10);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, owed: 2 }, 'nothing held here, two places owed to the store');
    assert.equal(await s.tallies.count('n1', 'user:u1'), 1, 'the store still counts the place');
    await sleep(OWED_RETRY_MS + 200);
    assert.ok(s.failed >= 2, 'retried while the store was down');
    assert.equal(caps.tracked.owed, 2);
    s.down = false;
    await sleep(OWED_RETRY_MS + 200);
    assert.deepEqual(caps.tracked, { ips: 0, users: 0, owed: 0 });
    assert.equal(await s.tallies.count('n1', 'user:u1'), 0);
    assert.equal(await s.tallies.count('n1', 'ip:10.0.0.1'), 0);
    caps.stop();
  });
});
