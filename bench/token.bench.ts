/**
 * Token endpoint throughput: client-credentials grants per second, with p50/p99, for Palisade's
 * whole stack (Fastify, the SQLite store behind the OAuth adapter, security events written through
 * the logger; an API client's token by the direct path, auth/client-credentials.ts), the same server
 * with every token through oidc-provider (`tokenDirectPath: false`), against a bare `oidc-provider` configured the same way (ES256 JWT access tokens for the
 * same audience, `client_secret_basic`, in-memory adapter), both over HTTPS with the same
 * certificate, in the same run.
 *
 * Each server runs in a child process of its own; the load comes from separate processes
 * (`bench/token.driver.ts`, `--drivers` of them) holding `--connections` kept-alive connections in
 * all, so on this 2-core machine a one-process server has one core and the load generator the other.
 * All servers start once and stay up; rounds alternate the order of the targets, each with a
 * warm-up of its own.
 *
 * A fourth target (unless `--workers 0`): Palisade started through its real CLI,
 * `palisade-server start --workers N` (default 2) — N worker processes on one port (SO_REUSEPORT),
 * hot state in Redis (`--redis`, a fresh `--redis-prefix`, deleted afterwards), SQLite in a temporary
 * data folder, and the same roomy rate limits through `--rate-limits FILE`. Its CPU is read from
 * `/proc/<pid>/stat` of the primary and every worker (Linux only).
 *
 *   node bench/token.bench.ts [--seconds 10] [--warmup 3] [--rounds 3] [--connections 32] [--workers 2] [--drivers 1] [--cpu-prof DIR] [--write]
 *
 * `--cpu-prof DIR` writes a V8 CPU profile of each one-process server's timed window to DIR (`<target>-round<n>.cpuprofile`)
 * and prints where the main thread's time went, per request, Palisade beside the bare provider. Profiling
 * slows both servers: take figures from a run without it. The workers target is not profiled.
 */
import { parseArgs } from 'node:util';
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { tmpdir, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { createPalisade } from '../packages/server/src/app.ts';
import { ensureDevTls } from '../packages/server/src/tls/devca.ts';
import { apiClient, createAdmin, scaledRateLimits } from '../packages/server/test/support/harness.ts';
import { dropPrefix, REDIS_URL } from '../packages/server/test/support/redis.ts';
import type { DriverResult } from './token.driver.ts';
import { addProfile, answerAsks, ask, type Ask, machine, machineBusy, nextMessage, summarise, table, writeSection, remoteServer } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' }, warmup: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' }, 'cpu-prof': { type: 'string' }, write: { type: 'boolean', default: false },
    workers: { type: 'string', default: '2' }, drivers: { type: 'string', default: '1' },
    serve: { type: 'string' },
  },
});
const AUDIENCE = 'urn:palisade:api';
/** Rate limits on and checked on every request, at rates (×1,000,000: 2 million tokens a second per client) no load generator here reaches. */
const BENCH_RATE_LIMITS = scaledRateLimits(1_000_000);
const TOKEN_PATH = '/oauth2/token';

type Target = 'palisade' | 'provider' | 'bare' | 'workers';
interface Ready { url: string; clientId: string; clientSecret: string }
interface ServeInput { tlsDir: string }

// ---- server side (a child process: `--serve palisade|bare`) ----------------------------------------

/** Palisade on its embedded defaults (SQLite in a fresh data folder, dev TLS, logger at `info` on stdout). */
async function servePalisade(input: ServeInput, tokenDirectPath: boolean): Promise<{ ready: Ready; close: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'palisade-bench-'));
  cpSync(input.tlsDir, join(dataDir, 'tls'), { recursive: true });
  const server = await createPalisade({ dataDir, port: 0, rateLimits: BENCH_RATE_LIMITS, tokenDirectPath });
  const url = await server.listen();
  const { clientId, clientSecret } = await adminAndClient(url, server.tls!.ca!, server.setupUrl);
  return {
    ready: { url, clientId, clientSecret },
    close: async () => {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Creates the admin account (through the setup link) and an API client on a running Palisade, as the tests do. */
async function adminAndClient(url: string, ca: string, setupUrl: string | undefined): Promise<{ clientId: string; clientSecret: string }> {
  const dispatcher = new Agent({ connect: { ca } });
  // The test harness's shape, without its in-memory list of every security event (which would grow
  // by one object per token here, as production does not).
  const t = remoteServer(url, dispatcher, { setupUrl });
  try {
    await createAdmin(t);
    const { clientId, clientSecret } = await apiClient(t, 'token bench');
    return { clientId, clientSecret };
  } finally {
    await dispatcher.close();
  }
}

/** A bare oidc-provider with the same grant, key type, audience, token format and client auth; in-memory adapter. */
async function serveBare(input: ServeInput): Promise<{ ready: Ready; close: () => Promise<void> }> {
  const tls = ensureDevTls(input.tlsDir);
  let handle: (req: IncomingMessage, res: ServerResponse) => void = () => {};
  const server = createServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3' }, (req, res) => handle(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: randomBytes(12).toString('base64url'), alg: 'ES256', use: 'sig' };
  // The same shapes of id and secret as Palisade's API clients, so requests and tokens are the same size.
  const clientId = `pal_${randomBytes(12).toString('base64url')}`;
  const clientSecret = `pal_sk_${randomBytes(32).toString('base64url')}`;
  const provider = new Provider(`${url}/oauth2`, {
    clients: [{
      client_id: clientId, client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'tasks',
    }],
    clientDefaults: { id_token_signed_response_alg: 'ES256', grant_types: [], response_types: [] },
    jwks: { keys: [signingKey] },
    scopes: ['tasks'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => AUDIENCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({ scope: 'tasks agent admin', audience: AUDIENCE, accessTokenTTL: 900, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    ttl: { ClientCredentials: 900 },
    enabledJWA: { authorizationSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
  });
  // Mounted at /oauth2 the way Palisade mounts it, so both serve the same path and issuer.
  const callback = provider.callback();
  handle = (req, res) => {
    (req as typeof req & { originalUrl?: string }).originalUrl = req.url;
    req.url = (req.url ?? '/').slice('/oauth2'.length) || '/';
    callback(req, res);
  };
  return { ready: { url, clientId, clientSecret }, close: () => new Promise((r) => server.close(() => r())) };
}

async function serve(target: Target): Promise<void> {
  const input = JSON.parse(process.env.BENCH_SERVE ?? '{}') as ServeInput;
  const { ready, close } = target === 'bare' ? await serveBare(input) : await servePalisade(input, target === 'palisade');
  answerAsks(close);
  // A parent that died without asking to stop leaves no server behind.
  process.once('disconnect', () => void close().finally(() => process.exit(0)));
  process.send!({ ready });
}

// ---- load side (this process and the drivers) -------------------------------------------------------

interface Measured extends DriverResult {
  /** CPU time of every process of the server over the timed window, in cores (1 = one core busy). */
  serverCpu: number;
  /** With `--workers`: each worker's share of that, in cores, by worker (the primary's is in `serverCpu` only). */
  workerCpu?: number[];
  /** With `--workers`: the server's established connections on each worker at the window's start. */
  workerConnections?: number[];
  /** CPU of the busiest load-generator process, in cores (with one driver, `driverCpu`). */
  driverCpuMax: number;
  /** CPU of the Redis server on 127.0.0.1:6379 over the window, in cores (whoever used it; `NaN` when not found). */
  redisCpu: number;
  /** CPU time of every other process on the machine over the window (Linux; `NaN` elsewhere), in cores. */
  otherCpu: number;
  /** The window's CPU profile, with `--cpu-prof`. */
  profile?: string | undefined;
}

const SELF = new URL(import.meta.url).pathname;
const DRIVER = new URL('./token.driver.ts', import.meta.url).pathname;
const CLI = new URL('../packages/server/src/cli.ts', import.meta.url).pathname;

interface Snapshot {
  /** CPU seconds of the server so far, in all. */
  cpu: number;
  /** CPU seconds so far of each worker process (workers target), by pid. */
  workers?: Map<number, number>;
  connections?: Map<number, number>;
  busy: number;
  redis: number;
}

interface Server {
  target: Target;
  ready: Ready;
  /** Where the server's stdout (Palisade's log) went. */
  log: string;
  /** The forked one-process server (it answers asks: CPU, profiles, stop). */
  child?: ChildProcess;
  /** CPU of the server's processes now (a one-process server asks its process). */
  snapshot(): Promise<Pick<Snapshot, 'cpu' | 'workers' | 'connections'>>;
  stop(): Promise<void>;
}

/** Starts a one-process server (`--serve`); its stdout (Palisade's log) goes to a file. */
async function startServer(target: 'bare' | 'palisade' | 'provider', work: string, tlsDir: string): Promise<Server> {
  const log = join(work, `${target}.log`);
  const logFd = openSync(log, 'w');
  const child = fork(SELF, ['--serve', target], {
    env: { ...process.env, BENCH_SERVE: JSON.stringify({ tlsDir } satisfies ServeInput) },
    stdio: ['ignore', logFd, 'inherit', 'ipc'],
  });
  closeSync(logFd);
  const ready = await nextMessage(child, (m) => (m as { ready?: Ready }).ready);
  return {
    target, child, log, ready,
    snapshot: async () => {
      const c = await ask(child, { ask: 'cpu' }, (m) => (m as { cpu?: NodeJS.CpuUsage }).cpu);
      return { cpu: (c.user + c.system) / 1e6 };
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.send({ ask: 'stop' } satisfies Ask);
      await exited;
    },
  };
}

/**
 * Starts Palisade through its CLI with `--workers n`: Redis for hot state (a fresh key prefix),
 * SQLite in a fresh data folder with the run's certificate, the roomy rate limits from a file,
 * logs at `info` to a file. Creates the admin and an API client once the banner and setup link are out.
 */
async function startWorkers(n: number, work: string, tlsDir: string): Promise<Server> {
  const dataDir = join(work, 'workers-data');
  cpSync(tlsDir, join(dataDir, 'tls'), { recursive: true });
  const limits = join(work, 'rate-limits.json');
  writeFileSync(limits, JSON.stringify(BENCH_RATE_LIMITS));
  const prefix = `bench-token-${randomBytes(6).toString('hex')}`;
  const log = join(work, 'workers.log');
  const logFd = openSync(log, 'w');
  // Only the flags below configure it: no PALISADE_* setting of this shell leaks in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PALISADE_')));
  const args = [CLI, 'start', '--workers', String(n), '--port', '0', '--data-dir', dataDir, '--redis', REDIS_URL, '--redis-prefix', prefix, '--rate-limits', limits, '--log-level', 'info'];
  const primary = spawn(process.execPath, args, { env, stdio: ['ignore', logFd, 'pipe'] });
  closeSync(logFd);
  let err = '';
  const started = new Promise<{ url: string; setupUrl: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`palisade-server --workers ${n} did not start within 120 s:\n${err}`)), 120_000);
    primary.stderr!.on('data', (d: Buffer) => {
      err += d;
      const url = /Palisade is running at (\S+)/.exec(err)?.[1];
      const setupUrl = /(https:\/\/\S+\/setup\?token=\S+)/.exec(err)?.[1];
      if (url && setupUrl) {
        clearTimeout(timer);
        resolve({ url, setupUrl });
      }
    });
    primary.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`palisade-server --workers ${n} exited (${code}) while starting:\n${err}`));
    });
  });
  const stopped = once(primary, 'exit');
  let url: string;
  let clientId: string;
  let clientSecret: string;
  try {
    let setupUrl: string;
    ({ url, setupUrl } = await started);
    ({ clientId, clientSecret } = await adminAndClient(url, ensureDevTls(join(dataDir, 'tls')).ca!, setupUrl));
  } catch (e) {
    if (primary.exitCode === null && primary.signalCode === null) {
      primary.kill('SIGTERM');
      await stopped;
    }
    await dropPrefix(prefix);
    throw e;
  }
  const port = Number(new URL(url).port);
  return {
    target: 'workers', log, ready: { url, clientId, clientSecret },
    snapshot: async () => {
      const workers = new Map(childPids(primary.pid!).map((pid) => [pid, procCpuSeconds(pid)]));
      const connections = new Map([...workers.keys()].map((pid) => [pid, establishedOn(pid, port)]));
      return { cpu: procCpuSeconds(primary.pid!) + [...workers.values()].reduce((a, b) => a + b, 0), workers, connections };
    },
    stop: async () => {
      if (primary.exitCode === null && primary.signalCode === null) primary.kill('SIGTERM');
      const [code] = (await stopped) as [number | null];
      if (code !== 0) process.stderr.write(`  palisade-server --workers ${n} stopped with exit code ${code}:\n${err}\n`);
      await dropPrefix(prefix);
    },
  };
}

// ---- /proc (Linux): CPU time and connections of processes the benchmark did not fork itself -------------

let ticks: number | undefined;
/** Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, 100 nearly everywhere). */
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** User + system CPU seconds of process `pid` so far, all its threads (waited-for children excluded). */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / clockTicks();
}

/** The child processes of `pid` (the CLI primary's workers). */
function childPids(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((t) => readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
}

/** How many established TCP connections whose local port is `port` process `pid` holds. */
function establishedOn(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '01' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m && inodes.has(m[1]!)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** The pid of the Redis server on port 6379 (the one the workers use), if it runs on this machine. */
function redisPid(): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'redis-server' && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(':6379')) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

let redisServer: { pid: number | undefined } | undefined;
/** CPU seconds of that Redis server so far; `NaN` when there is none here (or no /proc). */
function redisCpuSeconds(): number {
  try {
    redisServer ??= { pid: redisPid() };
    return redisServer.pid === undefined ? Number.NaN : procCpuSeconds(redisServer.pid);
  } catch {
    return Number.NaN;
  }
}

/** One timed window against `server`, from `--drivers` fresh load-generator processes sharing `--connections`. */
async function measure(server: Server, round: number, ca: string): Promise<Measured> {
  const { target, ready } = server;
  const seconds = Number(values.seconds);
  const drivers = Number(values.drivers);
  const connections = Number(values.connections);
  const outs = Array.from({ length: drivers }, () => '');
  const procs = Array.from({ length: drivers }, (_, i) => {
    const share = Math.floor(connections / drivers) + (i < connections % drivers ? 1 : 0);
    const driver = fork(DRIVER, [], {
      env: { ...process.env, BENCH_DRIVER: JSON.stringify({ ...ready, path: TOKEN_PATH, ca, connections: share, warmupSeconds: Number(values.warmup), seconds, awaitGo: true, keepSamples: drivers > 1 }) },
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    driver.stdout!.on('data', (d: Buffer) => (outs[i] += String(d)));
    return driver;
  });
  const profile = values['cpu-prof'] && server.child ? join(resolve(values['cpu-prof']), `${target}-round${round}.cpuprofile`) : undefined;
  const snapshot = async (): Promise<Snapshot> => {
    const busy = machineBusy();
    const redis = redisCpuSeconds();
    return { ...(await server.snapshot()), busy, redis };
  };
  // The drivers share one window: the first to open it and the last to close it mark its ends here.
  let opened = 0;
  let closedCount = 0;
  let open: Promise<Snapshot> | undefined;
  let closed: Promise<Snapshot> | undefined;
  // Every driver loaded (undici, TLS): the warm-up starts now for all of them.
  let loaded = 0;
  for (const driver of procs) {
    driver.on('message', (m: { phase: string }) => {
      if (m.phase === 'loaded' && ++loaded === drivers) {
        const go = Date.now();
        for (const d of procs) d.send({ go });
      } else if (m.phase === 'window-open' && opened++ === 0) {
        open = snapshot().then((s) => {
          if (profile) server.child!.send({ ask: 'profile-start' } satisfies Ask);
          return s;
        });
      } else if (m.phase === 'window-closed' && ++closedCount === drivers) {
        closed = snapshot().then(async (s) => {
          if (profile) await ask(server.child!, { ask: 'profile-stop', file: profile }, (x) => (x as { profiled?: string }).profiled);
          return s;
        });
      }
    });
  }
  const codes = await Promise.all(procs.map(async (d) => ((await once(d, 'exit')) as [number | null])[0]));
  if (codes.some((c) => c !== 0)) throw new Error(`${target} driver failed (exit ${codes.join(', ')})`);
  if (!open || !closed) throw new Error(`${target}: the drivers did not report their window`);
  const [a, b] = await Promise.all([open, closed]);

  const results = outs.map((o) => JSON.parse(o) as DriverResult);
  const merged: DriverResult = results.length === 1 ? results[0]! : {
    ...summarise({
      samples: results.flatMap((r) => r.samples!), errors: results.reduce((n, r) => n + r.errors, 0),
      firstError: results.find((r) => r.firstError)?.firstError ?? '', cpu: { user: 0, system: 0 },
    }, seconds),
    driverCpu: results.reduce((n, r) => n + r.driverCpu, 0),
  };
  delete merged.samples;
  const serverCpu = (b!.cpu - a!.cpu) / seconds;
  const redisCpu = (b!.redis - a!.redis) / seconds;
  const workerCpu = b!.workers && [...b!.workers].map(([pid, cpu]) => (cpu - (a!.workers?.get(pid) ?? 0)) / seconds);
  const workerConnections = a!.connections && [...a!.connections.values()];
  if (a!.workers && b!.workers && [...b!.workers.keys()].some((pid) => !a!.workers!.has(pid))) process.stderr.write(`  ${target}: a worker was restarted during the window\n`);
  const otherCpu = (b!.busy - a!.busy) / seconds - serverCpu - merged.driverCpu - (Number.isNaN(redisCpu) ? 0 : redisCpu);
  return { ...merged, serverCpu, workerCpu, workerConnections, driverCpuMax: Math.max(...results.map((r) => r.driverCpu)), redisCpu, otherCpu, profile };
}

interface Round { load: number; pal: Measured; bare: Measured; provider: Measured; workers?: Measured | undefined }

async function main(): Promise<void> {
  const ROUNDS = Number(values.rounds);
  const SECONDS = Number(values.seconds);
  const CONNECTIONS = Number(values.connections);
  const WORKERS = Number(values.workers);
  const DRIVERS = Number(values.drivers);
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes a positive integer');
  if (!(SECONDS > 0) || !(Number(values.warmup) >= 0)) throw new Error('--seconds takes a positive number, --warmup a number ≥ 0');
  if (!Number.isInteger(CONNECTIONS) || CONNECTIONS < 1) throw new Error('--connections takes a positive integer');
  if (!Number.isInteger(WORKERS) || WORKERS < 0 || WORKERS > 256) throw new Error('--workers takes a whole number from 0 (no workers target) to 256');
  if (!Number.isInteger(DRIVERS) || DRIVERS < 1 || DRIVERS > CONNECTIONS) throw new Error('--drivers takes a whole number from 1 to --connections');
  if (WORKERS > 0 && process.platform !== 'linux') throw new Error('the workers target reads /proc (Linux); run with --workers 0 elsewhere');
  if (values['cpu-prof']) mkdirSync(values['cpu-prof'], { recursive: true });

  const work = mkdtempSync(join(tmpdir(), 'palisade-token-bench-'));
  const tlsDir = join(work, 'tls');
  const { ca } = ensureDevTls(tlsDir);
  const load = loadavg()[0]!.toFixed(2);
  const workersLabel = `Palisade ${WORKERS} workers`;
  process.stderr.write(`token benchmark: ${ROUNDS} rounds × (bare oidc-provider, Palisade, Palisade through oidc-provider${WORKERS ? `, ${workersLabel} via the CLI` : ''}) alternating, ${SECONDS} s timed after ${values.warmup} s warm-up, ${CONNECTIONS} connections from ${DRIVERS} load-generator process(es)${values['cpu-prof'] ? ', profiling the one-process servers (figures perturbed)' : ''}\n`);

  const servers: Partial<Record<Target, Server>> = {};
  // Whatever happens (a failed start, a failed driver, Ctrl-C), the servers started so far are stopped.
  const stopAll = async () => {
    for (const [target, s] of Object.entries(servers)) {
      delete servers[target as Target];
      await s.stop().catch((e: unknown) => process.stderr.write(`  stopping ${target}: ${(e as Error).message}\n`));
    }
  };
  const interrupted = () => void stopAll().finally(() => process.exit(130));
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  const targets: Target[] = WORKERS > 0 ? ['bare', 'palisade', 'provider', 'workers'] : ['bare', 'palisade', 'provider'];
  const rounds: Round[] = [];
  let eventsLogged = '';
  try {
    servers.bare = await startServer('bare', work, tlsDir);
    servers.palisade = await startServer('palisade', work, tlsDir);
    servers.provider = await startServer('provider', work, tlsDir);
    if (WORKERS > 0) servers.workers = await startWorkers(WORKERS, work, tlsDir);
    await runRounds();
    const tokenEvents = (s: Server) => readFileSync(s.log, 'utf8').split('"activity_name":"oauth.token"').length - 1;
    const logs = { palisade: servers.palisade, workers: servers.workers };
    await stopAll();
    eventsLogged = `  Palisade logged ${tokenEvents(logs.palisade)} oauth.token security events (${rounds.reduce((n, r) => n + r.pal.requests, 0)} tokens counted in the timed windows, the rest in warm-ups)\n`;
    if (logs.workers) eventsLogged += `  ${workersLabel} logged ${tokenEvents(logs.workers)} oauth.token security events (${rounds.reduce((n, r) => n + r.workers!.requests, 0)} tokens counted in the timed windows, the rest in warm-ups)\n`;
  } finally {
    await stopAll();
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
    rmSync(work, { recursive: true, force: true });
  }
  process.stderr.write(eventsLogged);

  async function runRounds(): Promise<void> {
    for (let r = 1; r <= ROUNDS; r++) {
      const order = r % 2 === 1 ? targets : [...targets].reverse();
      const roundLoad = loadavg()[0]!;
      process.stderr.write(`  round ${r}: 1-minute load average ${roundLoad.toFixed(2)}\n`);
      const got: Partial<Record<Target, Measured>> = {};
      for (const target of order) {
        const m = await measure(servers[target]!, r, ca!);
        got[target] = m;
        const label = target === 'workers' ? `${WORKERS} workers` : target;
        process.stderr.write(`  round ${r} ${label.padEnd(10)}: ${Math.round(m.rps)} req/s, p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms; CPU: server ${pct(m.serverCpu)}${m.workerCpu ? ` (${m.workerCpu.map(pct).join(' + ')} by worker; connections ${m.workerConnections!.join(' + ')})` : ''} (${cpuPerToken(m).toFixed(0)} µs/token), load generator ${pct(m.driverCpu)}${DRIVERS > 1 ? ` (busiest ${pct(m.driverCpuMax)})` : ''}, Redis ${pct(m.redisCpu)}, other processes ${pct(m.otherCpu)}${m.errors ? `; ${m.errors} failed requests` : ''}\n`);
      }
      rounds.push({ load: roundLoad, pal: got.palisade!, bare: got.bare!, provider: got.provider!, workers: got.workers });
    }
  }

  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = (pick: (r: Round) => Measured) => {
    const ms = rounds.map(pick);
    const m = (f: (x: Measured) => number) => med(ms.map(f));
    return {
      rps: m((x) => x.rps), p50: m((x) => x.p50), p99: m((x) => x.p99), p999: m((x) => x.p999),
      serverCpu: m((x) => x.serverCpu), cpuPerToken: m(cpuPerToken), driverCpu: m((x) => x.driverCpu), otherCpu: m((x) => x.otherCpu),
      redisCpu: m((x) => x.redisCpu), driverCpuMax: m((x) => x.driverCpuMax),
    };
  };
  const P = summary((r) => r.pal);
  const B = summary((r) => r.bare);
  const V = summary((r) => r.provider);
  const viaRatios = rounds.map((r) => r.provider.rps / r.bare.rps);
  const directRatios = rounds.map((r) => r.pal.rps / r.provider.rps);
  const W = WORKERS > 0 ? summary((r) => r.workers!) : undefined;
  const ratios = rounds.map((r) => r.pal.rps / r.bare.rps);
  const ratio = med(ratios);
  const cpuRatios = rounds.map((r) => cpuPerToken(r.bare) / cpuPerToken(r.pal));
  const cpuRatio = med(cpuRatios);
  const errors = rounds.reduce((n, r) => n + r.pal.errors + r.bare.errors + r.provider.errors + (r.workers?.errors ?? 0), 0);
  const row = (label: string, s: typeof P) => [label, String(Math.round(s.rps)), s.p50.toFixed(2), s.p99.toFixed(2), s.p999.toFixed(2), pct(s.serverCpu), s.cpuPerToken.toFixed(0), pct(s.driverCpu), pct(s.otherCpu)];
  const cmd = `node bench/token.bench.ts --seconds ${SECONDS} --warmup ${values.warmup} --rounds ${ROUNDS} --connections ${CONNECTIONS} --workers ${WORKERS} --drivers ${DRIVERS}`;
  const loadGen = DRIVERS === 1 ? 'a separate load-generator process' : `${DRIVERS} separate load-generator processes (${CONNECTIONS / DRIVERS} connections each; their latencies merged)`;

  const out = `- command: \`${cmd}\`
- ${machine()}; 1-minute load average at start ${load} (at each round's start: ${rounds.map((r) => r.load.toFixed(2)).join(', ')})
- \`POST /oauth2/token\`, \`grant_type=client_credentials&scope=tasks\`, \`client_secret_basic\`; answer: an ES256 JWT access token for \`${AUDIENCE}\`
- ${CONNECTIONS} kept-alive HTTPS (TLS 1.3) connections from ${loadGen} (\`bench/token.driver.ts\`, undici), one request in flight on each; ${values.warmup} s warm-up, then ${SECONDS} s timed; latency is per request, at the client. The load is closed-loop and saturating, so latency is mostly queueing: p50 ≈ ${CONNECTIONS} ÷ throughput, and p99 adds garbage-collector pauses and scheduling
- Palisade: its whole stack on the embedded defaults — the node's HTTPS server answering \`/oauth2\` ahead of Fastify: an API client's client-credentials request by Palisade's direct path (\`auth/client-credentials.ts\`: the token, response and event oidc-provider would give, signed with the same key), the rest by oidc-provider; the SQLite-backed adapter, API clients through the node's 30-second client cache (revocations reach it at once through the hot store), a security event per token written by the logger at \`info\` (asynchronously, to a file), and the edge checks of issue 4 on every request: security headers, URL length and Host checks, and the rate limiter (per IP and per client, in-process GCRA) with its limits ×1,000,000 so that it checks every request but refuses none (one address sends the whole load)
- Palisade through oidc-provider: the same server with \`tokenDirectPath: false\` — every token request handed to oidc-provider, as before the direct path
- bare: \`oidc-provider\` ${providerVersion()} alone on \`node:https\`, the same certificate, key type (ES256), audience, token format, client authentication and path, in-memory adapter
- **one process each** for these three: the single-process figure (Palisade in-process hot state, the bare provider one process too); of the 2 cores, the server has one and the load generator the other. Server CPU above 100% is libuv's thread pool signing (ECDSA) beside the main thread${W ? `. Palisade with \`--workers ${WORKERS}\` follows below the per-round table` : ''}
- "other processes" is the CPU everything else on the machine used during the window (from \`/proc/stat\`), Redis excepted: the noise the figures were measured under
- budget: Palisade ≥ 0.9× the bare provider's throughput, p99 ≤ 25 ms. Medians over ${ROUNDS} rounds; all servers start once, and rounds alternate the order of the targets (${targets.join(', ')}, then reversed), each round with its own warm-up

${table(['target', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'server CPU', 'server CPU µs / token', 'load-generator CPU', 'other processes CPU'], [row('Palisade (full stack)', P), row('bare oidc-provider', B), row('Palisade, tokens through oidc-provider', V), ...(W ? [row(`${workersLabel} (CLI, all processes)`, W)] : [])])}

Throughput Palisade / bare: **${ratio.toFixed(2)}×** (median of the rounds' ratios: ${ratios.map((x) => x.toFixed(2)).join(', ')}) — ${ratio >= 0.9 ? 'within' : '**short of**'} the ≥ 0.9× budget.
Server CPU per token, bare / Palisade: ${cpuRatio.toFixed(2)}× (${cpuRatios.map((x) => x.toFixed(2)).join(', ')}) — the throughput each would reach with a core to itself, relative to the bare provider; less disturbed by the other processes than the throughput ratio.
Palisade with its direct path off (\`tokenDirectPath: false\`: every token through oidc-provider, as before): ${med(viaRatios).toFixed(2)}× the bare provider (${viaRatios.map((x) => x.toFixed(2)).join(', ')}); Palisade / Palisade through oidc-provider: ${med(directRatios).toFixed(2)}× (${directRatios.map((x) => x.toFixed(2)).join(', ')}).
Palisade p99: ${P.p99.toFixed(2)} ms — ${P.p99 <= 25 ? 'within' : '**over**'} the 25 ms budget (bare oidc-provider under the same load: ${B.p99.toFixed(2)} ms).${errors ? `\nFailed requests (not counted): ${errors}.` : ''}

Every round:

${table(['round', 'Palisade req/s', 'p50 ms', 'p99 ms', 'CPU µs / token', 'bare req/s', 'p50 ms', 'p99 ms', 'CPU µs / token', 'throughput ratio', 'other processes CPU (Palisade / bare window)'],
    rounds.map((r, i) => [`round ${i + 1}`, String(Math.round(r.pal.rps)), r.pal.p50.toFixed(2), r.pal.p99.toFixed(2), cpuPerToken(r.pal).toFixed(0),
      String(Math.round(r.bare.rps)), r.bare.p50.toFixed(2), r.bare.p99.toFixed(2), cpuPerToken(r.bare).toFixed(0), ratios[i]!.toFixed(2), `${pct(r.pal.otherCpu)} / ${pct(r.bare.otherCpu)}`]))}
${W ? `\n${workersSection(rounds, WORKERS, W, P, B)}` : ''}`;
  process.stdout.write(`\n${out}\n`);
  if (values['cpu-prof']) process.stdout.write(`${hotspots(rounds)}\n`);
  if (values.write) writeSection('token', 'Token endpoint (client credentials): throughput against a bare oidc-provider', out);
}

/** The `--workers` part of the section: ratios against both one-process targets, CPU by process, every round. */
function workersSection(rounds: Round[], n: number, W: Summary, P: Summary, B: Summary): string {
  const vsBare = rounds.map((r) => r.workers!.rps / r.bare.rps);
  const vsPal = rounds.map((r) => r.workers!.rps / r.pal.rps);
  const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ');
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return `### Palisade with \`--workers ${n}\` (the real CLI)

- started as \`palisade-server start --workers ${n} --port 0 --data-dir <temporary> --redis ${REDIS_URL} --redis-prefix <fresh> --rate-limits <file> --log-level info\`: ${n} worker processes on one port (SO_REUSEPORT; the kernel spreads the load generator's connections over them), hot state and rate limits in Redis (one round trip per rate-limit check), SQLite in the data folder shared by the workers, the same certificate, the same roomy rate limits (\`BENCH_RATE_LIMITS\` written to a \`--rate-limits\` file), logs at \`info\` to a file
- server CPU is the sum over the primary and every worker, read from \`/proc/<pid>/stat\`; "Redis" is the CPU of the Redis server over the window (other work on the machine uses it too). On 2 cores, ${n} workers, their signing threads, the load generator and Redis all compete for the same two cores: the load generator's and Redis's CPU is CPU the workers do not get
- budget (issue 3): Palisade's full stack at ≥ 0.9× the bare provider's throughput with p99 ≤ 25 ms, and using both cores when asked to

Throughput ${n} workers / bare oidc-provider (one process): **${med(vsBare).toFixed(2)}×** (rounds: ${list(vsBare)}) — ${med(vsBare) >= 0.9 ? 'within' : '**short of**'} the ≥ 0.9× budget.
Throughput ${n} workers / Palisade one process: **${med(vsPal).toFixed(2)}×** (rounds: ${list(vsPal)}).
p99 with ${n} workers: ${W.p99.toFixed(2)} ms — ${W.p99 <= 25 ? 'within' : '**over**'} the 25 ms budget (Palisade one process ${P.p99.toFixed(2)} ms, bare ${B.p99.toFixed(2)} ms).
Server CPU with ${n} workers: **${pct(W.serverCpu)}** (100% = one core busy, 200% = both; medians: Palisade one process ${pct(P.serverCpu)}, bare ${pct(B.serverCpu)}); load generator ${pct(W.driverCpu)}${Number(values.drivers) > 1 ? ` (busiest process ${pct(W.driverCpuMax)})` : ''}, Redis ${pct(W.redisCpu)}, other processes ${pct(W.otherCpu)}.

Every round, ${n} workers:

${table(['round', '1-min load at round start', 'req/s', 'p50 ms', 'p99 ms', 'server CPU (all processes)', 'CPU by worker', 'connections by worker', 'CPU µs / token', 'load-generator CPU', 'Redis CPU', 'other processes CPU', `÷ bare`, `÷ Palisade one process`],
    rounds.map((r, i) => {
      const w = r.workers!;
      return [`round ${i + 1}`, r.load.toFixed(2), String(Math.round(w.rps)), w.p50.toFixed(2), w.p99.toFixed(2), pct(w.serverCpu), w.workerCpu!.map(pct).join(' + '), w.workerConnections!.join(' + '),
        cpuPerToken(w).toFixed(0), pct(w.driverCpu), pct(w.redisCpu), pct(w.otherCpu), vsBare[i]!.toFixed(2), vsPal[i]!.toFixed(2)];
    }))}
`;
}

type Summary = { rps: number; p50: number; p99: number; p999: number; serverCpu: number; cpuPerToken: number; driverCpu: number; otherCpu: number; redisCpu: number; driverCpuMax: number };

/**
 * Where the server's main thread spent the timed window, per request: by package (native code
 * charged to the JavaScript that called it) and by function, Palisade beside the bare provider.
 */
function hotspots(rounds: Round[]): string {
  const tally = (pick: (r: Round) => Measured) => {
    const areas = new Map<string, number>();
    const fns = new Map<string, number>();
    let requests = 0;
    for (const r of rounds) {
      const m = pick(r);
      requests += m.requests;
      addProfile(m.profile!, areas, fns);
    }
    return { areas, fns, requests };
  };
  const P = tally((r) => r.pal);
  const B = tally((r) => r.bare);
  const per = (m: Map<string, number>, k: string, n: number) => (m.get(k) ?? 0) / n;
  const busy = (t: typeof P) => ([...t.areas].reduce((s, [k, v]) => s + (k === '(idle)' ? 0 : v), 0)) / t.requests;
  const keys = [...new Set([...P.areas.keys(), ...B.areas.keys()])].filter((k) => k !== '(idle)');
  keys.sort((x, y) => Math.abs(per(P.areas, y, P.requests) - per(B.areas, y, B.requests)) - Math.abs(per(P.areas, x, P.requests) - per(B.areas, x, B.requests)));
  const areaRows = keys.slice(0, 25).map((k) => [k, per(P.areas, k, P.requests).toFixed(1), per(B.areas, k, B.requests).toFixed(1), (per(P.areas, k, P.requests) - per(B.areas, k, B.requests)).toFixed(1)]);
  const top = (t: typeof P) => [...t.fns].filter(([k]) => !k.startsWith('(idle)')).sort((x, y) => y[1] - x[1]).slice(0, 25)
    .map(([k, v]) => [k, (v / t.requests).toFixed(1), `${((100 * v) / (busy(t) * t.requests)).toFixed(1)}%`]);
  return `CPU profiles of the timed windows (main thread; µs of CPU per token request, summed over rounds):

main thread busy per request: Palisade ${busy(P).toFixed(1)} µs, bare ${busy(B).toFixed(1)} µs

By package, largest differences first (native code charged to its JavaScript caller):

${table(['package / area', 'Palisade µs/req', 'bare µs/req', 'difference'], areaRows)}

Palisade, top functions by self time:

${table(['function', 'µs/req', 'share of busy'], top(P))}

bare oidc-provider, top functions by self time:

${table(['function', 'µs/req', 'share of busy'], top(B))}
`;
}

/** Server CPU time (all its threads) per token issued in the window, µs. */
function cpuPerToken(m: Measured): number {
  return (m.serverCpu * m.seconds * 1e6) / m.requests;
}

/** A CPU fraction as a percentage; the machine-wide figure can dip a little below 0 (clock ticks), shown as 0. */
function pct(x: number): string {
  return Number.isNaN(x) ? 'n/a' : `${Math.max(0, Math.round(x * 100))}%`;
}

function providerVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../node_modules/oidc-provider/package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

if (values.serve === 'palisade' || values.serve === 'provider' || values.serve === 'bare') await serve(values.serve);
else if (values.serve !== undefined) throw new Error('--serve takes palisade, provider or bare');
else await main();
