import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_RATE_LIMITS, MAX_TRACKED_KEYS, RateLimiter } from '../../src/worker/rate-limit.ts';

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test('defaults are 100 per origin, 500 per tab, 1000 overall, per minute', () => {
  assert.deepEqual(DEFAULT_RATE_LIMITS, { perOrigin: 100, perTab: 500, global: 1000 });
});

test('the per-origin limit refuses the 101st message in a minute and refills over time', () => {
  const c = clock();
  const rl = new RateLimiter({}, c.now);
  for (let i = 0; i < 100; i++) assert.equal(rl.consume({ origin: 'https://a.example', tab: 1 }), undefined, `message ${i}`);
  assert.equal(rl.consume({ origin: 'https://a.example', tab: 1 }), 'origin');
  // Another origin in the same tab is not affected.
  assert.equal(rl.consume({ origin: 'https://b.example', tab: 1 }), undefined);
  c.advance(600); // 100/min → one token per 600 ms
  assert.equal(rl.consume({ origin: 'https://a.example', tab: 1 }), undefined);
  assert.equal(rl.consume({ origin: 'https://a.example', tab: 1 }), 'origin');
  c.advance(60_000);
  for (let i = 0; i < 100; i++) assert.equal(rl.consume({ origin: 'https://a.example', tab: 2 }), undefined);
});

test('the per-tab limit refuses past 500 even when each origin stays under its limit', () => {
  const c = clock();
  const rl = new RateLimiter({}, c.now);
  let passed = 0;
  for (let o = 0; o < 6; o++) {
    for (let i = 0; i < 90; i++) {
      const r = rl.consume({ origin: `https://o${o}.example`, tab: 7 });
      if (r === undefined) passed++;
      else assert.equal(r, 'tab');
    }
  }
  assert.equal(passed, 500);
  assert.equal(rl.consume({ origin: 'https://fresh.example', tab: 7 }), 'tab');
  assert.equal(rl.consume({ origin: 'https://fresh.example', tab: 8 }), undefined);
});

test('the global limit refuses past 1000 across tabs and origins', () => {
  const c = clock();
  const rl = new RateLimiter({}, c.now);
  let passed = 0;
  for (let k = 0; k < 11; k++) {
    for (let i = 0; i < 95; i++) {
      const r = rl.consume({ origin: `https://o${k}.example`, tab: k });
      if (r === undefined) passed++;
      else assert.equal(r, 'global');
    }
  }
  assert.equal(passed, 1000);
  assert.equal(rl.consume({ origin: 'https://new.example', tab: 99 }), 'global');
  assert.equal(rl.consume({}), 'global');
  c.advance(60); // 1000/min → one token per 60 ms
  assert.equal(rl.consume({ origin: 'https://new.example', tab: 99 }), undefined);
});

test('a refused message takes no token from the other buckets', () => {
  const c = clock();
  const rl = new RateLimiter({ perOrigin: 2, perTab: 10, global: 10 }, c.now);
  rl.consume({ origin: 'o', tab: 1 });
  rl.consume({ origin: 'o', tab: 1 });
  for (let i = 0; i < 20; i++) assert.equal(rl.consume({ origin: 'o', tab: 1 }), 'origin');
  // The tab and global buckets still hold 8 tokens.
  for (let i = 0; i < 8; i++) assert.equal(rl.consume({ origin: `p${i}`, tab: 1 }), undefined);
  assert.equal(rl.consume({ origin: 'q', tab: 1 }), 'global');
});

test('memory is bounded: idle keys are dropped', () => {
  const c = clock();
  const rl = new RateLimiter({ global: 1e9 }, c.now);
  for (let i = 0; i < MAX_TRACKED_KEYS * 2; i++) {
    rl.consume({ origin: `https://o${i}.example` });
    c.advance(1);
  }
  assert.ok(rl.trackedKeys <= MAX_TRACKED_KEYS + 1, `tracked ${rl.trackedKeys}`);
});
