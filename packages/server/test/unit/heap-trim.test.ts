/** Heap trim (heap-trim.ts): a quiet node collects a burst's garbage once; a busy one is left to V8. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startHeapTrim } from '../../src/heap-trim.ts';

const MIB = 1024 * 1024;

/** A trim over a heap reading the test sets, and a gc that drops it to `after`. */
function setup(start = 100 * MIB) {
  let heap = start;
  let after = start;
  const gcs: unknown[] = [];
  const trimmed: [number, number][] = [];
  const trim = startHeapTrim({
    checkMs: 3_600_000, heapUsed: () => heap,
    gc: (o) => {
      gcs.push(o);
      heap = after;
    },
    onTrim: (b, a) => trimmed.push([b, a]),
  })!;
  return { trim, gcs, trimmed, set: (h: number) => (heap = h), collectsTo: (h: number) => (after = h) };
}

describe('heap trim', () => {
  it('is off where no collection can be asked for', () => {
    // This test process runs without --expose-gc.
    assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
    assert.equal(startHeapTrim({ checkMs: 3_600_000 }), undefined);
  });

  it('is off when PALISADE_HEAP_TRIM=off, even with a collection hook', () => {
    process.env.PALISADE_HEAP_TRIM = 'off';
    try {
      assert.equal(startHeapTrim({ checkMs: 3_600_000, gc: () => undefined }), undefined);
    } finally {
      delete process.env.PALISADE_HEAP_TRIM;
    }
    const on = startHeapTrim({ checkMs: 3_600_000, gc: () => undefined });
    assert.ok(on);
    on.close();
  });

  it('collects once when the heap grew past both thresholds and V8 did not collect since the last look', async () => {
    const { trim, gcs, trimmed, set, collectsTo } = setup(100 * MIB);
    set(114 * MIB); // +14 MiB: under the 16 MiB floor
    assert.equal(await trim.check(), false);
    set(120 * MIB); // +20 MiB: over the floor and 10 % of 100 MiB
    collectsTo(105 * MIB);
    assert.equal(await trim.check(), true);
    assert.deepEqual(gcs, [{ type: 'major', flavor: 'last-resort' }]);
    assert.deepEqual(trimmed, [[120 * MIB, 105 * MIB]]);
    assert.equal(trim.trims, 1);
    // The base is now 105 MiB: the same heap again is no reason.
    assert.equal(await trim.check(), false);
    assert.equal(gcs.length, 1);
    trim.close();
  });

  it('the share threshold counts on a big heap', async () => {
    const { trim, gcs, set } = setup(400 * MIB);
    set(430 * MIB); // +30 MiB: over the floor, under 10 % (40 MiB)
    assert.equal(await trim.check(), false);
    set(441 * MIB);
    assert.equal(await trim.check(), true);
    assert.equal(gcs.length, 1);
    trim.close();
  });

  it('leaves a node V8 collects on its own alone (busy, not quiet)', async () => {
    const { trim, gcs, set } = setup(100 * MIB);
    set(150 * MIB);
    trim.collected(); // V8 collected: the heap in use after it is the new base…
    set(200 * MIB);
    assert.equal(await trim.check(), false, 'a collection since the last look: not quiet');
    assert.equal(await trim.check(), true, 'quiet for one look, grown by 50 MiB since: collected');
    assert.equal(gcs.length, 1);
    trim.close();
  });

  it('with --expose-gc, really gives a burst\'s garbage back', () => {
    // A child process with the real V8 hook: live work collected once by V8 (the base), then a burst
    // of objects that lived through two minor collections (promoted to the old generation) and were
    // dropped — what a connection storm leaves — then quiet.
    const child = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', `
      const { startHeapTrim } = await import(${JSON.stringify(new URL('../../src/heap-trim.ts', import.meta.url).href)});
      const { getHeapStatistics } = await import('node:v8');
      const used = () => getHeapStatistics().used_heap_size;
      const tick = () => new Promise((r) => setTimeout(r, 20));
      const trim = startHeapTrim({ checkMs: 3_600_000 });
      const live = Array.from({ length: 1_000_000 }, (_, i) => ({ i, s: 'live ' + i }));
      gc();
      await tick();
      let burst = Array.from({ length: 600_000 }, (_, i) => ({ i, s: 'burst ' + i }));
      gc({ type: 'minor' });
      gc({ type: 'minor' });
      burst = undefined;
      const before = used();
      const rssBefore = process.memoryUsage.rss();
      let collected = false;
      for (let i = 0; i < 3 && !collected; i++) {
        collected = await trim.check();
        await tick();
      }
      console.log(JSON.stringify({ collected, before, after: used(), rssBefore, rssAfter: process.memoryUsage.rss(), trims: trim.trims, live: live.length }));
      trim.close();
    `], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const r = JSON.parse(child.stdout) as { collected: boolean; before: number; after: number; rssBefore: number; rssAfter: number; trims: number };
    assert.equal(r.collected, true);
    assert.equal(r.trims, 1);
    assert.ok(r.before - r.after > 24 * MIB, `the heap fell by ${((r.before - r.after) / MIB).toFixed(1)} MiB`);
    // …and the pages went back to the system (a plain major collection keeps them).
    assert.ok(r.rssBefore - r.rssAfter > 24 * MIB, `RSS fell by ${((r.rssBefore - r.rssAfter) / MIB).toFixed(1)} MiB`);
  });
});
