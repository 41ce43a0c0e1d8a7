/**
 * @module store/sqlite-checkpointer — moves SQLite's WAL checkpoints off the event loop.
 *
 * A checkpoint copies the write-ahead log into the database file and syncs it: several
 * milliseconds. Left automatic, it runs inside whichever write crosses the threshold and stalls
 * every request behind it (it was the whole p99 tail of task dispatch). Instead the main connection
 * turns automatic checkpoints off and this worker thread, on its own connection, runs a PASSIVE
 * checkpoint (never blocks writers) every `intervalMs`.
 */
import { Worker } from 'node:worker_threads';

/** Interval between checkpoints, ms. Default 1000. */
export const CHECKPOINT_INTERVAL_MS = 1000;

export interface Checkpointer {
  stop(): Promise<void>;
}

/** Starts the checkpoint thread for the database file at `path`. */
export function startCheckpointer(path: string, intervalMs = CHECKPOINT_INTERVAL_MS): Checkpointer {
  const worker = new Worker(new URL('./sqlite-checkpointer.worker.ts', import.meta.url), { workerData: { path, intervalMs } });
  worker.unref();
  return {
    async stop() {
      await worker.terminate();
    },
  };
}
