/**
 * Dispatch overhead: client → server → agent → server → client, no browser work.
 *
 * A real Palisade node (TLS, SQLite, OAuth tokens) with one synthetic agent that answers at once;
 * the client submits with `Prefer: wait=5` so one HTTPS request covers the whole path. Measured in
 * the same run as a bare baseline of the same shape — a Fastify HTTPS route that relays the request
 * over a bare `ws` connection to an echoing client and answers — so the ratio shows what Palisade's
 * checks, state machine and store cost on this (noisy, 2-core) machine.
 *
 *   node bench/dispatch.bench.ts [--tasks 3000] [--rounds 3] [--write]
 */
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
import Fastify from 'fastify';
import { WebSocketServer, type WebSocket } from 'ws';
import { apiClient, createAdmin, deviceLogin, startTestServer } from '../packages/server/test/support/harness.ts';
import { percentiles, machine, writeSection, table } from './lib.ts';

const { values } = parseArgs({ options: { tasks: { type: 'string', default: '3000' }, write: { type: 'boolean', default: false }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.tasks);
const WARMUP = Math.min(500, Math.ceil(N / 5));
const SITE = 'http://127.0.0.1:9';
const body = JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: `${SITE}/` }, { type: 'extract', name: 'x', selectors: ['h1'] }] });

/** Runs the load side in a child process and returns its samples. */
function drive(label: string, input: Record<string, unknown>): Promise<number[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [new URL('./dispatch.driver.ts', import.meta.url).pathname], {
      env: { ...process.env, BENCH_DRIVER: JSON.stringify({ ...input, site: SITE, body, warmup: WARMUP, n: N }) },
      maxBuffer: 64 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${label} driver failed: ${stderr}`));
      process.stderr.write(`  ${label}: ${N} round trips done\n`);
      resolve(JSON.parse(stdout) as number[]);
    });
  });
}

async function palisade(): Promise<number[]> {
  const t = await startTestServer();
  await createAdmin(t);
  const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
  const { token } = await apiClient(t);
  const samples = await drive('palisade', { mode: 'palisade', url: t.url, ca: t.server.tls!.ca, agentToken, clientToken: token });
  await t.close();
  return samples;
}

async function bare(tls: { key: string; cert: string; ca: string }): Promise<number[]> {
  const app = Fastify({ https: { key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3' } });
  const wss = new WebSocketServer({ noServer: true });
  let peer: WebSocket | undefined;
  const pending = new Map<number, (v: unknown) => void>();
  let seq = 0;
  wss.on('connection', (ws) => {
    peer = ws;
    ws.on('message', (d) => {
      const m = JSON.parse(String(d)) as { id: number };
      pending.get(m.id)?.(m);
      pending.delete(m.id);
    });
  });
  app.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
  app.post('/relay', async (req) => {
    const id = ++seq;
    const done = new Promise((r) => pending.set(id, r));
    peer!.send(JSON.stringify({ id, task: req.body }));
    return done;
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const samples = await drive('bare fastify+ws', { mode: 'bare', url, ca: tls.ca });
  await app.close();
  return samples;
}

const tlsSource = await startTestServer();
const tls = { key: tlsSource.server.tls!.key, cert: tlsSource.server.tls!.cert, ca: tlsSource.server.tls!.ca! };
await tlsSource.close();

const ROUNDS = Number(values.rounds);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes a positive integer');
process.stderr.write(`dispatch benchmark: ${ROUNDS} rounds of ${N} sequential tasks each, Palisade and baseline interleaved (after ${WARMUP} warm-up)\n`);
// Interleave the two so drift on a noisy machine affects both alike; each round is measured on its
// own and the round with the median Palisade p50 is reported, beside every round's figures.
const rounds: { pal: ReturnType<typeof percentiles>; base: ReturnType<typeof percentiles> }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const base = await bare(tls);
  const pal = await palisade();
  rounds.push({ pal: percentiles(pal), base: percentiles(base) });
}
const sorted = [...rounds].sort((x, y) => x.pal.p50 - y.pal.p50);
const { pal: p, base: b } = sorted[Math.floor(sorted.length / 2)]!;
const rows = [
  ['Palisade: POST /api/v1/tasks (Prefer: wait) → agent → result', p.p50, p.p99, p.p999],
  ['baseline: bare Fastify HTTPS route relaying over bare ws', b.p50, b.p99, b.p999],
  ['Palisade overhead over baseline (difference)', p.p50 - b.p50, p.p99 - b.p99, p.p999 - b.p999],
];
const perRound = rounds.map((r, i) => [`round ${i + 1}`, r.pal.p50.toFixed(3), r.pal.p99.toFixed(3), r.base.p50.toFixed(3), r.base.p99.toFixed(3), (r.pal.p50 / r.base.p50).toFixed(2)]);
const out = `Command: \`node bench/dispatch.bench.ts --tasks ${N} --rounds ${ROUNDS}\` · ${machine()}

One HTTPS request per task over a kept-alive connection, one task in flight; the server verifies the
token, validates, stores the task (SQLite), dispatches it to a synthetic agent over a real
WebSocket, records accept, progress and result, and answers. The client and the agent run in a
second process (\`bench/dispatch.driver.ts\`), so the server has a core of its own.
Budget: p50 ≤ 1 ms, p99 ≤ 5 ms. The round with the median Palisade p50:

${table(['path (ms)', 'p50', 'p99', 'p99.9'], rows.map(([l, ...v]) => [l as string, ...(v as number[]).map((x) => x.toFixed(3))]))}

Ratio Palisade / baseline: p50 ${(p.p50 / b.p50).toFixed(2)}×, p99 ${(p.p99 / b.p99).toFixed(2)}×.

Every round (ms):

${table(['round', 'Palisade p50', 'Palisade p99', 'baseline p50', 'baseline p99', 'p50 ratio'], perRound)}
`;
process.stdout.write(`${out}\n`);
if (values.write) writeSection('dispatch', 'Task dispatch overhead', out);
