/** The checkpoint thread of `sqlite-checkpointer.ts`: its own connection, a PASSIVE checkpoint per interval. */
import { workerData } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';

const { path, intervalMs } = workerData as { path: string; intervalMs: number };
const db = new DatabaseSync(path);
db.exec('PRAGMA busy_timeout = 1000;');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
setInterval(() => {
  try {
    checkpoint.get();
  } catch {
    // Busy or closing: the next interval tries again; the main connection checkpoints on close.
  }
}, intervalMs);
