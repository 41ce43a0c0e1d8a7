/**
 * Idle agent connections: how many authenticated, idle agent WebSocket connections Palisade holds on
 * this one machine, and what each costs in server memory (RSS), against bare `ws` servers holding
 * the same number in the same run.
 *
 * One process may hold ~19,000 sockets here (20,000 open files, not raisable), so both sides run as
 * many processes sharing one port with SO_REUSEPORT: Palisade as `palisade-server start --workers N
 * --redis …` (the real CLI; hot state, rate limits and presence in Redis, SQLite in a fresh data
 * folder), the baseline as N `bench/ws-bare.server.ts`. The load comes from as many
 * `bench/connections.driver.ts` processes, each from its own 127.x.y.z source address (one address
 * has ~28,000 ephemeral ports per destination). Every Palisade connection is a real agent: a token
 * from the device grant (signed in through the real pages), the bearer subprotocol, `hello` with its
 * own instanceId, `welcome`, then idle with the server's heartbeat (defaults: ping every 30 s,
 * presence refreshed in Redis each time).
 *
 * RSS is VmRSS from /proc/<pid>/status summed over every server process (Palisade: the workers and
 * their supervising primary), idle (started, before connecting) and loaded (every connection up,
 * then `--settle` seconds idle — at least one heartbeat round); per connection = (loaded − idle) /
 * connections; then once more after a full garbage collection in every server process (through
 * its inspector, opened with SIGUSR1), with V8's heap in use. Both sides are measured the same way.
 * With `--write`, the section of docs/BENCHMARKS.md is rewritten after every step, so a run stopped
 * part-way leaves the steps it measured.
 *
 *   node bench/connections.bench.ts [--steps 10000,50000,200000,500000] [--per-process 18000]
 *     [--settle 60] [--concurrency 32] [--tls] [--heartbeat 30] [--database URL [--database-pool 1]] [--write]
 */
import { parseArgs } from 'node:util';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Agent, fetch as ufetch } from 'undici';
import WebSocket from 'ws';
import { Redis } from 'ioredis';
import { createAdmin, deviceLogin, freePort, type TestServer } from '../packages/server/test/support/harness.ts';
import { countPrefix, dropPrefix, REDIS_URL } from '../packages/server/test/support/redis.ts';
import { dropSchema } from '../packages/server/test/support/postgres.ts';
import { machine, nextMessage, table, writeSection } from './lib.ts';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '10000,50000,200000,500000' },
    'per-process': { type: 'string', default: '18000' },
    settle: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '32' },
    tls: { type: 'boolean', default: false },
    only: { type: 'string' },
    'bare-first': { type: 'boolean', default: false },
    supervisors: { type: 'string', default: '1' },
    /** Extra Node options for every server process, both sides (e.g. --max-old-space-size=384). */
    'server-node-options': { type: 'string', default: '' },
    deadline: { type: 'string' },
    /** PostgreSQL for Palisade's durable store instead of SQLite (a fresh schema, dropped afterwards), and its pool per worker. */
    database: { type: 'string' },
    /** Seconds between pings, both sides (Palisade's --heartbeat; the bare servers' interval). Default: Palisade's default, 30. */
    heartbeat: { type: 'string', default: '30' },
    'database-pool': { type: 'string', default: '1' },
    add: { type: 'boolean', default: false },
    write: { type: 'boolean', default: false },
    /** A folder: one Palisade worker's CPU profile over the idle period is written there (.cpuprofile). */
    'profile-idle': { type: 'string' },
  },
});
const STEPS = values.steps.split(',').map(Number);
const PER_PROCESS = Number(values['per-process']);
const SETTLE_S = Number(values.settle);
/** Source addresses per load process. */
const ADDRESSES = 4;
const CONCURRENCY = Number(values.concurrency);
const TLS = values.tls;
const SUPERVISORS = Number(values.supervisors);
const ONLY = values.only as 'bare' | 'palisade' | undefined;
/** --deadline HH:MM (UTC; the next such time — tomorrow's if today's has passed): no new Palisade connection is started after it; what is open then is measured. */
const DEADLINE = values.deadline === undefined ? undefined : (() => {
  const m = /^(\d\d):(\d\d)$/.exec(values.deadline);
  if (!m) throw new Error('--deadline takes HH:MM (UTC)');
  const d = new Date();
  d.setUTCHours(Number(m[1]), Number(m[2]), 0, 0);
  if (d.getTime() <= Date.now()) d.setUTCDate(d.getUTCDate() + 1);
  return d.getTime();
})();
const COMMAND = `node bench/connections.bench.ts ${process.argv.slice(2).join(' ')}`;
const RUN_AT = new Date().toISOString().slice(0, 16).replace('T', ' ');
if (STEPS.some((n) => !Number.isInteger(n) || n < 1) || !(PER_PROCESS >= 1 && PER_PROCESS <= 19_000) || !(SETTLE_S >= 0) || !(CONCURRENCY >= 1)) {
  throw new Error('--steps takes whole numbers, --per-process 1–19000, --settle seconds, --concurrency ≥ 1');
}
const CLI = new URL('../packages/server/src/cli.ts', import.meta.url).pathname;
const DRIVER = new URL('./connections.driver.ts', import.meta.url).pathname;
const BARE = new URL('./ws-bare.server.ts', import.meta.url).pathname;
const MIB = 1024 * 1024;
const MIN_FREE_BYTES = 2 * 1024 * MIB;
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ── every process this benchmark starts is killed on the way out, whatever happens ──────────────
const children = new Set<ChildProcess>();
/** Process groups (Palisade's primary and its workers) to kill as a whole. */
const groups = new Set<number>();
function killAll(): void {
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch { /* gone already */ }
  }
  groups.clear();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => { killAll(); process.exit(130); });
process.on('uncaughtException', (e) => { log(`failed: ${e.stack ?? e}`); killAll(); process.exit(1); });
process.on('unhandledRejection', (e) => { log(`failed: ${(e as Error).stack ?? e}`); killAll(); process.exit(1); });

// ── measurement helpers ──────────────────────────────────────────────────────────────────────
function meminfo(): { total: number; available: number } {
  const text = readFileSync('/proc/meminfo', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text)![1]) * 1024;
  return { total: kb('MemTotal'), available: kb('MemAvailable') };
}
/** Stops the benchmark (and every process it started) when the machine's free memory falls under 2 GB. */
let lowestAvailable = Number.POSITIVE_INFINITY;
/** The drivers of the connect phase under way: under 3.5 GB available they are told to stop opening connections. */
let connecting: ChildProcess[] = [];
let haltedForMemory = false;
const watchdog = setInterval(() => {
  const { available } = meminfo();
  lowestAvailable = Math.min(lowestAvailable, available);
  if (available < MIN_FREE_BYTES + 1536 * MIB && connecting.length > 0 && !haltedForMemory) {
    haltedForMemory = true;
    log(`available memory ${Math.round(available / MIB)} MiB is under 3.5 GiB: no new connections; measuring what is open`);
    for (const d of connecting) d.send({ ask: 'halt' });
  }
  if (available < MIN_FREE_BYTES) {
    log(`stopping: available memory ${Math.round(available / MIB)} MiB is under 2 GiB`);
    killAll();
    process.exit(3);
  }
}, 1000);
watchdog.unref();

function rssOf(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
  } catch {
    return 0;
  }
}
/** CPU time a process has used so far, user + system, seconds (/proc/<pid>/stat, clock ticks of 1/100 s). */
function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
/** Open sockets of a process (its connections, plus a few of its own: listener, Redis, …). */
function socketsOf(pid: number): number {
  let n = 0;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
      } catch { /* closed meanwhile */ }
    }
  } catch { /* gone */ }
  return n;
}
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
async function redisMemory(redis: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
}
// ── a full garbage collection in another process, through its inspector ───────────────────────
// Every server process runs with NODE_OPTIONS=--inspect-port=127.0.0.1:0: nothing listens until it
// gets SIGUSR1 (Node's switch for the inspector), which opens the inspector on a fresh loopback port
// and prints its URL to stderr. Used once per process, after the loaded measurement: a full GC
// (HeapProfiler.collectGarbage), then that process's V8 heap in use (process.memoryUsage()).
const INSPECT_ENV = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --inspect-port=127.0.0.1:0 ${values['server-node-options']}`.trim() };
class InspectorUrls {
  readonly #seen: string[] = [];
  readonly #waiters: ((url: string) => void)[] = [];
  #partial = '';
  watch(stream: Readable): void {
    stream.on('data', (d: Buffer) => {
      const lines = (this.#partial + d.toString()).split('\n');
      this.#partial = lines.pop()!;
      for (const l of lines) {
        const m = /Debugger listening on (ws:\/\/\S+)/.exec(l);
        if (!m) continue;
        const waiter = this.#waiters.shift();
        if (waiter) waiter(m[1]!);
        else this.#seen.push(m[1]!);
      }
    });
  }
  next(): Promise<string> {
    const u = this.#seen.shift();
    return u ? Promise.resolve(u) : new Promise((resolve) => this.#waiters.push(resolve));
  }
}
/** Calls inspector methods one after another in one session; a number in the list is a pause (ms). */
async function inspect(url: string, methods: ([string, Record<string, unknown>] | number)[]): Promise<unknown[]> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const out: unknown[] = [];
  for (const [i, step] of methods.entries()) {
    if (typeof step === 'number') {
      await sleep(step);
      continue;
    }
    const [method, params] = step;
    out.push(await new Promise((resolve, reject) => {
      const onMessage = (d: Buffer) => {
        const m = JSON.parse(String(d)) as { id?: number; result?: unknown; error?: unknown };
        if (m.id !== i + 1) return;
        ws.off('message', onMessage);
        if (m.error) reject(new Error(JSON.stringify(m.error)));
        else resolve(m.result);
      };
      ws.on('message', onMessage);
      ws.send(JSON.stringify({ id: i + 1, method, params }));
    }));
  }
  ws.close();
  return out;
}
const inspectorOf = new Map<number, string>();
async function inspectorUrl(pid: number, urls: InspectorUrls): Promise<string> {
  let url = inspectorOf.get(pid);
  if (!url) {
    process.kill(pid, 'SIGUSR1');
    url = await Promise.race([urls.next(), sleep(20_000).then(() => undefined)]);
    if (!url) throw new Error(`process ${pid} opened no inspector`);
    inspectorOf.set(pid, url);
  }
  return url;
}
/** Full GC in each process (one at a time; with `collect` false, none); returns the summed V8 heap in use after it. */
async function collectGarbage(pids: number[], urls: InspectorUrls, collect = true): Promise<number> {
  let heap = 0;
  for (const pid of pids) {
    const url = await inspectorUrl(pid, urls);
    const read: [string, Record<string, unknown>] = ['Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true }];
    const mem = (await inspect(url, collect ? [['HeapProfiler.collectGarbage', {}], read] : [read])).at(-1) as { result: { value: string } };
    heap += (JSON.parse(mem.result.value) as { heapUsed: number }).heapUsed;
  }
  return heap;
}

// ── the load side ────────────────────────────────────────────────────────────────────────────
let addressBlock = 0;
interface LoadResult { open: number; failed: number; reasons: Record<string, number>; retries: Record<string, number>; seconds: number; drivers: ChildProcess[] }
/** Opens `count` connections from ceil(count / PER_PROCESS) driver processes, each from fresh source addresses; none started after `deadline`. */
async function load(port: number, count: number, token: string, ca?: string, deadline?: number): Promise<LoadResult> {
  const n = Math.ceil(count / PER_PROCESS);
  addressBlock++;
  const drivers: ChildProcess[] = [];
  const started = performance.now();
  const halt = setTimeout(() => {
    log(`deadline ${values.deadline} UTC: no new connections`);
    for (const d of drivers) d.send({ ask: 'halt' });
  }, deadline === undefined ? 2 ** 31 - 1 : Math.max(0, deadline - Date.now()));
  connecting = drivers;
  const results = await Promise.all(Array.from({ length: n }, (_, i) => {
    const share = Math.floor(count / n) + (i < count % n ? 1 : 0);
    // 127.<block>.<driver>.1 … .<ADDRESSES>: each address has ~28,000 ephemeral ports, but a bind to
    // port 0 searches the even half first and slows to a crawl as that half fills (the 2026-12-06
    // runs stalled at ~7,200 connections per address, ~14,400 per driver): four addresses keep each
    // under ~5,000 of them.
    const localAddresses = Array.from({ length: ADDRESSES }, (_, h) => `127.${10 + (addressBlock % 200)}.${i + 1}.${h + 1}`);
    const d = fork(DRIVER, [], { env: { ...process.env, BENCH_CONN: JSON.stringify({ port, count: share, localAddresses, token, concurrency: CONCURRENCY, ...(ca ? { ca } : {}) }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(d);
    drivers.push(d);
    const open = { v: 0 };
    d.on('message', (m: { progress?: { open: number } }) => {
      if (m.progress) open.v = m.progress.open;
    });
    progressOf.push(open);
    return nextMessage(d, (m) => (m as { done?: { open: number; failed: number; reasons: Record<string, number>; retries: Record<string, number> } }).done);
  }));
  clearTimeout(halt);
  connecting = [];
  const seconds = (performance.now() - started) / 1000;
  progressOf.length = 0;
  const sum = (pick: (r: (typeof results)[number]) => Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(pick(r))) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  return { open: results.reduce((a, r) => a + r.open, 0), failed: results.reduce((a, r) => a + r.failed, 0), reasons: sum((r) => r.reasons), retries: sum((r) => r.retries), seconds, drivers };
}
const progressOf: { v: number }[] = [];
const progressTimer = setInterval(() => {
  if (progressOf.length) log(`  … ${progressOf.reduce((a, p) => a + p.v, 0)} open`);
}, 10_000);
progressTimer.unref();

async function stillOpen(drivers: ChildProcess[]): Promise<{ open: number; dropped: number }> {
  const counts = await Promise.all(drivers.map((d) => {
    const answer = nextMessage(d, (m) => (m as { count?: { open: number; dropped: number } }).count);
    d.send({ ask: 'count' });
    return answer;
  }));
  return { open: counts.reduce((a, c) => a + c.open, 0), dropped: counts.reduce((a, c) => a + c.dropped, 0) };
}
async function stopDrivers(drivers: ChildProcess[]): Promise<void> {
  await Promise.all(drivers.map((d) => new Promise<void>((resolve) => {
    if (d.exitCode !== null || d.signalCode !== null) return resolve();
    d.once('exit', () => resolve());
    d.send({ ask: 'stop' });
    setTimeout(() => d.kill('SIGKILL'), 20_000).unref();
  })));
  for (const d of drivers) children.delete(d);
}

// ── one measurement ──────────────────────────────────────────────────────────────────────────
interface Row {
  server: 'bare ws' | 'Palisade';
  target: number;
  processes: number;
  open: number;
  failed: number;
  reasons: Record<string, number>;
  /** "Try again" refusals the load generator retried with backoff, by reason (absent in runs before it retried). */
  retries?: Record<string, number>;
  dropped: number;
  connectSeconds: number;
  idleRss: number;
  loadedRss: number;
  perProcessSockets: { min: number; max: number };
  redisBefore?: number;
  redisAfter?: number;
  redisKeys?: number;
  availableAfter: number;
  /** After a full GC in every server process: summed RSS and V8 heap in use. */
  gcRss: number;
  gcHeap: number;
  idleHeap: number;
  /** Cores the server processes used, summed, over the idle period (absent in runs before it was read). */
  idleCpu?: number;
  /** V8 heap in use, summed, loaded (before the full GC; absent in runs before it was read). */
  loadedHeap?: number;
  /** The run that measured it (several runs' rows can share the section: --add). */
  run: string;
}

/** Connects, lets the connections sit idle, and measures; `pids()` lists the server processes. */
async function measure(server: Row['server'], target: number, processes: number, port: number, pids: () => number[], workerPids: () => number[], urls: InspectorUrls, token: string, ca: string | undefined, extra: { redis?: Redis; prefix?: string } = {}): Promise<{ row: Row; drivers: ChildProcess[] }> {
  await sleep(3000);
  const idleHeap = await collectGarbage(workerPids(), urls);
  await sleep(2000);
  const idleRss = pids().reduce((a, p) => a + rssOf(p), 0);
  const redisBefore = extra.redis ? await redisMemory(extra.redis) : undefined;
  log(`${server}: ${processes} processes, idle RSS ${(idleRss / MIB).toFixed(0)} MiB; connecting ${target}`);
  // The deadline bounds Palisade's connect phase (the long one); the baseline always connects all.
  const l = await load(port, target, token, ca, server === 'Palisade' ? DEADLINE : undefined);
  log(`${server}: ${l.open} open, ${l.failed} failed in ${l.seconds.toFixed(1)} s (${Math.round(l.open / l.seconds)}/s)${l.failed ? ` ${JSON.stringify(l.reasons)}` : ''}${Object.keys(l.retries).length ? `; retried ${JSON.stringify(l.retries)}` : ''}; idle ${SETTLE_S} s`);
  // CPU of the server processes over the idle period (pings, presence refreshes, timers): what
  // holding connections costs when nothing happens. With --profile-idle, one worker's CPU profile too.
  const cpuBefore = pids().reduce((a, p) => a + cpuOf(p), 0);
  const idleStarted = performance.now();
  const profiled = values['profile-idle'] && server === 'Palisade' ? workerPids()[0] : undefined;
  if (profiled === undefined) await sleep(SETTLE_S * 1000);
  else {
    const stopped = (await inspect(await inspectorUrl(profiled, urls), [['Profiler.enable', {}], ['Profiler.setSamplingInterval', { interval: 1000 }], ['Profiler.start', {}], SETTLE_S * 1000, ['Profiler.stop', {}]])).at(-1);
    const file = join(values['profile-idle']!, `idle-${target}-${profiled}.cpuprofile`);
    writeFileSync(file, JSON.stringify((stopped as { profile: unknown }).profile));
    log(`${server}: worker ${profiled}'s CPU profile over the idle period written to ${file}`);
  }
  const idleCpu = (pids().reduce((a, p) => a + cpuOf(p), 0) - cpuBefore) / ((performance.now() - idleStarted) / 1000);
  const s = await stillOpen(l.drivers);
  const loadedRss = pids().reduce((a, p) => a + rssOf(p), 0);
  const socks = pids().map(socketsOf).filter((x) => x > 100);
  const row: Row = {
    server, target, processes, open: s.open, failed: l.failed, reasons: l.reasons, retries: l.retries, dropped: s.dropped, connectSeconds: l.seconds, idleRss, loadedRss,
    perProcessSockets: { min: Math.min(...socks), max: Math.max(...socks) },
    availableAfter: meminfo().available,
    gcRss: 0,
    gcHeap: 0,
    idleHeap,
    idleCpu,
    run: `${RUN_AT} UTC: \`${COMMAND}\``,
  };
  if (extra.redis) {
    row.redisBefore = redisBefore;
    row.redisAfter = await redisMemory(extra.redis);
    row.redisKeys = await countPrefix(extra.prefix!);
  }
  log(`${server}: after ${SETTLE_S} s idle ${s.open} open (${s.dropped} dropped), loaded RSS ${(loadedRss / MIB).toFixed(0)} MiB → ${((loadedRss - idleRss) / s.open / 1024).toFixed(2)} KiB/connection; idle CPU ${idleCpu.toFixed(2)} cores (${(idleCpu / s.open * 1e6).toFixed(1)} µs per connection per second); available ${(row.availableAfter / MIB).toFixed(0)} MiB`);
  row.loadedHeap = await collectGarbage(workerPids(), urls, false);
  row.gcHeap = await collectGarbage(workerPids(), urls);
  await sleep(2000);
  row.gcRss = pids().reduce((a, p) => a + rssOf(p), 0);
  const after = await stillOpen(l.drivers);
  row.open = after.open;
  row.dropped = after.dropped;
  log(`${server}: after a full GC in each: RSS ${(row.gcRss / MIB).toFixed(0)} MiB → ${((row.gcRss - idleRss) / row.open / 1024).toFixed(2)} KiB/connection; V8 heap in use ${(row.gcHeap / MIB).toFixed(0)} MiB (loaded, before it: ${((row.loadedHeap ?? 0) / MIB).toFixed(0)} MiB) (${((row.gcHeap - idleHeap) / row.open / 1024).toFixed(2)} KiB/connection); ${row.open} open`);
  return { row, drivers: l.drivers };
}

async function bareRun(target: number, processes: number, tls?: { key: string; cert: string; ca: string }): Promise<Row> {
  const port = await freePort();
  const urls = new InspectorUrls();
  const servers = await Promise.all(Array.from({ length: processes }, async () => {
    const s = fork(BARE, [], { env: { ...process.env, ...INSPECT_ENV, BENCH_BARE: JSON.stringify({ port, heartbeatMs: Number(values.heartbeat) * 1000, ...(tls ? { tls: { key: tls.key, cert: tls.cert } } : {}) }) }, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    children.add(s);
    urls.watch(s.stderr!);
    s.stderr!.on('data', (d: Buffer) => {
      const text = String(d).split('\n').filter((l) => l && !/^(Debugger |For help, see)/.test(l)).join('\n');
      if (text) process.stderr.write(`${text}\n`);
    });
    await nextMessage(s, (m) => (m as { ready?: number }).ready);
    return s;
  }));
  try {
    const { row, drivers } = await measure('bare ws', target, processes, port, () => servers.map((s) => s.pid!), () => servers.map((s) => s.pid!), urls, 'bare-baseline-token', tls?.ca);
    await stopDrivers(drivers);
    return row;
  } finally {
    for (const s of servers) {
      s.kill('SIGKILL');
      children.delete(s);
    }
  }
}

async function palisadeRun(target: number, processes: number, redis: Redis): Promise<{ row: Row; tls?: { key: string; cert: string; ca: string } }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'palisade-bench-conn-'));
  const prefix = `bench-conn-${process.pid}-${Date.now()}`;
  const schema = `bench_conn_${process.pid}_${Date.now()}`;
  const port = await freePort();
  const rateFile = join(dataDir, '..', `${prefix}-rate-limits.json`);
  // The WebSocket upgrade rates (120/min per IP, 60/min per user) are for people; a fleet of agents
  // reconnecting through one gateway needs more. Still checked (two Redis round trips per upgrade).
  writeFileSync(rateFile, JSON.stringify({ classes: { ws: { ip: { limit: 10_000_000, periodMs: 60_000, burst: 1_000_000 }, principal: { limit: 10_000_000, periodMs: 60_000, burst: 1_000_000 } } } }));
  const perWorker = String(Math.min(19_000, PER_PROCESS + 1000));
  // Every connection is one user's, from a few hundred source addresses: the caps per user and per
  // IP count across the workers (tallies in Redis, checked on every upgrade), so they are set past the target.
  const perCluster = String(Math.min(10_000_000, 2 * target));
  const args = [CLI, 'start', '--workers', String(processes), '--port', String(port), '--data-dir', dataDir, '--redis', REDIS_URL, '--redis-prefix', prefix,
    '--max-connections', perWorker, '--max-connections-per-user', perCluster, '--max-connections-per-ip', perCluster,
    '--rate-limits', rateFile, '--access-token-ttl', '7200', '--log-level', 'warn', ...(TLS ? [] : ['--insecure-http']),
    '--heartbeat', values.heartbeat,
    ...(values.database ? ['--database', values.database, '--database-pool', values['database-pool']] : [])];
  // With --supervisors K the workers are split over K `palisade-server start --workers …` processes on
  // the same port (several service units on one host): started one after another, because every
  // worker must be ready within 60 s of its start and on this shared 2-core machine 27 starting at
  // once are not. The first one's setup link creates the admin before the others start (a worker
  // started while there is no admin would replace the link).
  const primaries: ChildProcess[] = [];
  const urls = new InspectorUrls();
  let stderr = '';
  const errLog = join(dataDir, 'stderr.log');
  const startPrimary = (workers: number): Promise<void> => {
    const primary = spawn(process.execPath, [...args.slice(0, 3), String(workers), ...args.slice(4)], { detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...INSPECT_ENV, ...(values.database ? { PALISADE_DATABASE_SCHEMA: schema } : {}) } });
    primaries.push(primary);
    urls.watch(primary.stderr!);
    children.add(primary);
    groups.add(primary.pid!);
    let own = '';
    return new Promise<void>((resolve, reject) => {
      primary.stderr!.on('data', (d: Buffer) => {
        stderr += d;
        own += d;
        if (stderr.length > 1e6) stderr = stderr.slice(-5e5);
        if (/Palisade is running at/.test(own)) resolve();
      });
      primary.once('exit', (code) => reject(new Error(`palisade-server exited ${code}: ${own}`)));
    });
  };
  const split = Array.from({ length: SUPERVISORS }, (_, i) => Math.floor(processes / SUPERVISORS) + (i < processes % SUPERVISORS ? 1 : 0)).filter((n) => n > 0);
  const killPrimaries = () => {
    for (const p of primaries) {
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch { /* gone */ }
      groups.delete(p.pid!);
      children.delete(p);
    }
  };
  try {
    await startPrimary(split[0]!);
    const setupUrl = await new Promise<string>((resolve) => {
      const t = setInterval(() => {
        const m = /(https?:\/\/\S+\/setup\?token=\S+)/.exec(stderr);
        if (m) {
          clearInterval(t);
          resolve(m[1]!);
        }
      }, 200);
    });
    const url = /Palisade is running at (\S+)/.exec(stderr)![1]!;
    const ca = TLS ? readFileSync(join(dataDir, 'tls', 'ca.crt'), 'utf8') : undefined;
    const dispatcher = new Agent({ connect: ca ? { ca } : {} });
    // The harness's sign-in helpers against the running server: admin through the setup page, then
    // the extension's device grant approved through the real pages → an agent-scoped access token.
    const t = {
      server: { setupUrl }, url, dispatcher, securityEvents: [],
      fetch: (path: string, init: RequestInit & { token?: string } = {}) => {
        const { token, ...rest } = init;
        const headers = new Headers(rest.headers);
        if (token) headers.set('authorization', `Bearer ${token}`);
        return ufetch(new URL(path, url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
      },
      close: async () => undefined,
    } as unknown as TestServer;
    await createAdmin(t);
    const token = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    await dispatcher.close();
    for (const n of split.slice(1)) await startPrimary(n);
    const workerPids = () => primaries.flatMap((p) => childPids(p.pid!));
    const pids = () => [...primaries.map((p) => p.pid!), ...workerPids()];
    const workers = workerPids().length;
    if (workers !== processes) throw new Error(`expected ${processes} workers, found ${workers}`);
    const { row, drivers } = await measure('Palisade', target, processes, port, pids, workerPids, urls, token, ca, { redis, prefix });
    const tlsFiles = TLS ? { key: readFileSync(join(dataDir, 'tls', 'server.key'), 'utf8'), cert: readFileSync(join(dataDir, 'tls', 'server.crt'), 'utf8'), ca: ca! } : undefined;
    // Kill the servers first: 500,000 orderly closes would each update presence and the store.
    killPrimaries();
    await stopDrivers(drivers);
    return { row, tls: tlsFiles };
  } finally {
    killPrimaries();
    writeFileSync(errLog, stderr);
    if (/error|fatal/i.test(stderr.replace(/No admin account yet[\s\S]*?\n\n/, ''))) log(`palisade stderr (tail): ${stderr.slice(-2000)}`);
    const deleted = await dropPrefix(prefix);
    log(`removed ${deleted} Redis keys of ${prefix}`);
    rmSync(dataDir, { recursive: true, force: true });
    if (values.database) await dropSchema(schema, values.database).catch((e: unknown) => log(`could not drop schema ${schema}: ${String(e)}`));
    rmSync(rateFile, { force: true });
  }
}

// ── the run ──────────────────────────────────────────────────────────────────────────────────
const sysctl = (k: string) => {
  try {
    return readFileSync(`/proc/sys/${k.replace(/\./g, '/')}`, 'utf8').trim().replace(/\s+/g, ' ');
  } catch {
    return 'n/a';
  }
};
const kernel = ['net.ipv4.ip_local_port_range', 'net.core.somaxconn', 'fs.nr_open', 'fs.file-max', 'net.ipv4.tcp_mem', 'net.ipv4.tcp_max_syn_backlog'].map((k) => `${k} = ${sysctl(k)}`);
const loadAtStart = loadavg()[0]!;
const memAtStart = meminfo();
const redis = new Redis(REDIS_URL, { lazyConnect: false });
const rows: Row[] = [];
// --add: the rows already in the section (from earlier runs) are kept, and this run's are added to them.
const ROWS_MARK = /<!-- connections-rows (.*?) -->/;
const previousSection = /<!-- bench:connections:start -->\n## [^\n]*\n([\s\S]*?)<!-- bench:connections:end -->/.exec(readFileSync(new URL('../docs/BENCHMARKS.md', import.meta.url), 'utf8'))?.[1] ?? '';
const earlier: Row[] = values.add ? JSON.parse(ROWS_MARK.exec(previousSection)?.[1] ?? '[]') as Row[] : [];
/** A section written before rows were kept in it (no rows mark): kept as it was, below. */
const earlierText = values.add && !ROWS_MARK.test(previousSection) ? previousSection.replace(/^\*Partial:[^\n]*\n\n/, '').trim() : '';
try {
  for (const target of STEPS) {
    const processes = Math.max(2, Math.ceil(target / PER_PROCESS));
    log(`── ${target} connections, ${processes} server processes, ${Math.ceil(target / PER_PROCESS)} load processes (${TLS ? 'TLS' : 'plain'}) ──`);
    let tls: { key: string; cert: string; ca: string } | undefined;
    if (values['bare-first'] && ONLY !== 'palisade') {
      rows.push(await bareRun(target, processes, tls));
      report(true);
      await sleep(5000);
    }
    if (ONLY !== 'bare') {
      const p = await palisadeRun(target, processes, redis);
      rows.push(p.row);
      tls = p.tls;
      await sleep(5000);
    }
    if (!values['bare-first'] && ONLY !== 'palisade') {
      rows.push(await bareRun(target, processes, tls));
      await sleep(5000);
    }
    report(target !== STEPS.at(-1));
  }
} finally {
  killAll();
  redis.disconnect();
}

// ── the report ───────────────────────────────────────────────────────────────────────────────
function report(partial: boolean): void {
const all = [...earlier, ...rows].sort((a, b) => a.target - b.target || (a.server === 'Palisade' ? -1 : 1));
const kib = (b: number) => (b / 1024).toFixed(2);
const mib = (b: number) => (b / MIB).toFixed(0);
const per = (r: Row) => (r.loadedRss - r.idleRss) / r.open;
const perGc = (r: Row) => (r.gcRss - r.idleRss) / r.open;
const heapPer = (r: Row) => (r.gcHeap - r.idleHeap) / r.open;
/** The baseline a Palisade row is compared with: the bare row of the same run, else the latest one of the same target. */
const bareOf = (r: Row) => {
  const bare = all.filter((b) => b.server === 'bare ws' && b.target === r.target);
  return bare.find((b) => b.run === r.run) ?? bare.at(-1);
};
const head = ['server', 'connections held', 'processes', 'failed', 'dropped while idle', 'connect rate (/s)', 'idle RSS (MiB)', 'loaded RSS (MiB)', 'RSS per connection (KiB)', 'ratio vs bare ws', 'after full GC: RSS (MiB)', 'RSS per connection (KiB)', 'ratio vs bare ws', 'V8 heap per connection (KiB)', 'loaded RSS / connections (KiB)', 'idle CPU (cores; µs per connection per s)', '≤ 10 KB (loaded / after GC)', 'run'];
const runs = [...new Set(all.map((r) => r.run))];
const body = all.map((r) => {
  const b = r.server === 'Palisade' ? bareOf(r) : undefined;
  return [r.server, `${r.open.toLocaleString('en')}${r.open < r.target ? ` of ${r.target.toLocaleString('en')}` : ''}`, String(r.processes), String(r.failed), String(r.dropped), String(Math.round(r.open / r.connectSeconds)), mib(r.idleRss), mib(r.loadedRss), `**${kib(per(r))}**`, b ? `${(per(r) / per(b)).toFixed(2)}×` : '—',
    mib(r.gcRss), `**${kib(perGc(r))}**`, b ? `${(perGc(r) / perGc(b)).toFixed(2)}×` : '—', kib(heapPer(r)), kib(r.loadedRss / r.open),
    r.idleCpu === undefined ? '—' : `${r.idleCpu.toFixed(2)}; ${(r.idleCpu / r.open * 1e6).toFixed(2)}`,
    r.server === 'Palisade' ? `${per(r) <= 10_000 ? 'yes' : '**no**'} / ${perGc(r) <= 10_000 ? 'yes' : '**no**'}` : '', String(runs.indexOf(r.run) + 1)];
});
const redisRows = all.filter((r) => r.redisAfter !== undefined).map((r) => [r.open.toLocaleString('en'), mib(r.redisBefore!), mib(r.redisAfter!), String(r.redisKeys), ((r.redisAfter! - r.redisBefore!) / r.open).toFixed(0)]);
const failures = all.filter((r) => r.failed > 0).map((r) => `- ${r.server}, ${r.target}: ${JSON.stringify(r.reasons)}`);
const retried = all.filter((r) => Object.keys(r.retries ?? {}).length > 0).map((r) => `- ${r.server}, ${r.target} (run ${runs.indexOf(r.run) + 1}): ${JSON.stringify(r.retries)}`);
const out = `- runs (the last column of the table): ${runs.map((r, i) => `(${i + 1}) ${r}`).join('; ')}
- ${machine()}; this run: 1-minute load average at start ${loadAtStart.toFixed(2)}; memory ${mib(memAtStart.total)} MiB, available at start ${mib(memAtStart.available)} MiB, lowest during the run ${mib(lowestAvailable)} MiB
- server processes (both sides) run with \`NODE_OPTIONS=${INSPECT_ENV.NODE_OPTIONS}\`
- kernel (unchanged): ${kernel.join('; ')}; open files 20,000 per process (hard limit)
- ${TLS ? 'both sides over TLS 1.3 (Palisade\'s generated development certificate, the same key and certificate for the bare servers)' : 'both sides plain WebSocket (Palisade with `--insecure-http`, as behind a TLS-terminating load balancer)'}
- Palisade: \`palisade-server start --workers N --redis redis://127.0.0.1:6379 --redis-prefix <fresh> --max-connections ${Math.min(19_000, PER_PROCESS + 1000)} --max-connections-per-user … --max-connections-per-ip … --rate-limits FILE --access-token-ttl 7200 --log-level warn --heartbeat ${values.heartbeat}${TLS ? '' : ' --insecure-http'}${values.database ? ` --database <PostgreSQL> --database-pool ${values['database-pool']}` : ''}\` in a fresh data folder (${values.database ? `durable store in PostgreSQL, a fresh schema; ${values['database-pool']} + 2 connections per worker` : 'SQLite'})${SUPERVISORS > 1 ? `, the workers split over ${SUPERVISORS} such commands on the same port (and data folder), started one after another: each worker must be ready within 60 s of its start, and on this shared machine 27 starting at once were not` : ''}; the WebSocket upgrade rate limits raised to 10,000,000 a minute per IP and per user (still checked in Redis for every upgrade); ${values.heartbeat === '30' ? 'heartbeat (a ping every 30 s), ' : `a ping every ${values.heartbeat} s (default 30), `}auth timeout and every other setting at its default. Every connection is an agent of one user with one agent-scoped access token from the device grant (admin created through the setup page, the extension's device code approved through the sign-in and consent pages), offered in the bearer subprotocol; each sends \`hello\` with its own instanceId (so each is its own agent: a row in the agents table and a presence entry in Redis) and waits for \`welcome\`
- bare ws: \`bench/ws-bare.server.ts\` — \`ws\` ${JSON.parse(readFileSync(new URL('../node_modules/ws/package.json', import.meta.url), 'utf8')).version} on \`node:http\`, the same port sharing, the same wire exchange (subprotocol, hello answered by a welcome frame) and a ping every ${values.heartbeat} s; nothing else
- load: \`bench/connections.driver.ts\` processes of ≤ ${PER_PROCESS} connections each, each from its own ${ADDRESSES} 127.x.y.z source addresses, ${CONCURRENCY} upgrades in flight per process; a minimal WebSocket client over \`net\` (a few fields per connection) answering pings; a "try again" refusal (upgrade 503, close 1013, an error frame \`PAL_ERR_UNAVAILABLE\`) retried as the extension retries it (its own backoff: from 0.5 s doubling to 30 s, equal jitter), up to 6 attempts
- RSS: VmRSS from \`/proc/<pid>/status\` summed over the server processes (Palisade: its workers and their supervising primary), idle = started (Palisade: after the sign-ins), before connecting; loaded = all connected, then ${SETTLE_S} s idle; per connection = (loaded − idle) / connections held at the end. Then a full garbage collection in every server process (through its inspector: \`NODE_OPTIONS=--inspect-port=127.0.0.1:0\`, opened by SIGUSR1, \`HeapProfiler.collectGarbage\`; also done at idle, before the idle figures) and RSS again, with V8's heap in use (\`process.memoryUsage().heapUsed\`, summed): "after full GC". KB = 1000 bytes, KiB = 1024. "dropped while idle": connections up at the end of the connect phase but closed by the end of the idle period
- idle CPU: user + system time of the server processes over the idle period (\`/proc/<pid>/stat\`), summed, per second of it: what holding the connections costs when nothing happens (pings; Palisade also refreshes each agent's presence in Redis every 5 minutes — an idle period shorter than that sees only the refreshes falling due in it)

${table(head, body)}

Palisade's Redis (\`used_memory\`, the whole server; presence entries and per-user sets):

${table(['connections', 'before (MiB)', 'after (MiB)', 'keys under the prefix', 'bytes per connection'], redisRows)}
${failures.length ? `\nFailures (connect phase):\n\n${failures.join('\n')}\n` : ''}${retried.length ? `\nRefusals retried with the extension's backoff (connect phase; "try again" answers — 503, close 1013, \`PAL_ERR_UNAVAILABLE\` — retried up to 6 attempts per connection; a connection that got through later counts only here):\n\n${retried.join('\n')}\n` : ''}
${earlierText ? `\n### An earlier run, as it wrote its figures\n\n${earlierText}\n` : ''}
<!-- connections-rows ${JSON.stringify(all)} -->`;
process.stdout.write(`${out}\n`);
if (values.write) writeSection('connections', 'Idle agent connections on one machine: memory per connection against bare ws', `${partial ? `*Partial: the run was still going after these steps (of ${STEPS.join(', ')}).*\n\n` : ''}${out}`);
}
