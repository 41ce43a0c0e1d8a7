import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, PalisadeError, isErrorCode } from '../src/errors.ts';

describe('error registry', () => {
  const doc = readFileSync(new URL('../../../docs/ERRORS.md', import.meta.url), 'utf8');
  const rows = new Map([...doc.matchAll(/^\| `(PAL_ERR_[A-Z_]+)` \| (\d+) \| (\d+) \|/gm)].map((m) => [m[1]!, { status: Number(m[2]), close: Number(m[3]) }]));

  it('docs/ERRORS.md lists every code with the same HTTP status and close code, and no other', () => {
    assert.deepEqual([...rows.keys()].sort(), Object.keys(ERROR_CODES).sort());
    for (const [code, v] of Object.entries(ERROR_CODES)) assert.deepEqual(rows.get(code), { status: v.status, close: v.close }, code);
  });

  it('codes are well formed and statuses are errors', () => {
    for (const [code, v] of Object.entries(ERROR_CODES)) {
      assert.match(code, /^PAL_ERR_[A-Z_]+$/);
      assert.ok(v.status >= 400 && v.status < 600, code);
      assert.ok(v.close === 1000 || (v.close >= 1001 && v.close <= 1014) || (v.close >= 4000 && v.close < 5000), code);
    }
  });

  it('problem details never carry the internal detail', () => {
    const e = new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: new Error('db password is hunter2') });
    const p = e.toProblem();
    assert.deepEqual(p, { type: 'urn:palisade:error:PAL_ERR_INTERNAL', title: 'Internal error', status: 500, code: 'PAL_ERR_INTERNAL', detail: 'internal error' });
    assert.ok(!JSON.stringify(p).includes('hunter2'));
  });

  it('round-trips through a problem body; unknown codes become internal', () => {
    const e = PalisadeError.fromProblem(new PalisadeError('PAL_ERR_VALIDATION', 'bad', { errors: [{ path: '/a', message: 'x' }] }).toProblem());
    assert.equal(e.code, 'PAL_ERR_VALIDATION');
    assert.deepEqual(e.errors, [{ path: '/a', message: 'x' }]);
    assert.equal(PalisadeError.fromProblem({ code: 'NOPE' as never, detail: 'x' }).code, 'PAL_ERR_INTERNAL');
    assert.equal(isErrorCode('toString'), false, 'prototype keys are not codes');
  });
});
