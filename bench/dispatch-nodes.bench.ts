/**
 * Task dispatch across nodes: throughput and round-trip latency of submit → agent → result with N
 * synthetic agents and C closed-loop callers, on one node and on two nodes (callers on A, agents on
 * B, through Redis and a shared PostgreSQL), side by side with Socket.IO and its Redis adapter doing
 * the same request/response routing (`io.to(room).timeout(ms).emitWithAck(...)`), in the same run
 * on the same machine.
 *
 * Processes: Palisade node A and node B (each a child process: `--serve palisade`, PostgreSQL at
 * 127.0.0.1:5432 under a fresh schema, Redis at 127.0.0.1:6379 under a fresh prefix), Socket.IO
 * servers A and B (`bench/socketio.server.ts`, the same TLS certificate, Redis under a fresh channel
 * key), and for each measurement a fresh load process (`bench/dispatch-nodes.driver.ts`) holding the
 * agents and the callers. All four servers start once and stay up; each round measures the four
 * targets in an order that alternates between rounds; figures are medians over the rounds.
 *
 *   node bench/dispatch-nodes.bench.ts [--agents 8] [--concurrency 1,4,16] [--rates 200,400] [--seconds 5] [--warmup 2] [--rounds 3] [--write]
 *
 * `--rates` adds open-loop levels: tasks submitted at a fixed rate (tasks/s) whatever the answers, on
 * up to OPEN_CONNECTIONS connections, each latency timed from when its task was due (so queueing
 * counts). A latency budget is a statement about a load: a closed loop of C callers runs as fast as
 * the slowest part lets it, which on two shared cores is near saturation; an open loop states the
 * latency at a given arrival rate, the same for both systems.
 *
 * `--cpu-prof DIR` (a diagnostic; profiling slows the nodes, so not with `--write`): V8 CPU profiles of
 * both Palisade nodes over each Palisade window, written to DIR, and where each node's main thread
 * spent its time per task printed at the end.
 *
 * `--unprepared` (a diagnostic, not written to the docs): Palisade's nodes send every PostgreSQL
 * statement unprepared (`databasePreparedStatements: false`), to compare with the default.
 *
 * `--async-commit` (a diagnostic, not written to the docs): Palisade's nodes use a database of their
 * own created with `synchronous_commit = off`, to show what waiting for the WAL flush of each state
 * change costs on this machine's disk.
 */
import { parseArgs } from 'node:util';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';
import { ensureDevTls } from '../packages/server/src/tls/devca.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer } from '../packages/server/test/support/harness.ts';
import { DEFAULTS } from '../packages/server/src/config.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../packages/server/test/support/postgres.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../packages/server/test/support/redis.ts';
import type { DriverInput, DriverResult } from './dispatch-nodes.driver.ts';
import type { SioServeInput } from './socketio.server.ts';
import { addProfile, answerAsks, ask, type Ask, machine, machineBusy, nextMessage, table, writeSection } from './lib.ts';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '8' }, concurrency: { type: 'string', default: '1,4,16' }, rates: { type: 'string', default: '' }, seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' }, rounds: { type: 'string', default: '3' }, write: { type: 'boolean', default: false },
    serve: { type: 'string' }, note: { type: 'string' }, 'async-commit': { type: 'boolean', default: false }, 'cpu-prof': { type: 'string' },
    unprepared: { type: 'boolean', default: false },
  },
});

const SITE = 'http://127.0.0.1:9';
const BODY = JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: `${SITE}/` }, { type: 'extract', name: 'x', selectors: ['h1'] }] });
const PROFILE_DIR = values['cpu-prof'];
if (PROFILE_DIR) mkdirSync(PROFILE_DIR, { recursive: true });
let profileCount = 0;
/** CPU profiles (`--cpu-prof`), summed by target, level and node. */
const hot = new Map<string, { areas: Map<string, number>; fns: Map<string, number>; tasks: number }>();

/** Where each profiled node's main thread spent its time, µs per task: the top areas and functions. */
function hotspots(): string {
  let out = '\nCPU profiles (main thread, µs per task):\n';
  for (const [k, t] of hot) {
    const busy = [...t.areas].reduce((n, [a, v]) => n + (a === '(idle)' ? 0 : v), 0) / t.tasks;
    const top = (m: Map<string, number>, n: number) => [...m].filter(([a]) => !a.startsWith('(idle)')).sort((x, y) => y[1] - x[1]).slice(0, n)
      .map(([a, v]) => `    ${(v / t.tasks).toFixed(0).padStart(6)}  ${a}`).join('\n');
    out += `  ${k}: busy ${busy.toFixed(0)} µs/task\n   areas:\n${top(t.areas, 15)}\n   functions:\n${top(t.fns, 25)}\n`;
  }
  return out;
}

/** Open-loop levels submit on at most this many connections (undici queues past it; the wait is timed). */
const OPEN_CONNECTIONS = 64;

/** A load level: C callers in a closed loop, or an open loop at `rate` tasks/s. */
type Level = { callers: number; rate?: undefined } | { rate: number; callers?: undefined };
/** Short name (keys, progress lines, profile files): `4` callers or `300/s`. */
const levelName = (l: Level) => (l.rate === undefined ? String(l.callers) : `${l.rate}/s`);
/** For the tables: `4 callers`, `300 tasks/s (open loop)`. */
const levelLabel = (l: Level) => (l.rate === undefined ? `${l.callers} caller${l.callers > 1 ? 's' : ''}` : `${l.rate} tasks/s (open loop)`);

/** Budget of issue 5: p99 of a round trip across nodes. */
const BUDGET_P99_MS = 10;

// ---- a Palisade node (a child process: `--serve palisade`) ------------------------------------------

interface PalServeInput { databaseUrl: string; dataDir: string; nodeId: string; schema: string; prefix: string; publicUrl?: string; setup: boolean; unprepared?: boolean }
interface PalReady { url: string; agentToken?: string; clientToken?: string }

async function servePalisade(): Promise<void> {
  const input = JSON.parse(process.env.BENCH_SERVE ?? '{}') as PalServeInput;
  const t = await startTestServer({
    dataDir: input.dataDir, nodeId: input.nodeId, publicUrl: input.publicUrl,
    databaseUrl: input.databaseUrl, databaseSchema: input.schema, redisUrl: REDIS_URL, redisPrefix: input.prefix,
    ...(input.unprepared ? { databasePreparedStatements: false } : {}),
    // The production logger (pino at `info`, asynchronous, on stdout — a file here), not the harness's silent one.
    logger: undefined,
    // Each task costs an agent 4 frames: the per-connection frame limit (100/s) would close the agents
    // long before the servers saturate. Still checked on every frame, never reached.
    wsMessageRate: 1_000_000, wsMessageBurst: 1_000_000,
    // Tokens outlive a long run.
    accessTokenTtl: 4 * 3600,
  });
  const ready: PalReady = { url: t.url };
  if (input.setup) {
    await createAdmin(t);
    ready.agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    ready.clientToken = (await apiClient(t, 'dispatch-nodes bench')).token;
  }
  answerAsks(() => t.close());
  // The benchmark gone (crashed or killed), this node goes too.
  process.on('disconnect', () => void t.close().finally(() => process.exit(0)));
  process.send!({ ready });
}

// ---- the benchmark -------------------------------------------------------------------------------------

type Target = 'palisade-1' | 'palisade-2' | 'socketio-1' | 'socketio-2';
const TARGETS: Target[] = ['socketio-1', 'palisade-1', 'socketio-2', 'palisade-2'];
interface Server { name: string; child: ChildProcess; url: string; log: string }

const SELF = new URL(import.meta.url).pathname;
const DRIVER = new URL('./dispatch-nodes.driver.ts', import.meta.url).pathname;
const SIO = new URL('./socketio.server.ts', import.meta.url).pathname;

async function start(name: string, file: string, args: string[], env: Record<string, string>, work: string): Promise<Server & { ready: PalReady }> {
  const log = join(work, `${name}.log`);
  const fd = openSync(log, 'w');
  const child = fork(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', fd, 'inherit', 'ipc'] });
  closeSync(fd);
  const ready = await nextMessage(child, (m) => (m as { ready?: PalReady }).ready);
  return { name, child, url: ready.url, log, ready };
}

async function stop(s: Server): Promise<void> {
  if (s.child.exitCode !== null) return;
  const gone = once(s.child, 'exit');
  s.child.send({ ask: 'stop' } satisfies Ask);
  await gone;
}

/** CPU seconds used so far by each process whose name is `comm`, by pid (Linux /proc; empty elsewhere). */
function procCpu(comm: string): Map<string, number> {
  const by = new Map<string, number>();
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return by;
  }
  for (const pid of pids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(')');
    if (stat.slice(stat.indexOf('(') + 1, close) !== comm) continue;
    const f = stat.slice(close + 2).split(' ');
    by.set(pid, (Number(f[11]) + Number(f[12])) / 100);
  }
  return by;
}

/** CPU seconds the processes in `b` used since `a` (a process that exited in between is not counted; one started since counts whole). */
function cpuSince(a: Map<string, number>, b: Map<string, number>): number {
  let s = 0;
  for (const [pid, v] of b) s += v - (a.get(pid) ?? 0);
  return s;
}

/**
 * The floor under the figures: latency (ms, p50 and p99) of a one-row INSERT committed on its own in
 * PostgreSQL (what each of Palisade's state changes waits for: a WAL flush with the server's
 * `synchronous_commit`) and of a Redis PING, each done one at a time, 200 times.
 */
async function probe(databaseUrl: string, schema: string): Promise<{ commit: [number, number]; ping: [number, number]; settings: string; autovacuum: boolean }> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  const shown = new Map<string, string>();
  for (const k of ['server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'autovacuum']) shown.set(k, String((await c.query<Record<string, string>>(`SHOW ${k}`)).rows[0]![k]));
  const settings = [...shown].map(([k, v]) => `${k} = ${v}`).join(', ');
  await c.query(`CREATE TABLE IF NOT EXISTS ${schema}.bench_commit_probe (n integer)`);
  const times = async (n: number, f: (i: number) => Promise<unknown>): Promise<[number, number]> => {
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await f(i);
      xs.push(performance.now() - t);
    }
    xs.sort((x, y) => x - y);
    return [xs[Math.floor(n / 2)]!, xs[Math.floor(n * 0.99)]!];
  };
  const commit = await times(200, (i) => c.query(`INSERT INTO ${schema}.bench_commit_probe VALUES ($1)`, [i]));
  await c.query(`DROP TABLE ${schema}.bench_commit_probe`);
  await c.end();
  const r = new Redis(REDIS_URL);
  const ping = await times(200, () => r.ping());
  r.disconnect();
  return { commit, ping, settings, autovacuum: shown.get('autovacuum') !== 'off' };
}

interface Snapshot { servers: number[]; busy: number; redis: Map<string, number>; pg: Map<string, number>; cmds: Map<string, number> }

interface Measured extends DriverResult {
  /** CPU of the target's server processes per task, µs. */
  serverUs: number;
  redisUs: number;
  /** Redis commands per task (all clients of the server: others' commands count too), and the most frequent. */
  cmds: number;
  topCmds: string;
  pgUs: number;
  /** Cores used over the window by everything but the four servers, the driver, Redis and PostgreSQL. */
  otherCpu: number;
}

async function main(): Promise<void> {
  const AGENTS = Number(values.agents);
  const CALLERS = values.concurrency ? values.concurrency.split(',').map(Number) : [];
  const RATES = values.rates ? values.rates.split(',').map(Number) : [];
  const LEVELS: Level[] = [...CALLERS.map((callers) => ({ callers })), ...RATES.map((rate) => ({ rate }))];
  const SECONDS = Number(values.seconds);
  const WARMUP = Number(values.warmup);
  const ROUNDS = Number(values.rounds);
  if (!Number.isInteger(AGENTS) || AGENTS < 1) throw new Error('--agents takes a positive integer');
  if (CALLERS.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('--concurrency takes positive integers, comma-separated');
  if (RATES.some((r) => !(r > 0) || r > 100_000)) throw new Error('--rates takes positive numbers of tasks per second (at most 100000), comma-separated');
  if (LEVELS.length === 0) throw new Error('nothing to measure: give --concurrency or --rates');
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes a positive integer');
  if (!(SECONDS > 0) || !(WARMUP >= 0)) throw new Error('--seconds takes a positive number, --warmup a number ≥ 0');
  if ((await postgresSkip('dispatch-nodes benchmark')) || (await redisSkip('dispatch-nodes benchmark'))) throw new Error('the benchmark needs PostgreSQL and Redis');

  const load = loadavg().map((x) => x.toFixed(2)).join(', ');
  const work = mkdtempSync(join(tmpdir(), 'palisade-dispatch-nodes-'));
  const tls = ensureDevTls(join(work, 'tls'));
  const schema = `palisade_bench_${process.pid}`;
  if (values['async-commit'] && values.write) throw new Error('--async-commit is a diagnostic: its figures are not written to the docs');
  if (PROFILE_DIR && values.write) throw new Error('--cpu-prof is a diagnostic (profiling slows the nodes): its figures are not written to the docs');
  if (values.unprepared && values.write) throw new Error('--unprepared is a diagnostic: its figures are not written to the docs');
  // The diagnostic's database: its own, so the setting touches nobody else's connections.
  const asyncDb = values['async-commit'] ? `palisade_bench_async_${process.pid}` : undefined;
  if (asyncDb) await admin(`CREATE DATABASE ${asyncDb}`, `ALTER DATABASE ${asyncDb} SET synchronous_commit = off`);
  const databaseUrl = asyncDb ? Object.assign(new URL(POSTGRES_URL), { pathname: `/${asyncDb}` }).href : POSTGRES_URL;
  const prefix = testPrefix();
  const channel = `siobench-${randomBytes(6).toString('hex')}`;
  const dataDir = (n: string) => {
    const d = join(work, n);
    mkdirSync(d);
    cpSync(join(work, 'tls'), join(d, 'tls'), { recursive: true });
    return d;
  };
  process.stderr.write(`dispatch-nodes benchmark: ${AGENTS} agents, levels ${LEVELS.map(levelLabel).join(', ')}, ${ROUNDS} rounds × 4 targets, ${SECONDS} s timed after ${WARMUP} s warm-up; load average ${load}\n`);

  const servers: Server[] = [];
  try {
    const pa = await start('palisade-a', SELF, ['--serve', 'palisade'], { BENCH_SERVE: JSON.stringify({ databaseUrl, dataDir: dataDir('a'), nodeId: 'node-a', schema, prefix, setup: true, unprepared: values.unprepared } satisfies PalServeInput) }, work);
    servers.push(pa);
    const pb = await start('palisade-b', SELF, ['--serve', 'palisade'], { BENCH_SERVE: JSON.stringify({ databaseUrl, dataDir: dataDir('b'), nodeId: 'node-b', schema, prefix, publicUrl: pa.url, setup: false, unprepared: values.unprepared } satisfies PalServeInput) }, work);
    servers.push(pb);
    const sioInput: SioServeInput = { key: tls.key, cert: tls.cert, redisUrl: REDIS_URL, channel, agents: AGENTS, timeoutMs: 5000 };
    const sa = await start('socketio-a', SIO, [], { BENCH_SIO: JSON.stringify(sioInput) }, work);
    servers.push(sa);
    const sb = await start('socketio-b', SIO, [], { BENCH_SIO: JSON.stringify(sioInput) }, work);
    servers.push(sb);
    const ends: Record<Target, { callers: Server; agents: Server; own: Server[] }> = {
      'palisade-1': { callers: pa, agents: pa, own: [pa, pb] },
      'palisade-2': { callers: pa, agents: pb, own: [pa, pb] },
      'socketio-1': { callers: sa, agents: sa, own: [sa, sb] },
      'socketio-2': { callers: sa, agents: sb, own: [sa, sb] },
    };

    const stats = new Redis(REDIS_URL);
    const snapshot = async (): Promise<Snapshot> => {
      const busy = machineBusy();
      const redis = procCpu('redis-server');
      const pg = procCpu('postgres');
      const [cmds, ...cpus] = await Promise.all([redisCommands(stats), ...servers.map((s) => ask(s.child, { ask: 'cpu' } satisfies Ask, (m) => (m as { cpu?: NodeJS.CpuUsage }).cpu))]);
      return { servers: cpus.map((c) => (c!.user + c!.system) / 1e6), busy, redis, pg, cmds };
    };

    const measure = async (target: Target, level: Level): Promise<Measured> => {
      // Four row versions per task: with autovacuum off (this machine's PostgreSQL), dead ones pile
      // up and every later window pays for them. Vacuumed by hand, untimed, as autovacuum would.
      if (vacuumByHand && target.startsWith('palisade')) await vacuum(databaseUrl, schema);
      const e = ends[target];
      const input: DriverInput = {
        kind: target.startsWith('palisade') ? 'palisade' : 'socketio', callerUrl: e.callers.url, agentUrl: e.agents.url, ca: tls.ca!,
        agentToken: pa.ready.agentToken, clientToken: pa.ready.clientToken!, instancePrefix: `bench-${target}`, agents: AGENTS,
        concurrency: level.callers ?? OPEN_CONNECTIONS, ...(level.rate === undefined ? {} : { rate: level.rate }),
        site: SITE, body: BODY, warmupSeconds: WARMUP, seconds: SECONDS,
      };
      const driver = fork(DRIVER, [], { env: { ...process.env, BENCH_DRIVER: JSON.stringify(input) }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
      let out = '';
      driver.stdout!.on('data', (d: Buffer) => (out += d));
      const snaps: Promise<Snapshot>[] = [];
      const profiled = PROFILE_DIR && target.startsWith('palisade') ? [pa, pb] : [];
      const profiles: Promise<string>[] = [];
      driver.on('message', (m: { phase: string }) => {
        if (m.phase === 'window-open' || m.phase === 'window-closed') snaps.push(snapshot());
        if (m.phase === 'window-open') for (const s of profiled) s.child.send({ ask: 'profile-start' } satisfies Ask);
        if (m.phase === 'window-closed') {
          for (const s of profiled) {
            const file = join(PROFILE_DIR!, `${target}-${levelName(level).replace('/', 'per')}-${s.name}-${profileCount++}.cpuprofile`);
            profiles.push(ask(s.child, { ask: 'profile-stop', file } satisfies Ask, (x) => (x as { profiled?: string }).profiled));
          }
        }
      });
      const [code] = (await once(driver, 'exit')) as [number | null];
      if (code !== 0) throw new Error(`${target} driver failed (exit ${code})`);
      for (const [i, file] of (await Promise.all(profiles)).entries()) {
        const k = `${target}@${levelName(level)} ${profiled[i]!.name}`;
        const t = hot.get(k) ?? { areas: new Map<string, number>(), fns: new Map<string, number>(), tasks: 0 };
        addProfile(file, t.areas, t.fns);
        hot.set(k, t);
      }
      const [a, b] = await Promise.all(snaps);
      const r = JSON.parse(out) as DriverResult;
      const tasks = r.requests + r.errors;
      for (const s of profiled) hot.get(`${target}@${levelName(level)} ${s.name}`)!.tasks += tasks;
      const own = e.own.map((s) => servers.indexOf(s));
      const serverCpu = own.reduce((n, i) => n + b!.servers[i]! - a!.servers[i]!, 0);
      const allServers = b!.servers.reduce((n, x, i) => n + x - a!.servers[i]!, 0);
      const redis = cpuSince(a!.redis, b!.redis);
      const pg = cpuSince(a!.pg, b!.pg);
      const otherCpu = (b!.busy - a!.busy - allServers - redis - pg) / SECONDS - r.driverCpu;
      const cmdDelta = [...b!.cmds].map(([k, v]) => [k, (v - (a!.cmds.get(k) ?? 0)) / tasks] as const).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]);
      return {
        ...r, serverUs: (serverCpu * 1e6) / tasks, redisUs: (redis * 1e6) / tasks, pgUs: (pg * 1e6) / tasks, otherCpu,
        cmds: cmdDelta.reduce((n, [, v]) => n + v, 0), topCmds: cmdDelta.filter(([, v]) => v >= 0.05).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '),
      };
    };

    const probeStart = await probe(databaseUrl, schema);
    const vacuumByHand = !probeStart.autovacuum;
    process.stderr.write(`  PostgreSQL one-row commit p50 ${probeStart.commit[0].toFixed(2)} ms, p99 ${probeStart.commit[1].toFixed(2)} ms (${probeStart.settings}); Redis PING p50 ${probeStart.ping[0].toFixed(2)} ms, p99 ${probeStart.ping[1].toFixed(2)} ms\n`);
    const results = new Map<string, Measured[]>();
    const key = (t: Target, l: Level) => `${t}@${levelName(l)}`;
    for (const c of LEVELS) {
      for (let r = 1; r <= ROUNDS; r++) {
        const order = r % 2 === 1 ? TARGETS : [...TARGETS].reverse();
        for (const t of order) {
          const m = await measure(t, c);
          if (!results.has(key(t, c))) results.set(key(t, c), []);
          results.get(key(t, c))!.push(m);
          process.stderr.write(`  ${levelName(c).padStart(6)} round ${r} ${t.padEnd(10)}: ${Math.round(m.rps)} tasks/s, p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms, p99.9 ${m.p999.toFixed(2)} ms; CPU µs/task: servers ${m.serverUs.toFixed(0)}, Redis ${m.redisUs.toFixed(0)}, PostgreSQL ${m.pgUs.toFixed(0)}; driver ${pct(m.driverCpu)}, other ${pct(m.otherCpu)}; Redis commands/task ${m.cmds.toFixed(1)} (${m.topCmds})${m.errors ? `; ${m.errors} failed: ${m.firstError}` : ''}\n`);
        }
      }
    }

    stats.disconnect();
    if (PROFILE_DIR) process.stderr.write(hotspots());
    const probeEnd = await probe(databaseUrl, schema);
    const endLoad = loadavg().map((x) => x.toFixed(2)).join(', ');
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const summary = (t: Target, c: Level) => {
      const ms = results.get(key(t, c))!;
      const m = (f: (x: Measured) => number) => med(ms.map(f));
      return {
        rps: m((x) => x.rps), p50: m((x) => x.p50), p99: m((x) => x.p99), p999: m((x) => x.p999), serverUs: m((x) => x.serverUs), redisUs: m((x) => x.redisUs),
        pgUs: m((x) => x.pgUs), cmds: m((x) => x.cmds), driverCpu: m((x) => x.driverCpu), otherCpu: m((x) => x.otherCpu), errors: ms.reduce((n, x) => n + x.errors, 0), answerBytes: ms[0]!.answerBytes,
      };
    };
    const LABEL: Record<Target, string> = {
      'palisade-1': 'Palisade, one node', 'palisade-2': 'Palisade, two nodes (callers → A, agents on B)',
      'socketio-1': 'Socket.IO + Redis adapter, one server', 'socketio-2': 'Socket.IO + Redis adapter, two servers (callers → A, agents on B)',
    };
    const order: Target[] = ['palisade-1', 'socketio-1', 'palisade-2', 'socketio-2'];
    const mainRows: string[][] = [];
    const ratioRows: string[][] = [];
    const budgetLines: string[] = [];
    const roundRows: string[][] = [];
    for (const c of LEVELS) {
      for (const t of order) {
        const s = summary(t, c);
        mainRows.push([levelLabel(c), LABEL[t], String(Math.round(s.rps)), s.p50.toFixed(2), s.p99.toFixed(2), s.p999.toFixed(2), s.serverUs.toFixed(0), s.redisUs.toFixed(0), s.pgUs.toFixed(0), s.cmds.toFixed(1), pct(s.otherCpu), String(s.errors)]);
      }
      for (const n of ['1', '2'] as const) {
        const pal = results.get(key(`palisade-${n}`, c))!;
        const sio = results.get(key(`socketio-${n}`, c))!;
        const tput = pal.map((p, i) => p.rps / sio[i]!.rps);
        const p99 = pal.map((p, i) => p.p99 / sio[i]!.p99);
        const cpu = pal.map((p, i) => (p.serverUs + p.redisUs + p.pgUs) / (sio[i]!.serverUs + sio[i]!.redisUs + sio[i]!.pgUs));
        ratioRows.push([levelLabel(c), n === '1' ? 'one node' : 'two nodes', `${med(tput).toFixed(2)}× (${tput.map((x) => x.toFixed(2)).join(', ')})`,
          `${med(p99).toFixed(2)}× (${p99.map((x) => x.toFixed(2)).join(', ')})`, `${med(cpu).toFixed(2)}×`]);
      }
      const p2 = summary('palisade-2', c);
      budgetLines.push(`- ${levelLabel(c)}: p99 across nodes **${p2.p99.toFixed(2)} ms** — ${p2.p99 <= BUDGET_P99_MS ? 'within' : '**over**'} the ${BUDGET_P99_MS} ms budget (rounds: ${results.get(key('palisade-2', c))!.map((x) => x.p99.toFixed(2)).join(', ')} ms; Socket.IO across servers: ${summary('socketio-2', c).p99.toFixed(2)} ms)`);
      for (let r = 0; r < ROUNDS; r++) {
        roundRows.push([levelLabel(c), String(r + 1), ...order.map((t) => {
          const m = results.get(key(t, c))![r]!;
          return `${Math.round(m.rps)} · ${m.p99.toFixed(2)}`;
        }), pct(results.get(key('palisade-2', c))![r]!.otherCpu)]);
      }
    }
    const pal1 = summary('palisade-1', LEVELS.at(-1)!);
    const sio1 = summary('socketio-1', LEVELS.at(-1)!);
    const cmd = `node bench/dispatch-nodes.bench.ts --agents ${AGENTS} ${CALLERS.length ? ` --concurrency ${CALLERS.join(',')}` : ''}${RATES.length ? ` --rates ${RATES.join(',')}` : ''} --seconds ${SECONDS} --warmup ${WARMUP} --rounds ${ROUNDS}`;
    const out = `- command: \`${cmd}\`
- ${machine()}; load average (1, 5, 15 min) at start ${load}, at end ${endLoad}${values.note ? `\n- **${values.note}**` : ''}
- a task: \`POST /api/v1/tasks\` with \`Prefer: wait=5\` and a body of ${Buffer.byteLength(BODY)} bytes (a site and two steps), answered with the finished task (${pal1.answerBytes} bytes from Palisade, ${sio1.answerBytes} from Socket.IO); C callers in a closed loop, each with one request in flight on its own kept-alive HTTPS (TLS 1.3) connection${RATES.length ? `, or (open loop) a task submitted every 1/R s whatever the answers, on up to ${OPEN_CONNECTIONS} such connections, each round trip timed from when its task was due (a wait for a connection counts)` : ''}; ${AGENTS} synthetic agents that answer at once; ${WARMUP} s warm-up, then ${SECONDS} s timed, every round trip timed at the caller
- Palisade: two nodes in processes of their own, sharing PostgreSQL (127.0.0.1, schema of its own) and Redis (presence, bus, hot state); production logger at \`info\` to a file; HTTP rate limits ×1000 and the per-connection agent frame limit raised to 10⁶/s (both still checked on every request and frame). *One node*: callers and agents on node A (the same cluster configuration; no bus hop to reach the agent). *Two nodes*: callers on A, agents on B — A finds the agent and its node through Redis presence (subscribing to \`task:<id>\` meanwhile), stores the task already dispatched to that agent (one commit) and publishes a dispatch on \`node:B\` carrying the stored task; B sends it over the agent's WebSocket without a store write of its own; the agent answers with accept, two progress and a result frame, each moved or published by B; A's waiting request gets the end event from the bus
- Socket.IO ${pkgVersion('socket.io')} with \`@socket.io/redis-adapter\` ${pkgVersion('@socket.io/redis-adapter')} (ioredis, \`publishOnSpecificResponseChannel: true\`): two servers in processes of their own, Fastify HTTPS route + Socket.IO on the same port and certificate (\`bench/socketio.server.ts\`); agents are socket.io-client sockets (WebSocket transport) each in a room \`agent:<id>\`; the route picks an agent at random and routes with \`io.to(room).timeout(5000).emitWithAck('task', frame)\` — the adapter publishes the request on Redis, every server answers with its client count, the agent's server publishes the acknowledgement, and the asking server asks Redis for the number of servers (\`PUBSUB NUMSUB\`); the agent answers with one acknowledgement carrying a result of the same shape as the synthetic agent's result frame. *One server*: callers and agents on A (the adapter still goes through Redis); *two servers*: agents on B
- the same load process code (\`bench/dispatch-nodes.driver.ts\`) drives both, with the same headers (Socket.IO's route reads no token); all four servers stay up for the whole run; each round measures the four targets, in an order reversed every other round; figures are medians over ${ROUNDS} rounds
- the floor, measured before and after the rounds: a one-row INSERT committed on its own in PostgreSQL (${probeStart.settings}) took p50 ${probeStart.commit[0].toFixed(2)} / ${probeEnd.commit[0].toFixed(2)} ms, p99 ${probeStart.commit[1].toFixed(2)} / ${probeEnd.commit[1].toFixed(2)} ms; a Redis PING p50 ${probeStart.ping[0].toFixed(2)} / ${probeEnd.ping[0].toFixed(2)} ms, p99 ${probeStart.ping[1].toFixed(2)} / ${probeEnd.ping[1].toFixed(2)} ms. Palisade waits for two such commits in a row per task (stored already dispatched to its agent, finished; a task still running ${DEFAULTS.runningRecordMs} ms after its accept is also written as running, without waiting for the WAL flush), Socket.IO for none${vacuumByHand ? '\n- this PostgreSQL runs with `autovacuum = off` (the machine\'s setting): Palisade\'s tasks table is vacuumed by hand (`VACUUM (ANALYZE)`, untimed) before each Palisade window, standing in for the autovacuum a production server runs — each task leaves four row versions, and left to pile up they made PostgreSQL\'s CPU per task 4–5× larger by the 16-caller windows (measured 2026-12-07: 2,090–2,598 µs against 400–500 when the 16-caller windows ran first)' : ''}
- CPU per task (µs): the target's two server processes, and all of Redis's and PostgreSQL's processes (from \`/proc\`: other clients' work on them counts too), over the timed window; Redis commands per task from \`INFO commandstats\` (likewise); "other" is what every other process on the machine used (cores) — the noise under which it was measured. 2 cores hold both servers, Redis, PostgreSQL and the load process, so under saturating load latency is mostly queueing for a core

${table(['load', 'target', 'tasks/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'server CPU µs/task', 'Redis µs/task', 'PostgreSQL µs/task', 'Redis commands/task', 'other CPU', 'failed'], mainRows)}

Budget (issue 5): p99 ≤ ${BUDGET_P99_MS} ms across nodes.

${budgetLines.join('\n')}

Palisade / Socket.IO, median of the rounds' ratios (each round's in brackets):

${table(['load', 'nodes', 'throughput', 'p99', 'CPU per task (servers + Redis + PostgreSQL)'], ratioRows)}

Redis commands per task by command, at ${levelLabel(LEVELS.at(-1)!)} (first round; \`INFO commandstats\`, so commands of other clients of this Redis count too):

${order.map((t) => `- ${LABEL[t]}: ${results.get(key(t, LEVELS.at(-1)!))![0]!.topCmds}`).join('\n')}

What each does per task that the other does not:

- Palisade, per task (from the code of \`tasks/service.ts\` and \`api/routes.ts\`): verifies the caller's bearer token (ES256 signature, audience, expiry, revocation list) and scope; one rate-limit check in Redis after the token (the address's and the client's buckets in one Lua script); validates the submission (schema, code-step refusal, site and URL policy); reads the agents' presence in Redis (on two nodes; one Lua script: the user's set and its entries) while SUBSCRIBing to \`task:<id>\` for the waiting request (on one node, beside the insert instead; UNSUBSCRIBEd at the end, with other ended tasks' topics in one command every 20 ms); inserts the task already dispatched to the agent chosen from presence (a commit; the same statement counts the caller's unfinished tasks against their cap), and emits an audit event (\`task.submit\`) through the logger; arms a deadline timer; on two nodes PUBLISHes the dispatch on \`node:B\`; the dispatching node sends it to the agent as stored and moves it by compare-and-set once (succeeded, waited for before the next frame of that agent is handled; a task still running ${DEFAULTS.runningRecordMs} ms after its accept is also written as running, without waiting for the WAL flush — none does here), arms an accept timer, validates each of the agent's four frames against the protocol schema and its frame-rate limit, and publishes five events (three state events — dispatched, running, end — and two progress), those before the end in one PUBLISH just before the end is stored, when the task ends within ${DEFAULTS.taskEventBatchMs} ms of its first (\`taskEventBatchMs\`), then the end; node A reads nothing back (the waiting request hears the end event); every event goes into a bounded per-task history. What was acknowledged survives a node's restart or loss.
- Socket.IO: none of that — no authentication, no validation beyond JSON parsing, no store, no audit, no timers beyond the ack timeout; one acknowledgement per task instead of four agent frames. What it does that Palisade does not: a \`PUBSUB NUMSUB\` round trip to Redis per request, and a request broadcast to every server (each answers with a client count).

Every round (tasks/s · p99 ms):

${table(['load', 'round', ...order.map((t) => t), 'other CPU (Palisade two nodes)'], roundRows)}
`;
    process.stdout.write(`\n${out}\n`);
    if (values.write) writeSection('dispatch-nodes', 'Task dispatch across nodes: Palisade against Socket.IO + Redis adapter', out);
  } finally {
    for (const s of servers.reverse()) await stop(s).catch(() => undefined);
    if (asyncDb) await admin(`DROP DATABASE IF EXISTS ${asyncDb} WITH (FORCE)`).catch(() => undefined);
    else await dropSchema(schema).catch(() => undefined);
    await dropPrefix(prefix).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

/** Calls so far of each Redis command (`INFO commandstats`), by command. */
async function redisCommands(r: Redis): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  for (const m of (await r.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) by.set(m[1]!, Number(m[2]));
  return by;
}

/** Runs statements, one after another, on one connection to `databaseUrl`. */
async function runSql(databaseUrl: string, ...sql: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    for (const q of sql) await c.query(q);
  } finally {
    await c.end();
  }
}
/** Runs statements on the test database. */
const admin = (...sql: string[]) => runSql(POSTGRES_URL, ...sql);
/** `VACUUM (ANALYZE)` of Palisade's tasks table in the schema. */
const vacuum = (databaseUrl: string, schema: string) => runSql(databaseUrl, `VACUUM (ANALYZE) ${schema}.tasks`);

/** A CPU fraction as a percentage; the machine-wide figure can dip a little below 0 (clock ticks), shown as 0. */
function pct(x: number): string {
  return Number.isNaN(x) ? 'n/a' : `${Math.max(0, Math.round(x * 100))}%`;
}

function pkgVersion(name: string): string {
  return (JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string }).version;
}

if (values.serve === 'palisade') await servePalisade();
else if (values.serve !== undefined) throw new Error('--serve takes palisade');
else await main();
