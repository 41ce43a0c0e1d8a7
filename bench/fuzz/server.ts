/**
 * @module fuzz/server — the server under fuzz, in a process of its own (started by `fuzz.ts` with
 * `--expose-gc`): Palisade on its embedded defaults (SQLite in a fresh data folder, development TLS,
 * in-process hot state, a free port, logs at `info`), rate limits lifted unless `FUZZ_LIMITS=default`. Logs at `error` and above also go to
 * `FUZZ_WORK/errors.log` for the report. Answers the parent's asks: `mem` (process.memoryUsage(),
 * after a full GC when asked), `stats` (security events by activity and code), `heap-snapshot`
 * (written to a file, for finding what a growing heap holds), and those of
 * bench/lib.ts (`cpu`, `stop`, profiles).
 */
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { pino } from 'pino';
import { createPalisade } from '../../packages/server/src/app.ts';
import { DEFAULTS } from '../../packages/server/src/config.ts';
import { answerAsks } from '../lib.ts';

/** What the server process tells its parent once it listens. */
export interface Ready {
  url: string;
  port: number;
  ca: string;
  setupUrl: string;
  pid: number;
}

/** The parent's asks this process answers besides bench/lib.ts's. */
export type FuzzAsk = { ask: 'mem'; gc?: boolean } | { ask: 'stats' } | { ask: 'heap-snapshot'; file: string };

export interface MemSample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

const work = process.env.FUZZ_WORK;
if (!work) throw new Error('FUZZ_WORK is not set');

const logger = pino(
  { level: 'info', base: { svc: 'palisade' } },
  pino.multistream([
    { level: 'info', stream: pino.destination({ dest: '/dev/null', sync: false }) },
    { level: 'error', stream: pino.destination({ dest: join(work, 'errors.log'), sync: true, mkdir: true }) },
  ]),
);
// `lifted` (the default for fuzzing): request-rate limits off and the per-connection frame rate
// raised, so generated inputs reach the handlers instead of a 429 after the first few hundred (every
// input comes from one IP). `default`: the shipped limits, to fuzz the limiter's own paths.
const lifted = process.env.FUZZ_LIMITS !== 'default';
const server = await createPalisade({
  dataDir: join(work, 'data'), port: 0, logger,
  ...(lifted ? { rateLimits: { ...DEFAULTS.rateLimits, enabled: false }, wsMessageRate: 1e6, wsMessageBurst: 1e6 } : {}),
});
const url = await server.listen();
if (!server.setupUrl || !server.tls?.ca) throw new Error('expected a fresh server with a development CA');

const events = new Map<string, number>();
server.events.subscribe((e) => {
  const key = `${e.status}\t${e.activity_name}\t${e.status_code ?? ''}`;
  events.set(key, (events.get(key) ?? 0) + 1);
});

// The parent is gone (killed, crashed): do not outlive it.
process.on('disconnect', () => process.exit(1));
answerAsks(async () => {
  await server.close();
});
process.on('message', (m: FuzzAsk) => {
  if (m.ask === 'mem') {
    if (m.gc) {
      // Twice: the first pass may only queue finalizers.
      globalThis.gc?.();
      globalThis.gc?.();
    }
    const u = process.memoryUsage();
    process.send!({ mem: { rss: u.rss, heapUsed: u.heapUsed, heapTotal: u.heapTotal, external: u.external, arrayBuffers: u.arrayBuffers } satisfies MemSample });
  } else if (m.ask === 'heap-snapshot') {
    globalThis.gc?.();
    process.send!({ snapshot: writeHeapSnapshot(m.file) });
  } else if (m.ask === 'stats') {
    process.send!({ stats: Object.fromEntries(events), handles: server.tasks.openHandles });
  }
});
process.send!({ ready: { url, port: Number(new URL(url).port), ca: server.tls.ca, setupUrl: server.setupUrl, pid: process.pid } satisfies Ready });
