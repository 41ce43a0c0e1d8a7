/** The in-process hot store runs the hot-state contract, and stays within its bound. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import { hotContract } from './contract.ts';

hotContract('in-process', async () => createMemoryHotStore());

describe('in-process hot store bound', () => {
  it('keeps at most maxKeys entries per map: past it the oldest are forgotten, the newest kept', async () => {
    const h = createMemoryHotStore({ maxKeys: 100 });
    for (let i = 0; i < 150; i++) await h.counters.attempt([{ key: `k${i}`, limit: 5 }], 60_000);
    assert.equal(await h.counters.peek('k0'), 0, 'the oldest was evicted');
    assert.equal(await h.counters.peek('k149'), 1, 'the newest is kept');
    let kept = 0;
    for (let i = 0; i < 150; i++) kept += await h.counters.peek(`k${i}`);
    assert.ok(kept <= 100 && kept >= 99, `${kept} counters kept`);
    await h.close();
  });
});
