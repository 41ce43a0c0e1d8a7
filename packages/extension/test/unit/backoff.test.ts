import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay } from '../../src/worker/backoff.ts';

test('doubles from 500 ms and is capped at 30 s', () => {
  const low = (n: number) => backoffDelay(n, { random: () => 0 });
  const high = (n: number) => backoffDelay(n, { random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(high), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(low), [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
  assert.equal(high(1000), 30_000);
});

test('jitter spreads delays within [exp/2, exp]', () => {
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(4);
    assert.ok(d >= 4000 && d <= 8000, String(d));
    seen.add(d);
  }
  assert.ok(seen.size > 20, 'delays are randomised');
});

test('never exceeds the cap and is never negative', () => {
  for (let n = -3; n < 100; n++) {
    const d = backoffDelay(n);
    assert.ok(d >= 0 && d <= 30_000, `${n}: ${d}`);
  }
  assert.equal(backoffDelay(10, { capMs: 5000, random: () => 0.999999 }), 5000);
});
