/** Password rules (ASVS 5.0 V6.2) and argon2id parameters (OWASP minimum), checked where they live. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PalisadeError } from '@palisade/protocol';
import { hashConcurrencyFor } from '../../src/config.ts';
import { ARGON2_OPTIONS, COMMON_PASSWORDS_FILE, PASSWORD_MAX, PASSWORD_MIN, checkPasswordRules, commonPasswords, createHashGate, hashPassword, verifyPassword } from '../../src/auth/passwords.ts';

/** Asserts that `password` is refused with PAL_ERR_VALIDATION, by a message matching `why` that does not repeat it. */
function refused(password: string, why: RegExp): void {
  assert.throws(() => checkPasswordRules(password), (e: unknown) => {
    assert.ok(e instanceof PalisadeError);
    assert.equal(e.code, 'PAL_ERR_VALIDATION');
    assert.match(e.message, why);
    assert.ok(!e.message.toLowerCase().includes(password.toLowerCase()), 'the message must not echo the password');
    return true;
  });
}

describe('password length', () => {
  it('is counted in code points, from 8 to 128', () => {
    assert.equal(PASSWORD_MIN, 8);
    assert.equal(PASSWORD_MAX, 128);
  });

  it('refuses 7 characters and accepts 8', () => {
    refused('kq8vz2m', /at least 8 characters/);
    assert.doesNotThrow(() => checkPasswordRules('kq8vz2mw'));
  });

  it('accepts 64 and 128 characters, refuses 129', () => {
    assert.doesNotThrow(() => checkPasswordRules('x7'.repeat(32)));
    assert.doesNotThrow(() => checkPasswordRules('x7'.repeat(64)));
    refused('x7'.repeat(64) + 'q', /at most 128 characters/);
  });

  it('counts code points, not UTF-16 units', () => {
    // 128 emoji are 256 UTF-16 units and still 128 characters.
    assert.doesNotThrow(() => checkPasswordRules('🔐'.repeat(128)));
    refused('🔐'.repeat(129), /at most 128/);
    refused('🔐'.repeat(7), /at least 8/);
  });
});

describe('common breached passwords', () => {
  it('refuses a list entry, in any case and any NFKC-equivalent form', () => {
    assert.ok(commonPasswords().has('password1'));
    refused('password1', /common breached passwords/);
    refused('PASSWORD1', /common breached passwords/);
    refused('PassWord1', /common breached passwords/);
    refused('ｐａｓｓｗｏｒｄ１', /common breached passwords/); // full-width forms, NFKC → password1
    refused('iloveyou1', /common breached passwords/);
  });

  it('accepts a strong password', () => {
    assert.doesNotThrow(() => checkPasswordRules('violet-Harbour-7-quietly'));
  });

  it('requires no composition: a long all-lower-case passphrase is accepted', () => {
    assert.doesNotThrow(() => checkPasswordRules('correct horse battery staple'));
    assert.doesNotThrow(() => checkPasswordRules('thelittlefoxjumpsoverthemoon'));
  });

  it('ships a list of thousands of entries, each normalised and at least 8 code points', () => {
    const list = commonPasswords();
    // ASVS 5.0 V6.2.4 asks for at least the top 3,000 that fit the policy; the shipped list has about 6,300.
    assert.ok(list.size >= 6000, `the list has only ${list.size} entries`);
    for (const entry of list) {
      assert.ok([...entry].length >= PASSWORD_MIN, `entry shorter than ${PASSWORD_MIN}: ${entry}`);
      assert.equal(entry, entry.normalize('NFKC').toLowerCase(), `entry not normalised: ${entry}`);
    }
    const lines = readFileSync(COMMON_PASSWORDS_FILE, 'utf8').split('\n').filter((l) => l !== '');
    assert.equal(lines.length, list.size, 'the file has duplicate lines');
  });

  it('is loaded once and kept', () => {
    assert.equal(commonPasswords(), commonPasswords());
  });
});

describe('password hashing', () => {
  it('uses argon2id at or above the OWASP minimum (19 MiB, t=2, p=1)', async () => {
    const hash = await hashPassword('violet-Harbour-7-quietly');
    // PHC string: $argon2id$v=19$<m=…,t=…,p=… in any order>$salt$hash
    const [, id, version, params] = hash.split('$');
    assert.equal(id, 'argon2id');
    assert.equal(version, 'v=19');
    const param = new Map((params ?? '').split(',').map((kv) => kv.split('=') as [string, string]));
    const [memory, time, parallelism] = ['m', 't', 'p'].map((k) => Number(param.get(k))) as [number, number, number];
    assert.ok([memory, time, parallelism].every(Number.isInteger), `parameters missing: ${params}`);
    assert.ok(memory >= 19_456, `memory ${memory} KiB is below 19 MiB`);
    assert.ok(time >= 2, `t=${time} is below 2`);
    assert.ok(parallelism >= 1, `p=${parallelism} is below 1`);
    assert.deepEqual([memory, time, parallelism], [ARGON2_OPTIONS.memoryCost, ARGON2_OPTIONS.timeCost, ARGON2_OPTIONS.parallelism]);
    assert.equal(await verifyPassword(hash, 'violet-Harbour-7-quietly'), true);
    assert.equal(await verifyPassword(hash, 'violet-harbour-7-quietly'), false);
  });
});

describe('password hashing gate', () => {
  it('by default one hash more than the cores, within libuv\'s pool less one thread, at least one', () => {
    assert.equal(hashConcurrencyFor(2, 4), 3);
    assert.equal(hashConcurrencyFor(1, 4), 2);
    assert.equal(hashConcurrencyFor(8, 4), 3, 'the pool keeps a thread for file writes, DNS and the signer');
    assert.equal(hashConcurrencyFor(8, 16), 9);
    assert.equal(hashConcurrencyFor(2 / 3, 4), 1, 'a worker with less than a core of its own');
    assert.equal(hashConcurrencyFor(4, 1), 1, 'at least one');
  });
  /** A job that runs until `finish()`, noting how many ran at once. */
  const jobs = () => {
    let now = 0;
    let most = 0;
    const order: number[] = [];
    const finishers: (() => void)[] = [];
    const job = (n: number) => () => new Promise<number>((resolve) => {
      now++;
      most = Math.max(most, now);
      order.push(n);
      finishers.push(() => {
        now--;
        resolve(n);
      });
    });
    return { job, order, finishers, most: () => most };
  };
  const tick = () => new Promise((r) => setImmediate(r));

  it('runs at most max at once; the rest start in turn as slots free', async () => {
    const gate = createHashGate(2, 10);
    const j = jobs();
    const done = [1, 2, 3, 4, 5].map((n) => gate.run(j.job(n)));
    await tick();
    assert.deepEqual([gate.running, gate.waiting], [2, 3]);
    assert.deepEqual(j.order, [1, 2]);
    while (j.finishers.length > 0) {
      j.finishers.shift()!();
      await tick();
    }
    assert.deepEqual(await Promise.all(done), [1, 2, 3, 4, 5]);
    assert.deepEqual(j.order, [1, 2, 3, 4, 5]);
    assert.equal(j.most(), 2);
    assert.deepEqual([gate.running, gate.waiting], [0, 0]);
  });

  it('refuses one more than maxWaiting with PAL_ERR_UNAVAILABLE and changes nothing; a failed job frees its slot', async () => {
    const gate = createHashGate(1, 1);
    const j = jobs();
    const first = gate.run(j.job(1));
    const second = gate.run(j.job(2));
    await tick();
    await assert.rejects(gate.run(j.job(3)), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAVAILABLE');
    assert.deepEqual([gate.running, gate.waiting], [1, 1]);
    const failing = createHashGate(1, 0);
    await assert.rejects(failing.run(async () => {
      throw new Error('argon2 failed');
    }), /argon2 failed/);
    assert.equal(failing.running, 0);
    assert.equal(await failing.run(async () => 7), 7);
    j.finishers.shift()!();
    await tick();
    j.finishers.shift()!();
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
  });

  it('takes whole numbers only: max ≥ 1, maxWaiting ≥ 0', () => {
    for (const [max, waiting] of [[0, 1], [1, -1], [1.5, 1], [Number.NaN, 1]] as const) assert.throws(() => createHashGate(max, waiting), RangeError);
    assert.ok(createHashGate(1, 0));
  });
});
