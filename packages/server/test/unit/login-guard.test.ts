import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLoginGuard } from '../../src/auth/login-guard.ts';

describe('login guard', () => {
  it('locks a username after 5 failures for the window, whatever the IP, and unlocks after it', () => {
    let now = 0;
    const g = createLoginGuard({ now: () => now });
    for (let i = 0; i < 4; i++) assert.equal(g.fail('Admin', `10.0.0.${i}`), false);
    assert.equal(g.lockedFor('admin', '10.9.9.9'), 0);
    assert.equal(g.fail('admin', '10.0.0.9'), true, 'the fifth failure locks');
    assert.ok(g.lockedFor('ADMIN', '10.9.9.9') > 0, 'case does not matter, nor the IP');
    now += 15 * 60_000;
    assert.equal(g.lockedFor('admin', '10.9.9.9'), 0);
  });
  it('locks an IP after 20 failures across usernames', () => {
    const g = createLoginGuard({ now: () => 0 });
    for (let i = 0; i < 19; i++) g.fail(`user${i}`, '192.0.2.1');
    assert.equal(g.lockedFor('someone', '192.0.2.1'), 0);
    g.fail('user19', '192.0.2.1');
    assert.ok(g.lockedFor('someone', '192.0.2.1') > 0);
    assert.equal(g.lockedFor('someone', '192.0.2.2'), 0);
  });
  it('a success clears the username; the tracked keys are bounded', () => {
    const g = createLoginGuard({ now: () => 0, maxKeys: 10 });
    for (let i = 0; i < 4; i++) g.fail('a', '1.1.1.1');
    g.succeed('a');
    g.fail('a', '1.1.1.1');
    assert.equal(g.lockedFor('a', '2.2.2.2'), 0);
    for (let i = 0; i < 100; i++) g.fail(`u${i}`, `ip${i}`);
    for (let i = 0; i < 4; i++) g.fail('z', 'ip-z');
    assert.equal(g.fail('z', 'ip-z'), true, 'still counts after many other keys');
  });
});
