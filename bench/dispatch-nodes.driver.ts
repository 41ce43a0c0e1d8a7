/**
 * The load side of `dispatch-nodes.bench.ts`, in a process of its own: connects `agents` synthetic
 * agents to one server (Palisade's SyntheticAgent speaking the agent protocol, or socket.io-client
 * sockets that answer with an acknowledgement), then keeps `concurrency` callers busy submitting
 * tasks to a server (the same one or another node), one request in flight per caller on its own
 * kept-alive HTTPS connection (closed loop) — or submits them at a fixed rate, whatever the answers,
 * on up to `concurrency` connections (open loop, with `rate`). Warms up, times every round trip for `seconds`, tells
 * its parent when the timed window opens and closes, and prints a `DriverResult` as JSON.
 */
import { Pool } from 'undici';
import { io as connectSio, type Socket } from 'socket.io-client';
import { SyntheticAgent } from '../packages/server/test/support/agent.ts';
import { closedLoop, openLoop, summarise, type LoopSummary } from './lib.ts';

export interface DriverInput {
  kind: 'palisade' | 'socketio';
  /** Where the callers submit. */
  callerUrl: string;
  /** Where the agents connect. */
  agentUrl: string;
  ca: string;
  /** Palisade: the agents' access token. */
  agentToken?: string;
  /** An API client's access token: Palisade checks it; Socket.IO's server reads none, but gets the same bytes. */
  clientToken: string;
  /** Palisade agents' instance ids are `<instancePrefix>-<k>`. */
  instancePrefix: string;
  agents: number;
  /** Closed loop: this many callers, each with one request in flight on its own connection. */
  concurrency: number;
  /** Open loop instead (tasks/s): a request starts every 1/rate s, on up to `concurrency` connections (past that, it queues, and the wait counts). */
  rate?: number;
  site: string;
  body: string;
  warmupSeconds: number;
  seconds: number;
}

export interface DriverResult extends LoopSummary {
  /** Bytes of one answer's body. */
  answerBytes: number;
}

const input = JSON.parse(process.env.BENCH_DRIVER ?? '{}') as DriverInput;
const tell = (phase: string) => process.send?.({ phase });

// ---- agents ----
const closers: (() => void)[] = [];
if (input.kind === 'palisade') {
  const agents = await Promise.all(Array.from({ length: input.agents }, (_, k) => SyntheticAgent.connect({
    url: input.agentUrl, token: input.agentToken!, ca: input.ca, grants: [input.site], instanceId: `${input.instancePrefix}-${k}`,
  })));
  for (const a of agents) closers.push(() => a.close());
} else {
  const sockets = await Promise.all(Array.from({ length: input.agents }, (_, k) => new Promise<Socket>((resolve, reject) => {
    const s = connectSio(input.agentUrl, { transports: ['websocket'], ca: input.ca, auth: { agent: String(k) }, reconnection: false, forceNew: true });
    s.once('connect', () => resolve(s));
    s.once('connect_error', reject);
  })));
  for (const s of sockets) {
    // The same answer as the synthetic agent's result frame (accept and progress frames have no equivalent here).
    s.on('task', (f: { taskId: string; steps: unknown[] }, ack: (a: unknown) => void) => {
      const started = performance.now();
      ack({ taskId: f.taskId, outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: performance.now() - started, steps: [] } } });
    });
    closers.push(() => s.close());
  }
}

// ---- callers ----
const pool = new Pool(input.callerUrl, { connections: input.concurrency, pipelining: 1, connect: { ca: input.ca } });
const headers = { authorization: `Bearer ${input.clientToken}`, 'content-type': 'application/json', prefer: 'wait=5' };

let answerBytes = 0;
const request = async () => {
  const res = await pool.request({ path: '/api/v1/tasks', method: 'POST', headers, body: input.body });
  const text = await res.body.text();
  if (res.statusCode !== 201 || (JSON.parse(text) as { state?: string }).state !== 'succeeded') return `${res.statusCode} ${text.slice(0, 300)}`;
  answerBytes = Buffer.byteLength(text);
  return undefined;
};
// An open loop opens connections as its requests need them: open them all first, so a TLS handshake
// (the same cost on both servers) is not what a burst in the timed window waits for.
if (input.rate !== undefined) {
  await Promise.all(Array.from({ length: input.concurrency }, async () => {
    const res = await pool.request({ path: '/healthz', method: 'GET' });
    await res.body.dump();
  }));
}
const timing = { warmupSeconds: input.warmupSeconds, seconds: input.seconds, tell, request };
const loop = input.rate === undefined ? await closedLoop({ loops: input.concurrency, ...timing }) : await openLoop({ rate: input.rate, ...timing });
await pool.close();
for (const c of closers) c();
const result: DriverResult = { ...summarise(loop, input.seconds), answerBytes };
process.stdout.write(JSON.stringify(result));
// Sockets and timers may hold the loop a while after closing.
setTimeout(() => process.exit(0), 200).unref();
