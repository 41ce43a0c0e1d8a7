/**
 * Real Redis processes for the high-availability tests: a standalone server (AOF optional), a
 * replica, and Sentinels, each in a temporary folder on a free port of 127.0.0.1. Every process
 * started here is killed by `stopAllRedis()` (call it in `after`), and as a backstop when the test
 * process exits or is interrupted.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './harness.ts';

/** The Redis binary (Debian's `redis-server`; Sentinel is `redis-server --sentinel <conf>`). */
export const REDIS_SERVER = process.env.PALISADE_TEST_REDIS_SERVER ?? 'redis-server';
const HOST = '127.0.0.1';

export interface HostPort {
  host: string;
  port: number;
}

/** One Redis server process. */
export interface RedisProc extends HostPort {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  /** Its working folder (AOF files, log). */
  dir: string;
  /** Its log file (kept in `dir`). */
  logFile: string;
  /** Stops it: SIGTERM (a clean shutdown, waited for) or SIGKILL (a crash). No-op if stopped. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and folder (so an AOF is reloaded); waits until it answers. */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** AOF on, fsync on every write (`--appendonly yes --appendfsync always`). Default false. */
  appendonly?: boolean;
  /** Start as a replica of this primary, and wait until the link is up. */
  replicaOf?: HostPort;
  /** Working folder; default a new temporary one (removed by `stopAllRedis`). */
  dir?: string;
  /**
   * Serve TLS only (`--port 0 --tls-port <port>`) with this key and certificate; `caFile` is the CA
   * Redis names to clients. Clients need no certificate of their own (`--tls-auth-clients no`).
   * The process's `url` is then `rediss://…`.
   */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

export interface Sentinels {
  /** `host:port` of each Sentinel, as Palisade's `redisSentinels` takes them. */
  addresses: string[];
  ports: number[];
  /** Kills every Sentinel of this group. */
  stop(): Promise<void>;
}

/** Longest wait for a process to start answering, ms. */
const START_TIMEOUT_MS = 10_000;

/**
 * `false` when `redis-server` can be run, or the reason the tests are skipped. In CI (`CI=true`)
 * a missing binary is an error; elsewhere the tests skip and say so loudly.
 */
export function redisServerSkip(what: string): false | string {
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return false;
  if (process.env.CI === 'true') throw new Error(`${REDIS_SERVER} cannot be run, and CI=true requires the ${what} to run`);
  process.stderr.write(`\n\n!!! SKIPPED: ${what} — ${REDIS_SERVER} cannot be run (they run in CI) !!!\n\n`);
  return `no ${REDIS_SERVER}`;
}

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let backstop = false;

/** Kills what is still running, synchronously (for `exit` and signals). */
function killAllNow(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

function installBackstop(): void {
  if (backstop) return;
  backstop = true;
  process.on('exit', () => {
    killAllNow();
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAllNow();
      process.kill(process.pid, signal);
    });
  }
}

/** Kills every Redis process these helpers started and removes their temporary folders. */
export async function stopAllRedis(): Promise<void> {
  const exits = [...live].map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : Promise.resolve()));
  killAllNow();
  await Promise.all(exits);
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

/**
 * Calls `fn` every `intervalMs` until it returns something other than `undefined`/`false` (thrown
 * errors count as "not yet"), and returns that; throws after `timeoutMs` with the last error.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what = 'condition', intervalMs = 50): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as Exclude<T, false | undefined>;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String((last as Error).message ?? last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * A direct connection to one Redis or Sentinel process that never retries (a failed command
 * rejects). The caller disconnects it.
 */
export function connectDirect(port: number, host = HOST, tls?: { ca: string }): Redis {
  const r = new Redis({ host, port, ...(tls ? { tls } : {}), lazyConnect: true, connectTimeout: 1000, commandTimeout: 5000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableReadyCheck: false, enableOfflineQueue: false });
  r.on('error', () => undefined);
  return r;
}

/** Runs one command on a fresh direct connection. */
export async function redisCommand(port: number, command: string, ...args: (string | number)[]): Promise<unknown> {
  const r = connectDirect(port);
  try {
    await r.connect();
    return await r.call(command, ...args);
  } finally {
    r.disconnect();
  }
}

/** `INFO <section>` as a map of field → value. */
export async function redisInfo(port: number, section: string): Promise<Map<string, string>> {
  const text = String(await redisCommand(port, 'INFO', section));
  const out = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

function logTail(file: string): string {
  if (!existsSync(file)) return '(no log)';
  return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
}

/** Spawns `redis-server args` and returns the process; it is tracked until it exits. */
function spawnRedis(args: string[]): ChildProcess {
  installBackstop();
  const child = spawn(REDIS_SERVER, args, { stdio: 'ignore' });
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

async function exited(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/**
 * Starts a Redis server on a free port in its own folder, and waits until it answers PING (and,
 * for a replica, until its link to the primary is up).
 *
 * @example const primary = await startRedis({ appendonly: true });
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisProc> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'palisade-redis-'));
  if (!options.dir) tempDirs.add(dir);
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const args = [...(options.tls
    ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', options.tls.certFile, '--tls-key-file', options.tls.keyFile, '--tls-ca-cert-file', options.tls.caFile, '--tls-auth-clients', 'no']
    : ['--port', String(port)]), '--bind', HOST, '--save', '', '--dir', dir, '--daemonize', 'no', '--logfile', logFile,
    // A replica syncs at once (the default waits 5 s for more replicas to share one transfer).
    '--repl-diskless-sync-delay', '0'];
  if (options.appendonly) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  if (options.replicaOf) args.push('--replicaof', options.replicaOf.host, String(options.replicaOf.port));
  let child: ChildProcess | undefined;

  const start = async () => {
    const c = spawnRedis(args);
    child = c;
    const died = once(c, 'exit').then(([code]) => {
      throw new Error(`redis-server on port ${port} exited (${String(code)}) while starting:\n${logTail(logFile)}`);
    });
    died.catch(() => undefined);
    const ready = (async () => {
      // PING answers LOADING (an error) until the AOF is replayed.
      const tlsCa = options.tls ? { ca: readFileSync(options.tls.caFile, 'utf8') } : undefined;
      await waitFor(async () => {
        const r = connectDirect(port, HOST, tlsCa);
        try {
          await r.connect();
          return (await r.call('PING')) === 'PONG';
        } finally {
          r.disconnect();
        }
      }, START_TIMEOUT_MS, `redis-server on port ${port} to answer PING`);
      if (options.replicaOf) {
        await waitFor(async () => (await redisInfo(port, 'replication')).get('master_link_status') === 'up', START_TIMEOUT_MS, `the replica on port ${port} to sync with its primary`);
      }
    })();
    try {
      await Promise.race([ready, died]);
    } catch (e) {
      await exited(c, 'SIGKILL', 0);
      throw new Error(`${(e as Error).message}\n--- log ---\n${logTail(logFile)}`, { cause: e });
    }
  };
  await start();

  return {
    host: HOST, port, url: `${options.tls ? 'rediss' : 'redis'}://${HOST}:${port}`, dir, logFile,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child) await exited(child, signal, 5000);
    },
    async restart() {
      if (child) await exited(child, 'SIGTERM', 5000);
      await start();
    },
  };
}

/**
 * Starts `n` Sentinels watching `primary` under `name`, with low timeouts (down after 1 s,
 * failover timeout 3 s, one replica resynced at a time, quorum a majority: 2 of 3). Each has its
 * own writable config file (Sentinel rewrites it). Returns once every Sentinel has found the other
 * Sentinels and every replica connected to the primary, so a failover can start at once.
 */
export async function startSentinels(n: number, primary: HostPort, name: string): Promise<Sentinels> {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-sentinel-'));
  tempDirs.add(dir);
  const quorum = Math.floor(n / 2) + 1;
  const replicas = Number((await redisInfo(primary.port, 'replication')).get('connected_slaves') ?? 0);
  const ports: number[] = [];
  const children: ChildProcess[] = [];
  for (let i = 0; i < n; i++) {
    const port = await freePort();
    const conf = join(dir, `sentinel-${i}.conf`);
    writeFileSync(conf, [
      `port ${port}`,
      `bind ${HOST}`,
      'daemonize no',
      `dir ${dir}`,
      `logfile ${join(dir, `sentinel-${i}.log`)}`,
      'sentinel resolve-hostnames no',
      `sentinel monitor ${name} ${primary.host} ${primary.port} ${quorum}`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 3000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'));
    children.push(spawnRedis([conf, '--sentinel']));
    ports.push(port);
  }
  try {
    for (const [i, port] of ports.entries()) {
      await waitFor(async () => {
        const fields = (await redisCommand(port, 'SENTINEL', 'MASTER', name)) as string[];
        const m = new Map<string, string>();
        for (let k = 0; k + 1 < fields.length; k += 2) m.set(fields[k]!, fields[k + 1]!);
        return Number(m.get('num-other-sentinels')) >= n - 1 && Number(m.get('num-slaves')) >= replicas;
      }, 15_000, `sentinel ${i} (port ${port}) to find its peers and replicas`, 100);
    }
  } catch (e) {
    for (const c of children) await exited(c, 'SIGKILL', 0);
    throw new Error(`${(e as Error).message}\n--- log ---\n${logTail(join(dir, 'sentinel-0.log'))}`, { cause: e });
  }
  return {
    addresses: ports.map((p) => `${HOST}:${p}`),
    ports,
    async stop() {
      await Promise.all(children.map((c) => exited(c, 'SIGKILL', 0)));
    },
  };
}

const clients = new Set<Redis>();
/** Each tracked client's recent connection events (for a failure's message). */
const history = new WeakMap<Redis, string[]>();
let tracking = false;

/**
 * Records every ioredis client this process connects from now on (the server's too: one ioredis
 * module), so that `disconnectTrackedClients` can end what a `close()` left open, and
 * `trackedClientsReport` can say where each stands. Recording only (a listener more on each
 * client's events); the clients behave as before.
 */
export function trackRedisClients(): void {
  if (tracking) return;
  tracking = true;
  const connect = Redis.prototype.connect;
  Redis.prototype.connect = function (this: Redis, ...args: Parameters<Redis['connect']>) {
    if (!clients.has(this)) {
      clients.add(this);
      const seen: string[] = [];
      history.set(this, seen);
      const note = (what: string) => {
        seen.push(`@${performance.now().toFixed(0)} ${what}`);
        if (seen.length > 12) seen.shift();
      };
      this.on('ready', () => note(`ready ${this.stream?.remotePort ?? '?'}`));
      this.on('close', () => note('close'));
      this.on('reconnecting', (ms: number) => note(`reconnecting in ${ms}`));
      this.on('error', (e: Error) => note(`error ${e.message.slice(0, 80)}`));
      this.on('+switch-master', () => note('switch-master'));
    }
    return connect.apply(this, args);
  };
}

/** The clients tracked so far, in the order they first connected. */
export function trackedClients(): Redis[] {
  return [...clients];
}

/** Every tracked client's status and its last connection events (at `performance.now()` ms), one line each. */
export function trackedClientsReport(): string {
  return [...clients].map((c, i) => `client ${i}: ${c.status} (${(history.get(c) ?? []).join('; ')})`).join('\n');
}

/** Disconnects every tracked client (and, through it, any Sentinel connections it still holds). */
export function disconnectTrackedClients(): void {
  for (const c of clients) c.disconnect();
  clients.clear();
}

/** `CLIENT LIST` of a Redis or Sentinel process, one map per connection. */
export async function clientList(port: number): Promise<Map<string, string>[]> {
  const text = String(await redisCommand(port, 'CLIENT', 'LIST'));
  return text.split('\n').filter(Boolean).map((line) => new Map(line.trim().split(' ').map((kv) => {
    const i = kv.indexOf('=');
    return [kv.slice(0, i), kv.slice(i + 1)] as [string, string];
  })));
}

/** The primary's address a Sentinel names now (`SENTINEL get-master-addr-by-name`). */
export async function sentinelPrimary(sentinelPort: number, name: string): Promise<HostPort | undefined> {
  const r = (await redisCommand(sentinelPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as [string, string] | null;
  return r ? { host: r[0], port: Number(r[1]) } : undefined;
}
