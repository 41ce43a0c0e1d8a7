/**
 * @module tasks/machine — the task state machine. Every change of state goes through `canMove`;
 * the store applies it as a compare-and-set on the previous state.
 *
 * queued → dispatched → running → succeeded | failed ; any unfinished state → cancelled | expired | failed;
 * dispatched | running → queued (agent lost, re-dispatched once).
 */
import type { TaskState } from '@palisade/protocol';

const MOVES: Record<TaskState, readonly TaskState[]> = {
  queued: ['dispatched', 'cancelled', 'expired', 'failed'],
  dispatched: ['running', 'queued', 'succeeded', 'failed', 'cancelled', 'expired'],
  running: ['succeeded', 'failed', 'queued', 'cancelled', 'expired'],
  succeeded: [],
  failed: [],
  cancelled: [],
  expired: [],
};

export function canMove(from: TaskState, to: TaskState): boolean {
  return MOVES[from].includes(to);
}
