/**
 * The load side of `token.bench.ts`, in its own process so the server under test has a core of its
 * own: keeps `connections` kept-alive HTTPS connections busy with client-credentials token requests
 * (one in flight per connection), warms up, then times every request for `seconds`. Tells its parent
 * when the timed window opens and closes (so the parent can read the server's CPU time over exactly
 * that window) and prints {requests, seconds, rps, p50, p99, …} as JSON.
 *
 * Several drivers can share one window (`awaitGo`: each says `loaded`, then counts from the wall-clock
 * time the parent sends to all); each then also prints its latency samples (`keepSamples`), which the
 * parent merges into one set of percentiles.
 */
import { Pool } from 'undici';
import { closedLoop, summarise, type LoopSummary } from './lib.ts';

interface DriverInput {
  url: string;
  path: string;
  ca: string;
  clientId: string;
  clientSecret: string;
  connections: number;
  warmupSeconds: number;
  seconds: number;
  /** Wait for the parent's `{ go: epochMs }` and count the warm-up from that wall-clock time (drivers sharing one window); default: start at once. */
  awaitGo?: boolean;
  /** Print every latency sample of the window too (`samples`), for merging with other drivers. */
  keepSamples?: boolean;
}

/** What the driver prints: counts and latencies (ms) of the timed window only. */
export interface DriverResult extends LoopSummary {
  /** Every request's latency in the window, ms (with `keepSamples`). */
  samples?: number[];
}

const input = JSON.parse(process.env.BENCH_DRIVER ?? '{}') as DriverInput;
const pool = new Pool(input.url, { connections: input.connections, pipelining: 1, connect: { ca: input.ca } });
const headers = {
  authorization: `Basic ${Buffer.from(`${encodeURIComponent(input.clientId)}:${encodeURIComponent(input.clientSecret)}`).toString('base64')}`,
  'content-type': 'application/x-www-form-urlencoded',
};
const body = new URLSearchParams({ grant_type: 'client_credentials', scope: 'tasks' }).toString();
const tell = (phase: string) => process.send?.({ phase });

// Loaded: a coordinated driver waits here, so slow process starts on a busy machine do not eat the warm-up.
const startedAt = input.awaitGo
  ? await new Promise<number>((resolve) => {
    const onGo = (m: { go?: number }) => {
      if (m.go === undefined) return;
      process.off('message', onGo);
      resolve(m.go);
    };
    process.on('message', onGo);
    tell('loaded');
  })
  : Date.now();
const loop = await closedLoop({
  loops: input.connections, warmupSeconds: input.warmupSeconds, seconds: input.seconds, startedAt, tell,
  request: async () => {
    const res = await pool.request({ path: input.path, method: 'POST', headers, body });
    const text = await res.body.text();
    return res.statusCode === 200 && text.includes('"access_token"') ? undefined : `${res.statusCode} ${text.slice(0, 200)}`;
  },
});
await pool.close();
const result: DriverResult = { ...summarise(loop, input.seconds), ...(input.keepSamples ? { samples: loop.samples } : {}) };
if (result.errors > 0) process.stderr.write(`  driver: ${result.errors} failed requests; first: ${result.firstError}\n`);
process.stdout.write(JSON.stringify(result));
