/** Task records as the stores hand them back: `withPatch` (what a compare-and-set returns). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { withPatch } from '../../src/store/rows.ts';
import type { TaskRecord } from '../../src/store/types.ts';

/** A record whose steps are decoded on first read (as the stores' rows are), counting the reads. */
function stored(): { record: TaskRecord; decoded: () => number } {
  let decodes = 0;
  const record = {
    id: 't_1', ownerUserId: 'u', clientId: 'c', site: 'https://a.example', state: 'dispatched', agentId: 'ag_1', attempts: 1,
    requestHash: 'h', waitForAgent: false, createdAt: 'a', updatedAt: 'b', deadline: 'c',
  } as Omit<TaskRecord, 'steps'>;
  let steps: TaskRecord['steps'] | undefined;
  Object.defineProperty(record, 'steps', {
    enumerable: true, configurable: true,
    get: () => (steps ??= (decodes++, JSON.parse('[{"type":"navigate","url":"https://a.example/"}]') as TaskRecord['steps'])),
  });
  return { record: record as TaskRecord, decoded: () => decodes };
}

describe('withPatch', () => {
  it('applies the patch to a copy; a field patched to undefined is gone; fields that are not columns are ignored', () => {
    const { record } = stored();
    const next = withPatch(record, { state: 'queued', agentId: undefined, attempts: 2, ...({ notAColumn: 1 } as object) });
    assert.equal(next.state, 'queued');
    assert.equal(next.attempts, 2);
    assert.equal('agentId' in next, false, 'removed, not set to undefined');
    assert.equal('notAColumn' in next, false);
    assert.deepEqual([record.state, record.agentId, record.attempts], ['dispatched', 'ag_1', 1], 'the current record is unchanged');
    assert.deepEqual(Object.keys(next).sort(), Object.keys(record).filter((k) => k !== 'agentId').sort());
  });

  it('keeps the steps undecoded until read, shared with the record it came from', () => {
    const { record, decoded } = stored();
    const a = withPatch(record, { state: 'running' });
    const b = withPatch(a, { state: 'succeeded' });
    assert.equal(decoded(), 0, 'a state change does not decode the steps');
    assert.deepEqual(b.steps, [{ type: 'navigate', url: 'https://a.example/' }]);
    assert.equal(record.steps, b.steps, 'decoded once, for every copy');
    assert.equal(decoded(), 1);
    const replaced = withPatch(b, { steps: [] });
    assert.deepEqual([replaced.steps, b.steps.length], [[], 1], 'patched steps replace them in the copy only');
  });
});
