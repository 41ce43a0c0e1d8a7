/** The memory guard alone (edge/memory-guard.ts): the mark, the hysteresis, one event per change, the timer. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ERROR_CODES } from '@palisade/protocol';
import { createMemoryGuard, LOW_WATER_SHARE, processMemory, type MemoryGuardOptions, type MemorySample } from '../../src/edge/memory-guard.ts';
import { createSecurityEvents, type SecurityEvent } from '../../src/siem/events.ts';
import { createMetrics } from '../../src/metrics.ts';

const MIB = 1024 * 1024;
const HIGH = 100 * MIB;

/** A guard on a sampler the test sets; the timer is slow enough not to sample on its own. */
function setup(first = 10 * MIB, o: Partial<MemoryGuardOptions> = {}) {
  let reading: MemorySample | Error = { heapUsed: first, rss: first * 2 };
  let calls = 0;
  const events = createSecurityEvents(pino({ level: 'silent' }));
  const seen: SecurityEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const metrics = createMetrics();
  const guard = createMemoryGuard({
    highWaterBytes: HIGH, sampleMs: 60_000, events, metrics,
    sampler: () => {
      calls++;
      if (reading instanceof Error) throw reading;
      return reading;
    },
    ...o,
  });
  const at = (heapUsed: number) => {
    reading = { heapUsed, rss: heapUsed * 2 };
    return guard.sample();
  };
  const metric = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values;
  return { guard, at, seen, metric, calls: () => calls, fail: (e: Error) => (reading = e) };
}

describe('memory guard', () => {
  it('sheds above the mark, keeps shedding down to 90 % of it, and stops below', () => {
    const { guard, at } = setup();
    try {
      assert.equal(guard.shedding, false);
      assert.equal(guard.lowWaterBytes, Math.floor(HIGH * LOW_WATER_SHARE));
      assert.equal(at(HIGH), false, 'at the mark exactly: not above it');
      assert.equal(at(HIGH + 1), true);
      assert.match(guard.reason!, /heap in use 100 MiB is above the high-water mark 100 MiB/);
      assert.equal(at(95 * MIB), true, 'between the marks: still shedding (no flapping)');
      assert.equal(at(guard.lowWaterBytes), true, 'at the lower mark exactly: not below it');
      assert.equal(at(guard.lowWaterBytes - 1), false);
      assert.equal(guard.reason, undefined);
      assert.equal(at(95 * MIB), false, 'between the marks from below: still taking work');
    } finally {
      guard.close();
    }
  });

  it('emits one event when shedding starts and one when it stops, however many samples fall between', () => {
    const { guard, at, seen } = setup();
    try {
      for (const mib of [50, 101, 120, 95, 101, 99, 91, 89, 80, 95, 89]) at(mib * MIB);
      const memory = seen.filter((e) => e.activity_name.startsWith('memory.'));
      assert.deepEqual(memory.map((e) => e.activity_name), ['memory.shed.start', 'memory.shed.stop']);
      const [start, stop] = memory;
      assert.equal(start!.severity, 'high');
      assert.equal(start!.status, 'Failure');
      assert.equal(start!.status_code, 'PAL_ERR_OVERLOADED');
      assert.equal(start!.unmapped?.heapUsed, 101 * MIB);
      assert.equal(start!.unmapped?.rss, 202 * MIB);
      assert.equal(stop!.status, 'Success');
      assert.equal(stop!.unmapped?.heapUsed, 89 * MIB);
    } finally {
      guard.close();
    }
  });

  it('samples once at creation: a node that starts above the mark sheds at once', () => {
    const { guard, seen } = setup(HIGH * 2);
    try {
      assert.equal(guard.shedding, true);
      assert.equal(seen.filter((e) => e.activity_name === 'memory.shed.start').length, 1);
    } finally {
      guard.close();
    }
  });

  it('refuse() gives PAL_ERR_OVERLOADED (503, close 1013) without the numbers, and counts it', async () => {
    const { guard, at, metric } = setup();
    try {
      at(HIGH * 2);
      const e = guard.refuse('task');
      guard.refuse('agent');
      guard.refuse('agent');
      assert.equal(e.code, 'PAL_ERR_OVERLOADED');
      assert.equal(e.status, 503);
      assert.equal(ERROR_CODES.PAL_ERR_OVERLOADED.close, 1013);
      assert.doesNotMatch(e.message, /MiB|\d{4,}/, 'callers learn no memory figures');
      const counts = Object.fromEntries((await metric('palisade_memory_shed_total')).map((v) => [v.labels.entry, v.value]));
      assert.deepEqual(counts, { task: 1, agent: 2 });
      assert.equal((await metric('palisade_memory_shedding'))[0]!.value, 1);
      assert.equal((await metric('palisade_memory_high_water_bytes'))[0]!.value, HIGH);
      at(0);
      assert.equal((await metric('palisade_memory_shedding'))[0]!.value, 0);
    } finally {
      guard.close();
    }
  });

  it('a failed reading changes nothing and throws nothing (the timer calls the same sample())', () => {
    const { guard, at, fail } = setup();
    try {
      at(HIGH * 2);
      fail(new Error('EMFILE'));
      assert.doesNotThrow(() => guard.sample());
      assert.equal(guard.shedding, true);
      assert.equal(guard.last.heapUsed, HIGH * 2, 'the last good reading stays');
    } finally {
      guard.close();
    }
  });

  it('samples on its timer, and not after close()', async () => {
    const { guard, calls } = setup(10 * MIB, { sampleMs: 10 });
    const first = calls();
    await new Promise((r) => setTimeout(r, 120));
    const running = calls();
    assert.ok(running >= first + 3, `the timer sampled (${running - first} times)`);
    guard.close();
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(calls(), running, 'no sample after close');
  });

  /** A guard that may collect: `frees` is what a collection leaves in use (undefined: all of it is live). */
  function collecting(frees?: number) {
    const state = { clock: 0, heap: 10 * MIB, collects: 0 };
    const { guard, seen } = setup(10 * MIB, {
      now: () => state.clock, collectEveryMs: 10_000,
      sampler: () => ({ heapUsed: state.heap, rss: state.heap * 2 }),
      collect: () => {
        state.collects++;
        if (frees !== undefined) state.heap = frees;
      },
    });
    const shedEvents = (name?: string) => seen.filter((e) => (name ? e.activity_name === name : e.activity_name.startsWith('memory.shed'))).length;
    return { guard, state, shedEvents };
  }

  it('collects once before it sheds: garbage over the mark sheds nothing', () => {
    const { guard, state, shedEvents } = collecting(40 * MIB);
    try {
      state.heap = 150 * MIB;
      assert.equal(guard.sample(), false, 'under the mark once collected: no shedding');
      assert.equal(state.collects, 1);
      assert.equal(guard.collections, 1);
      assert.equal(guard.last.heapUsed, 40 * MIB, 'decided on the reading after the collection');
      assert.equal(shedEvents(), 0);
      state.heap = 60 * MIB;
      guard.sample();
      assert.equal(state.collects, 1, 'under the mark: nothing collected');
    } finally {
      guard.close();
    }
  });

  it('sheds when the collection does not help, and collects again only after collectEveryMs', () => {
    const { guard, state, shedEvents } = collecting();
    try {
      state.heap = 150 * MIB;
      assert.equal(guard.sample(), true, 'still over the mark after the collection: sheds');
      assert.equal(state.collects, 1);
      assert.equal(shedEvents('memory.shed.start'), 1);
      guard.sample();
      assert.equal(state.collects, 1, 'while shedding, no collection is asked for');
      state.heap = 50 * MIB;
      assert.equal(guard.sample(), false);
      state.clock += 5_000;
      state.heap = 150 * MIB;
      assert.equal(guard.sample(), true, 'over again within 10 s: sheds at once…');
      assert.equal(state.collects, 1, '…without collecting again');
      state.heap = 50 * MIB;
      guard.sample();
      state.clock += 10_000;
      state.heap = 150 * MIB;
      guard.sample();
      assert.equal(state.collects, 2, 'past collectEveryMs: one more collection');
    } finally {
      guard.close();
    }
  });

  it('the real sampler reads this process', () => {
    const m = processMemory();
    assert.ok(m.heapUsed > MIB && m.heapUsed < process.memoryUsage().heapTotal * 2);
    assert.ok(m.rss >= m.heapUsed);
  });
});
