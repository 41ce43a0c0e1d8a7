/** The sign-in guard over the in-process counters (the Redis counters pass the same contract). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLoginGuard, type LoginAttempt } from '../../src/auth/login-guard.ts';
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import { DEFAULTS } from '../../src/config.ts';

const limits = { ...DEFAULTS.loginLimits, perAccount: 5, perIp: 20, freeFailures: 2, delayMs: 100, maxDelayMs: 250 };
const allowed = (a: LoginAttempt) => {
  assert.ok(a.allowed, 'the attempt is allowed');
  return a;
};

describe('login guard', () => {
  it('locks an account after 5 failures whatever the IP or the case, and the 5th failure says so', async () => {
    const g = createLoginGuard(createMemoryHotStore().counters, limits);
    for (let i = 0; i < 4; i++) assert.equal(await allowed(await g.begin('Admin', `10.0.0.${i}`)).fail(), false);
    assert.equal(await allowed(await g.begin('admin', '10.0.0.9')).fail(), true, 'the fifth failure locks');
    const refused = await g.begin('ADMIN', '10.9.9.9');
    assert.equal(refused.allowed, false);
    assert.ok(!refused.allowed && refused.retryAfterMs > 14 * 60_000, 'locked for the rest of the window');
    assert.ok((await g.begin('someone-else', '10.9.9.9')).allowed, 'other accounts are not affected');
  });

  it('locks an IP after 20 failures across accounts', async () => {
    const g = createLoginGuard(createMemoryHotStore().counters, limits);
    for (let i = 0; i < 20; i++) await allowed(await g.begin(`user${i}`, '192.0.2.1')).fail();
    assert.equal((await g.begin('fresh', '192.0.2.1')).allowed, false);
    assert.ok((await g.begin('fresh', '192.0.2.2')).allowed);
  });

  it('waits longer after each failure past the free ones, up to the cap', async () => {
    const g = createLoginGuard(createMemoryHotStore().counters, { ...limits, perAccount: 10 });
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const a = allowed(await g.begin('victim', `198.51.100.${i}`));
      delays.push(a.delayMs);
      await a.fail();
    }
    assert.deepEqual(delays, [0, 0, 0, 100, 200, 250]);
  });

  it('a success gives the reservation back: the account is cleared and successes never lock an IP', async () => {
    const g = createLoginGuard(createMemoryHotStore().counters, limits);
    for (let i = 0; i < 4; i++) await allowed(await g.begin('a', '1.1.1.1')).fail();
    await allowed(await g.begin('a', '1.1.1.1')).succeed();
    assert.equal(allowed(await g.begin('a', '1.1.1.1')).delayMs, 0, 'no delay after a success');
    for (let i = 0; i < 50; i++) await allowed(await g.begin(`ok${i}`, '203.0.113.5')).succeed();
    assert.ok((await g.begin('x', '203.0.113.5')).allowed, '50 successful sign-ins from one IP do not lock it');
  });

  it('parallel guesses get no more password checks than the limit', async () => {
    const g = createLoginGuard(createMemoryHotStore().counters, limits);
    const attempts = await Promise.all(Array.from({ length: 30 }, (_, i) => g.begin('target', `10.1.0.${i}`)));
    assert.equal(attempts.filter((a) => a.allowed).length, 5);
  });
});
