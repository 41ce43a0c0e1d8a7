/**
 * Soak (issue 5): an hour of connection churn and task traffic against Palisade; the server's RSS,
 * V8 heap (after a full GC) and open file descriptors must stay flat — drift under 5 % — and its
 * connection and task counters must follow the load and return to zero when it stops.
 *
 * Two nodes of one deployment, each in a process of its own (`bench/soak.server.ts`, run with
 * `--expose-gc`), sharing PostgreSQL (a fresh schema) and Redis (a fresh key prefix), as in
 * production; without PostgreSQL or Redis, one node on its embedded defaults (SQLite, in-process
 * hot state) — the output says which. The load comes from a third process (`bench/soak.driver.ts`).
 * Every `--sample` seconds the parent asks each node for a full GC and its memory and counters,
 * reads VmRSS and the open descriptors from /proc, and records the machine's 1-minute load average
 * (other benchmarks may run at the same time).
 *
 *   node bench/soak.bench.ts [--minutes 60] [--sample 30] [--conn-rate 25] [--life-min 2] [--life-max 14]
 *                            [--task-rate 8] [--nodes 2] [--write]
 *
 * `--minutes 2` is a quick development run. With `--write`, the results go to docs/BENCHMARKS.md
 * (section `soak`) and the plot to docs/soak.svg.
 */
import { parseArgs } from 'node:util';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../packages/server/test/support/postgres.ts';
import { REDIS_URL, countPrefix, dropPrefix, redisSkip, testPrefix } from '../packages/server/test/support/redis.ts';
import type { CreateOptions } from '../packages/server/src/app.ts';
import type { NodeSample, SoakReady, SoakServeInput } from './soak.server.ts';
import type { SoakDriverInput, SoakStats } from './soak.driver.ts';
import { ask, machine, nextMessage, table, writeSection } from './lib.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '60' }, sample: { type: 'string' }, 'conn-rate': { type: 'string', default: '25' },
    'life-min': { type: 'string', default: '2' }, 'life-max': { type: 'string', default: '14' }, 'task-rate': { type: 'string', default: '8' },
    nodes: { type: 'string', default: '2' }, write: { type: 'boolean', default: false },
  },
});
const MINUTES = Number(values.minutes);
const SAMPLE_S = Number(values.sample ?? (MINUTES >= 20 ? 30 : 10));
const CONN_RATE = Number(values['conn-rate']);
const LIFE_MIN = Number(values['life-min']);
const LIFE_MAX = Number(values['life-max']);
const TASK_RATE = Number(values['task-rate']);
const WANT_NODES = Number(values.nodes);
if (!(MINUTES > 0) || !(SAMPLE_S > 0) || !(CONN_RATE > 0) || !(LIFE_MAX >= LIFE_MIN) || !(LIFE_MIN > 0) || !(TASK_RATE >= 0)) throw new Error('bad arguments');
if (WANT_NODES !== 1 && WANT_NODES !== 2) throw new Error('--nodes takes 1 or 2');

interface Node { name: string; child: ChildProcess; ready: SoakReady; log: string }
interface Row {
  t: number;
  load1: number;
  nodes: { rss: number; heap: number; external: number; fds: number; s: NodeSample }[];
  driver: SoakStats;
  /** Two nodes, after the load: the nodes' connection shares left in Redis (tally keys under the run's prefix). */
  redisShares?: number;
}

const SERVER = new URL('./soak.server.ts', import.meta.url).pathname;
const DRIVER = new URL('./soak.driver.ts', import.meta.url).pathname;
let startedAt = Date.now();
const work = mkdtempSync(join(tmpdir(), 'palisade-soak-bench-'));

async function startNode(name: string, input: SoakServeInput): Promise<Node> {
  const log = join(work, `${name}.log`);
  const fd = openSync(log, 'w');
  const child = fork(SERVER, [], {
    execArgv: [...process.execArgv, '--expose-gc'],
    env: { ...process.env, BENCH_SOAK: JSON.stringify(input) },
    stdio: ['ignore', fd, 'inherit', 'ipc'],
  });
  closeSync(fd);
  child.on('error', () => undefined);
  return { name, child, log, ready: await nextMessage(child, (m) => (m as { ready?: SoakReady }).ready) };
}

/** VmRSS of a process (bytes), from /proc. */
function vmRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}
const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

async function sampleAll(nodes: Node[], driverStats: SoakStats, t0: number): Promise<Row> {
  const out: Row['nodes'] = [];
  for (const n of nodes) {
    const s = await ask(n.child, { ask: 'sample' }, (m) => (m as { sample?: NodeSample }).sample);
    out.push({ rss: vmRss(n.ready.pid), heap: s.heapUsed, external: s.external, fds: fdCount(n.ready.pid), s });
  }
  return { t: (Date.now() - t0) / 1000, load1: loadavg()[0]!, nodes: out, driver: structuredClone(driverStats) };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const MB = (b: number) => (b / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const skip = WANT_NODES === 2 ? (await postgresSkip('soak benchmark (two nodes)')) || (await redisSkip('soak benchmark (two nodes)')) : 'one node asked for';
  const multi = skip === false;
  const schema = `palisade_soak_${process.pid}`;
  const prefix = testPrefix();
  const shared: CreateOptions = multi ? { databaseUrl: POSTGRES_URL, databaseSchema: schema, redisUrl: REDIS_URL, redisPrefix: prefix } : {};
  const setup = multi
    ? `two nodes in processes of their own sharing PostgreSQL (\`${POSTGRES_URL}\`, a fresh schema) and Redis (\`${REDIS_URL}\`, a fresh key prefix); agents connect to, and tasks are submitted to, either node at random, so tasks cross nodes`
    : `one node (${skip}): embedded defaults, SQLite and in-process hot state`;
  process.stderr.write(`soak benchmark: ${MINUTES} min, sample every ${SAMPLE_S} s; ${setup}${multi ? ` (schema ${schema}, prefix ${prefix})` : ""}\n`);

  const nodes: Node[] = [];
  let driver: ChildProcess | undefined;
  let aborted: string | undefined;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => (aborted ??= `stopped by ${sig}`));
  try {
    nodes.push(await startNode('a', { role: 'a', options: { ...shared, nodeId: 'soak-a' } }));
    if (multi) nodes.push(await startNode('b', { role: 'b', options: { ...shared, nodeId: 'soak-b', publicUrl: nodes[0]!.ready.url } }));
    const a = nodes[0]!.ready;
    const driverInput: SoakDriverInput = {
      nodes: nodes.map((n) => ({ url: n.ready.url, ca: n.ready.ca })), agentToken: a.agentToken!, agentRefresh: a.agentRefresh!,
      clientId: a.clientId!, clientSecret: a.clientSecret!, connRate: CONN_RATE, lifeMin: LIFE_MIN, lifeMax: LIFE_MAX, taskRate: TASK_RATE,
      refreshSeconds: 300,
    };
    const drv = fork(DRIVER, [], { env: { ...process.env, BENCH_DRIVER: JSON.stringify(driverInput) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    driver = drv;
    drv.on('error', () => undefined);
    await nextMessage(drv, (m) => (m as { started?: boolean }).started);
    for (const n of nodes) n.child.once('exit', (code, signal) => (aborted ??= `node ${n.name} exited (${signal ?? code})`));
    let stoppingDriver = false;
    drv.once('exit', (code, signal) => stoppingDriver || (aborted ??= `the load driver exited (${signal ?? code})`));
    const t0 = Date.now();
    startedAt = t0;
    const rows: Row[] = [];
    const endAt = t0 + MINUTES * 60_000;
    for (let k = 1; t0 + k * SAMPLE_S * 1000 <= endAt && !aborted; k++) {
      // Sleeps in short steps so that a signal or a crash ends the run soon.
      while (Date.now() < t0 + k * SAMPLE_S * 1000 && !aborted) await new Promise((r) => setTimeout(r, Math.min(1000, t0 + k * SAMPLE_S * 1000 - Date.now())));
      if (aborted) break;
      try {
        const row = await sampleAll(nodes, await ask(drv, { ask: 'stats' }, (m) => (m as { stats?: SoakStats }).stats), t0);
        rows.push(row);
        process.stderr.write(`  ${fmtTime(row.t)} load ${row.load1.toFixed(2)} | ${row.nodes.map((n, i) => `${nodes[i]!.name}: rss ${MB(n.rss)} heap ${MB(n.heap)} fds ${n.fds} conns ${n.s.connections} live ${n.s.handles.live}${n.s.unhandled.count ? ` UNHANDLED ${n.s.unhandled.count}` : ''}`).join(' | ')} | alive ${row.driver.alive} connects ${row.driver.connects} tasks ${row.driver.tasks} errors ${row.driver.connectErrors}+${row.driver.httpErrors}\n`);
      } catch (e) {
        aborted ??= `sampling failed: ${String(e)}`;
      }
    }
    if (aborted) process.stderr.write(`  run ended early: ${aborted}\n`);
    // Stop the load, let the nodes settle, and check that every counter returns to zero.
    let final: Final = { ...(rows.at(-1)?.driver ?? emptyStats()), inFlight: -1, cancelledOnStop: 0 };
    if (drv.exitCode === null && drv.signalCode === null) {
      stoppingDriver = true;
      final = await ask(drv, { ask: 'stop' }, (m) => (m as { stopped?: Final }).stopped);
      await once(drv, 'exit').catch(() => undefined);
    }
    driver = undefined;
    // Every 5 s, up to 150 s (past the longest task deadline), until every counter is back to zero.
    let after: Row | undefined;
    const stoppedAt = Date.now();
    while (nodes.every((n) => n.child.exitCode === null && n.child.signalCode === null)) {
      await new Promise((r) => setTimeout(r, 5000));
      after = await sampleAll(nodes, final, t0).catch(() => undefined);
      // The caps' counts live in Redis too (each node's share): they must empty as well.
      if (after && multi) after.redisShares = await countPrefix(`${prefix}:tally`);
      if (after) process.stderr.write(`  settling +${Math.round((Date.now() - stoppedAt) / 1000)} s: ${JSON.stringify(after.nodes.map((n) => ({ conns: n.s.connections, agents: n.s.agents, ...n.s.handles })))}${after.redisShares === undefined ? '' : ` redis shares ${after.redisShares}`}\n`);
      if (!after || settled(after) || Date.now() - stoppedAt > 150_000) break;
    }
    const settleS = (Date.now() - stoppedAt) / 1000;
    if (rows.length > 0) report(rows, after, final, nodes, setup, aborted, settleS);
    else process.stderr.write('  no samples taken: nothing to report\n');
  } finally {
    if (driver && driver.exitCode === null) driver.kill('SIGKILL');
    for (const n of nodes) {
      if (n.child.exitCode !== null || n.child.signalCode !== null) continue;
      n.child.send({ ask: 'stop' });
      const gone = once(n.child, 'exit');
      const timer = setTimeout(() => n.child.kill('SIGKILL'), 20_000);
      await gone;
      clearTimeout(timer);
    }
    if (multi) {
      await dropSchema(schema).catch((e: unknown) => process.stderr.write(`  could not drop schema ${schema}: ${String(e)}\n`));
      await dropPrefix(prefix).catch((e: unknown) => process.stderr.write(`  could not drop prefix ${prefix}: ${String(e)}\n`));
    }
    rmSync(work, { recursive: true, force: true });
  }
}

const emptyStats = (): SoakStats => ({ connects: 0, connectErrors: 0, alive: 0, tasks: 0, ended: {}, sse: 0, cancels: 0, waitedThenWatched: 0, httpErrors: 0, refreshes: 0, relogins: 0, firstErrors: [], driverRss: 0 });
type Final = SoakStats & { inFlight: number; cancelledOnStop: number };
/** Whether every node's connection and task counters are back to zero. */
const settled = (r: Row) => r.nodes.every((n) => n.s.connections === 0 && n.s.tracked.ips === 0 && n.s.tracked.users === 0 && n.s.tracked.synced && n.s.agents === 0
  && Object.values(n.s.handles).every((v) => v === 0)) && (r.redisShares ?? 0) === 0;
const fmtTime = (s: number) => `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}`;

function report(rows: Row[], after: Row | undefined, final: Final, nodes: Node[], setup: string, aborted: string | undefined, settleS: number): void {
  // Windows scale with the run: for 60 minutes, minutes 5–15 against minutes 50–60.
  const w = { b0: MINUTES / 12, b1: MINUTES / 4, e0: MINUTES - MINUTES / 6, e1: MINUTES };
  const inWin = (r: Row, lo: number, hi: number) => r.t / 60 > lo && r.t / 60 <= hi + 1e-9;
  const base = rows.filter((r) => inWin(r, w.b0, w.b1));
  const last = rows.filter((r) => inWin(r, w.e0, w.e1));
  const metrics: [string, (n: Row['nodes'][number]) => number, (v: number) => string][] = [
    ['RSS (VmRSS)', (n) => n.rss, (v) => `${MB(v)} MiB`],
    ['V8 heap used after full GC', (n) => n.heap, (v) => `${MB(v)} MiB`],
    ['open file descriptors', (n) => n.fds, (v) => v.toFixed(1)],
    ['descriptors besides WebSocket connections (fds − conns; not budgeted)', (n) => n.fds - n.s.connections, (v) => v.toFixed(1)],
    ['V8 heap committed (heapTotal; not budgeted)', (n) => n.s.heapTotal, (v) => `${MB(v)} MiB`],
    ['RSS outside V8\'s heap (RSS − heapTotal: code, native allocations, buffers; not budgeted)', (n) => n.rss - n.s.heapTotal, (v) => `${MB(v)} MiB`],
  ];
  const drifts: { node: string; metric: string; base: string; end: string; drift: number }[] = [];
  nodes.forEach((node, i) => {
    for (const [metric, f, fmt] of metrics) {
      const b = mean(base.map((r) => f(r.nodes[i]!)));
      const e = mean(last.map((r) => f(r.nodes[i]!)));
      drifts.push({ node: node.name, metric, base: Number.isFinite(b) ? fmt(b) : '–', end: Number.isFinite(e) ? fmt(e) : '–', drift: (e - b) / b });
    }
  });
  const budgeted = drifts.filter((d) => !d.metric.includes('not budgeted'));
  const measured = budgeted.filter((d) => Number.isFinite(d.drift));
  const worst = measured.length === budgeted.length ? Math.max(...measured.map((d) => Math.abs(d.drift))) : Number.NaN;
  const pass = Number.isFinite(worst) && worst < 0.05;
  const last1 = after ?? rows.at(-1)!;
  const unhandled = last1.nodes.map((n, i) => ({ node: nodes[i]!.name, ...n.s.unhandled })).filter((u) => u.count > 0);

  // One row per 5 minutes (per twelfth of a shorter run), the sample nearest each mark.
  const step = MINUTES >= 60 ? 5 : MINUTES / 12;
  const marks: Row[] = [];
  for (let m = step; m <= MINUTES + 1e-9; m += step) {
    const near = rows.reduce((best, r) => (Math.abs(r.t / 60 - m) < Math.abs(best.t / 60 - m) ? r : best), rows[0]!);
    if (!marks.includes(near)) marks.push(near);
  }
  let prev: Row | undefined;
  const perNodeHead = nodes.flatMap((n) => [`${n.name} RSS MiB`, `${n.name} heap MiB`, `${n.name} fds`, `${n.name} WS conns`, `${n.name} live tasks / timers`]);
  const tableRows = [...marks, ...(after ? [after] : [])].map((r) => {
    const dt = prev ? r.t - prev.t : r.t;
    const connRate = prev && r !== after ? (r.driver.connects - prev.driver.connects) / dt : r.driver.connects / Math.max(1, dt);
    const done = (x: Row) => Object.values(x.driver.ended).reduce((s, v) => s + v, 0);
    const taskRate = prev && r !== after ? (done(r) - done(prev)) / dt : done(r) / Math.max(1, dt);
    const row = [
      r === after ? `after the load stopped (+${Math.round(settleS)} s)` : fmtTime(r.t),
      r.load1.toFixed(2),
      ...r.nodes.flatMap((n) => [MB(n.rss), MB(n.heap), String(n.fds), String(n.s.connections), `${n.s.handles.live} / ${n.s.handles.accept + n.s.handles.deadline + n.s.handles.grace + n.s.handles.listeners + n.s.handles.following}`]),
      r === after ? '–' : String(r.driver.alive),
      r === after ? '–' : connRate.toFixed(1),
      r === after ? '–' : taskRate.toFixed(1),
    ];
    if (r !== after) prev = r;
    return row;
  });
  const maxLoad = Math.max(...rows.map((r) => r.load1));
  const heavy = rows.filter((r) => r.load1 > 6);
  const totalEnded = Object.entries(final.ended).sort().map(([k, v]) => `${k} ${v}`).join(', ');
  const quiet = after !== undefined && settled(after);
  const cmd = `node bench/soak.bench.ts --minutes ${MINUTES} --sample ${SAMPLE_S} --conn-rate ${CONN_RATE} --life-min ${LIFE_MIN} --life-max ${LIFE_MAX} --task-rate ${TASK_RATE} --nodes ${nodes.length}`;
  const out = `- command: \`${cmd}\`
${aborted ? `- **the run ended early, after ${fmtTime(rows.at(-1)!.t)} of ${MINUTES} minutes: ${aborted}. The figures below are partial.**\n` : ''}- ${machine()}; started ${new Date(startedAt).toISOString().slice(11, 16)} UTC
- setup: ${setup}; rate limits on with the test harness's roomy limits (×1000: one address sends the whole load), connection caps per address and per user raised to 5000; each node logs at \`info\` (security events included) to a file
- load (from a separate process, \`bench/soak.driver.ts\`): synthetic agents (the real agent protocol over TLS WebSockets) connecting at ${CONN_RATE}/s, saying hello, staying ${LIFE_MIN}–${LIFE_MAX} s (uniform) and disconnecting (≈ ${Math.round(CONN_RATE * (LIFE_MIN + LIFE_MAX) / 2)} alive); tasks at ${TASK_RATE}/s from an API client: 30 % succeeding under \`Prefer: wait\`, 30 % succeeding and 10 % failing watched over SSE to their end, 15 % cancelled while running, 15 % expiring (accepted, never answered, 1 s deadline); the agents' token refreshed (rotating refresh token, one refresh at a time) and the client's token renewed (client credentials) every 5 minutes (tokens live 15). Agents reuse instance ids from a fixed set, so the agents table stays the same size
- sampling every ${SAMPLE_S} s, per node: a full GC that gives freed pages back (\`gc({ type: 'major', flavor: 'last-resort' })\`, \`--expose-gc\`; a plain \`gc()\` keeps them), then V8 heap used and committed; VmRSS from \`/proc/PID/status\`; open descriptors counted in \`/proc/PID/fd\`; the node's WebSocket connections (\`server.connections\`) and task state (\`server.tasks.openHandles\`: live tasks / accept, deadline and grace timers, listeners, followed tasks); and the machine's 1-minute load average
- **drift = (mean of the last ${fmtMin(MINUTES - w.e0)} minutes − mean of minutes ${fmtMin(w.b0)}–${fmtMin(w.b1)}) ÷ mean of minutes ${fmtMin(w.b0)}–${fmtMin(w.b1)}** (the first ${fmtMin(w.b0)} minutes are warm-up and not counted); budget: |drift| < 5 % for RSS, heap and descriptors
- 1-minute load average over the run (2 cores; the soak itself accounts for roughly 1): min ${Math.min(...rows.map((r) => r.load1)).toFixed(2)}, median ${[...rows.map((r) => r.load1)].sort((a, b) => a - b)[Math.floor(rows.length / 2)]!.toFixed(2)}, max ${maxLoad.toFixed(2)}; ${heavy.length > 0 ? `above 6 (other heavy work beside the soak — other benchmarks ran at the same time, such as the 500K-connection one) in ${heavy.length} of ${rows.length} samples: ${spans(heavy.map((r) => r.t), SAMPLE_S)}` : 'never above 6 (no heavy benchmark overlapped the soak)'}

${table(['node', 'metric', `mean, minutes ${fmtMin(w.b0)}–${fmtMin(w.b1)}`, `mean, last ${fmtMin(MINUTES - w.e0)} minutes`, 'drift'], drifts.map((d) => [d.node, d.metric, d.base, d.end, Number.isFinite(d.drift) ? `${(d.drift * 100).toFixed(2)} %` : 'n/a (no samples in a window)']))}

${Number.isFinite(worst) ? `Largest drift: **${(worst * 100).toFixed(2)} %** — ${pass ? 'within' : '**over**'} the 5 % budget.` : 'Drift: **not measured** — the run did not reach both windows.'}

Over the run: ${final.connects} agent connections (${final.connectErrors} failed), ${final.tasks} tasks (final states seen by the client: ${totalEnded}; ${final.sse} watched over SSE to their end, ${final.waitedThenWatched} of them after a 10 s \`Prefer: wait\` ran out — their agent had left and they were dispatched again; ${final.cancels} cancelled while running), ${final.refreshes} token refreshes${final.relogins ? ` (and **${final.relogins} fresh sign-ins: the agents' grant was lost**)` : ''}, ${final.httpErrors} failed requests${final.firstErrors.length ? ` (first: ${final.firstErrors.slice(0, 3).map((e) => `\`${e.replace(/`/g, "'")}\``).join('; ')})` : ''}.
${after === undefined ? 'No sample after the load stopped (a node was gone).' : `After the load stopped (every agent left, and the ${final.cancelledOnStop} tasks still open were cancelled by the client), every node's counters ${quiet ? `**returned to zero** within ${Math.round(settleS)} s` : `**did not all return to zero** within ${Math.round(settleS)} s`} (WebSocket connections, per-address and per-user counts, registered agents, live tasks, timers and listeners${after.redisShares === undefined ? '' : `; and in Redis, the nodes' shares of the per-address and per-user counts: ${after.redisShares} tally key(s) left`})${quiet ? '' : `: ${JSON.stringify(after.nodes.map((n) => ({ connections: n.s.connections, tracked: n.s.tracked, agents: n.s.agents, handles: n.s.handles })))}`}.`}
${unhandled.length === 0 ? 'No unhandled promise rejection in any node.' : `**Unhandled promise rejections** (each would have ended a production node; the soak's node process counts them and goes on): ${unhandled.map((u) => `node ${u.node}: ${u.count} (first: \`${u.first[0]!.replace(/`/g, "'")}\`)`).join('; ')}.`}

${MINUTES >= 60 ? 'Every 5 minutes' : `Every ${fmtMin(step)} minutes`} (the sample nearest each mark; rates over the interval before it):

${table(['time', 'load 1 min', ...perNodeHead, 'agents alive', 'connects / s', 'tasks ended / s'], tableRows)}

![RSS, heap after GC and open descriptors of each node over the soak](soak.svg)
`;
  process.stdout.write(`\n${out}\n`);
  if (values.write) {
    writeFileSync(new URL('../docs/soak.svg', import.meta.url), svg(rows, nodes, w));
    writeSection('soak', 'Soak: an hour of connection churn and task traffic', out);
  }
}

/** Consecutive sample times as spans: "12:00–20:30, 41:00–41:30". */
function spans(ts: number[], step: number): string {
  const out: string[] = [];
  let from = ts[0]!;
  let prev = ts[0]!;
  for (const t of [...ts.slice(1), Number.POSITIVE_INFINITY]) {
    if (t - prev > step * 1.5) {
      out.push(from === prev ? fmtTime(from) : `${fmtTime(from)}–${fmtTime(prev)}`);
      from = t;
    }
    prev = t;
  }
  return out.join(', ');
}

const fmtMin = (m: number) => (Number.isInteger(m) ? String(m) : m.toFixed(1));

/** Three stacked panels (RSS, heap after GC, descriptors), one line per node, load average dashed on the heap panel's right axis. */
function svg(rows: Row[], nodes: Node[], w: { b0: number; b1: number; e0: number; e1: number }): string {
  const W = 860;
  const PH = 170;
  const L = 70;
  const R = 60;
  const T = 30;
  const GAP = 40;
  const colors = ['#1f77b4', '#d62728'];
  const tMax = MINUTES * 60;
  const x = (t: number) => L + ((W - L - R) * t) / tMax;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const panels: [string, (n: Row['nodes'][number]) => number, (v: number) => string][] = [
    ['RSS (MiB)', (n) => n.rss / 2 ** 20, (v) => v.toFixed(0)],
    ['V8 heap used after full GC (MiB)', (n) => n.heap / 2 ** 20, (v) => v.toFixed(0)],
    ['open file descriptors', (n) => n.fds, (v) => v.toFixed(0)],
  ];
  const H = T + panels.length * (PH + GAP) + 20;
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  parts.push(`<text x="${L}" y="18" font-size="14">Palisade soak, ${MINUTES} min: ${nodes.map((n, i) => `<tspan fill="${colors[i]}">node ${n.name}</tspan>`).join(', ')}; grey dashed: 1-minute load average (right axis, top panel); shaded: drift windows</text>`);
  panels.forEach(([title, f, fmt], p) => {
    const top = T + p * (PH + GAP) + 14;
    const all = rows.flatMap((r) => r.nodes.map(f));
    let lo = Math.min(...all);
    let hi = Math.max(...all);
    const pad = Math.max((hi - lo) * 0.1, hi * 0.02, 1);
    lo = Math.max(0, lo - pad);
    hi += pad;
    const y = (v: number) => top + PH - (PH * (v - lo)) / (hi - lo);
    parts.push(`<text x="${L}" y="${top - 4}" font-weight="bold">${esc(title)}</text>`);
    parts.push(`<rect x="${x(w.b0 * 60)}" y="${top}" width="${x(w.b1 * 60) - x(w.b0 * 60)}" height="${PH}" fill="#eee"/>`);
    parts.push(`<rect x="${x(w.e0 * 60)}" y="${top}" width="${x(w.e1 * 60) - x(w.e0 * 60)}" height="${PH}" fill="#eee"/>`);
    parts.push(`<rect x="${L}" y="${top}" width="${W - L - R}" height="${PH}" fill="none" stroke="#888"/>`);
    for (let k = 0; k <= 4; k++) {
      const v = lo + ((hi - lo) * k) / 4;
      parts.push(`<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${fmt(v)}</text><line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    }
    const tick = MINUTES >= 30 ? 10 : MINUTES >= 10 ? 2 : 0.5;
    for (let m = 0; m <= MINUTES + 1e-9; m += tick) parts.push(`<text x="${x(m * 60)}" y="${top + PH + 14}" text-anchor="middle">${fmtMin(m)}${m === 0 ? ' min' : ''}</text>`);
    nodes.forEach((_n, i) => {
      const pts = rows.map((r) => `${x(r.t).toFixed(1)},${y(f(r.nodes[i]!)).toFixed(1)}`).join(' ');
      parts.push(`<polyline points="${pts}" fill="none" stroke="${colors[i]}" stroke-width="1.5"/>`);
    });
    if (p === 0) {
      const lmax = Math.max(4, ...rows.map((r) => r.load1));
      const yl = (v: number) => top + PH - (PH * v) / lmax;
      parts.push(`<polyline points="${rows.map((r) => `${x(r.t).toFixed(1)},${yl(r.load1).toFixed(1)}`).join(' ')}" fill="none" stroke="#999" stroke-dasharray="4 3"/>`);
      for (let k = 0; k <= 4; k++) parts.push(`<text x="${W - R + 6}" y="${yl((lmax * k) / 4) + 4}" fill="#777">${((lmax * k) / 4).toFixed(1)}</text>`);
    }
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

await main();
