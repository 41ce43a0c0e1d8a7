/**
 * @module workers — `palisade-server start --workers N`: a small supervising primary that runs N
 * full server nodes (worker processes) on one machine, all listening on one port.
 *
 * Every worker binds the port itself with `SO_REUSEPORT` (`reusePort`), so the kernel spreads new
 * connections over the workers and the primary is never in the data path: it only starts, watches,
 * restarts and stops them. Worker 1 starts alone first — it generates the development TLS material,
 * migrates the SQLite file, creates the shared keys and resolves `--port 0` — and the others start
 * once it listens, so nothing in the data folder is created twice at once.
 *
 *   const code = await superviseWorkers({ count: 4, start: (i, port) => forkWorker(i, port), write: (t) => process.stderr.write(t) });
 */
import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** Most workers `--workers` accepts (more than cores is allowed: each process holds ≤ 19,000 connections). */
export const MAX_WORKERS = 256;
/** Set in a worker's environment: its index, 1 to N. Only believed in a process the primary forked (with an IPC channel). */
export const WORKER_ENV = 'PALISADE_WORKER';
/** Set in a worker's environment: the port every worker shares (known once worker 1 listens, for `--port 0`). */
export const WORKER_PORT_ENV = 'PALISADE_WORKER_PORT';

/**
 * Platforms whose `SO_REUSEPORT` spreads connections over the sockets that share a port (Node's
 * `reusePort`). Elsewhere (macOS, Windows) Node refuses the option, so `--workers` above 1 is refused.
 */
export const REUSE_PORT_PLATFORMS: ReadonlySet<NodeJS.Platform> = new Set(['linux', 'freebsd', 'sunos', 'aix']);

/**
 * The worker count of `--workers`: a whole number from 1 to {@link MAX_WORKERS}, or `auto` (one
 * per core, `os.availableParallelism()`). Unset = 1: one process, no primary.
 * @throws RangeError naming the flag and the bad value.
 */
export function parseWorkerCount(raw: string | undefined, cores: number = availableParallelism()): number {
  if (raw === undefined) return 1;
  if (raw === 'auto') return Math.min(Math.max(cores, 1), MAX_WORKERS);
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new RangeError(`--workers must be auto or a whole number from 1 to ${MAX_WORKERS}, not "${raw}"`);
  return n;
}

/** What a worker process is told by its primary. */
export interface WorkerRole {
  /** 1 to N. */
  index: number;
  /** The port all workers share; undefined = the configured one. */
  port: number | undefined;
}

/** This process's role when the primary forked it; undefined in a primary or a single-process server. */
export function workerRole(env: NodeJS.ProcessEnv = process.env): WorkerRole | undefined {
  const raw = env[WORKER_ENV];
  if (raw === undefined || typeof process.send !== 'function') return undefined;
  const index = Number(raw);
  const portText = env[WORKER_PORT_ENV];
  const port = portText === undefined || portText === '' ? undefined : Number(portText);
  if (!Number.isInteger(index) || index < 1 || (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))) {
    throw new Error(`invalid ${WORKER_ENV}/${WORKER_PORT_ENV} in a worker's environment`);
  }
  return { index, port };
}

/** A worker's report that it listens (sent once, over the IPC channel). */
export interface ReadyMessage {
  type: 'ready';
  index: number;
  pid: number;
  nodeId: string;
  url: string;
  port: number;
  internalUrl?: string | undefined;
  /** The one-time admin setup link, when the server has no user yet. */
  setupUrl?: string | undefined;
  /** The start banner (printed once, by the primary, for worker 1). */
  banner: string;
}

interface SetupLinkReply {
  type: 'setup-link';
  url: string | undefined;
}

const isReady = (m: unknown): m is ReadyMessage => {
  const r = m as Partial<ReadyMessage> | null;
  return typeof r === 'object' && r !== null && r.type === 'ready' && typeof r.pid === 'number' && typeof r.nodeId === 'string' && typeof r.port === 'number' && typeof r.url === 'string' && typeof r.banner === 'string';
};
const isSetupLink = (m: unknown): m is SetupLinkReply => typeof m === 'object' && m !== null && (m as SetupLinkReply).type === 'setup-link';

/**
 * In a worker: tells the primary it is ready, answers its requests for a fresh setup link (every
 * worker writes one when it starts, so the primary asks for the last word once all have), and
 * stops the worker (`onPrimaryGone`) if the primary dies.
 */
export function reportReady(ready: ReadyMessage, o: { freshSetupLink: () => Promise<string | undefined>; onPrimaryGone: () => void }): void {
  process.on('message', (m: unknown) => {
    if (!isSetupLink(m)) return;
    o.freshSetupLink().then(
      (url) => process.send?.({ type: 'setup-link', url } satisfies SetupLinkReply),
      () => process.send?.({ type: 'setup-link', url: undefined } satisfies SetupLinkReply),
    );
  });
  if (!process.connected) {
    o.onPrimaryGone();
    return;
  }
  process.once('disconnect', o.onPrimaryGone);
  process.send?.(ready);
}

/**
 * Forks this same CLI (same flags and environment) as worker `index`, sharing `port`. Workers run
 * with `--expose-gc` so that, quiet after a burst, they can collect its garbage (heap-trim.ts).
 */
export function forkWorker(index: number, port: number | undefined, cli: string = process.argv[1]!, args: string[] = process.argv.slice(2)): ChildProcess {
  return fork(cli, args, {
    execArgv: [...process.execArgv, '--expose-gc'],
    env: { ...process.env, [WORKER_ENV]: String(index), [WORKER_PORT_ENV]: port === undefined ? '' : String(port) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

/** When the primary restarts a worker that died, and when it gives up. */
export interface RestartPolicy {
  /** Delay before restarting a worker that ran a while, ms; doubled for each quick death in a row. Default 250. */
  initialDelayMs: number;
  /** Longest delay, ms. Default 10000. */
  maxDelayMs: number;
  /** A worker that ran this long before dying died "slowly": its count of quick deaths starts again. Default 10000. */
  stableMs: number;
  /** Quick deaths in a row after which the primary stops everything and exits 1. Default 5. */
  maxQuickDeaths: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { initialDelayMs: 250, maxDelayMs: 10_000, stableMs: 10_000, maxQuickDeaths: 5 };

export interface SupervisorOptions {
  /** Workers to run, 2 to {@link MAX_WORKERS}. */
  count: number;
  /** Starts worker `index` listening on `port` (undefined: the configured port); the child needs an IPC channel. */
  start(index: number, port: number | undefined): ChildProcess;
  /** Where the primary's lines go (stderr). */
  write(text: string): void;
  restart?: Partial<RestartPolicy>;
  /** Time a worker has to report ready before it is killed, ms. Default 60000. */
  startTimeoutMs?: number;
  /** Time workers have to stop after SIGTERM before they are killed, ms. Default 30000. */
  stopTimeoutMs?: number;
}

interface Slot {
  index: number;
  child: ChildProcess | undefined;
  ready: ReadyMessage | undefined;
  startedAt: number;
  quickDeaths: number;
  timer: NodeJS.Timeout | undefined;
}

const describeExit = (code: number | null, signal: NodeJS.Signals | null) => (signal ? `killed by ${signal}` : `exit code ${code}`);

/**
 * Runs `count` workers until SIGTERM/SIGINT (forwarded to every worker as SIGTERM, then waited
 * for) or until it gives up; resolves with the primary's exit code: 0 after a clean stop, the
 * failed worker's code (or 1) when one fails to start, 1 when one keeps dying quickly.
 */
export function superviseWorkers(o: SupervisorOptions): Promise<number> {
  const policy = { ...DEFAULT_RESTART_POLICY, ...o.restart };
  const startTimeoutMs = o.startTimeoutMs ?? 60_000;
  const stopTimeoutMs = o.stopTimeoutMs ?? 30_000;
  const slots: Slot[] = Array.from({ length: o.count }, (_, i) => ({ index: i + 1, child: undefined, ready: undefined, startedAt: 0, quickDeaths: 0, timer: undefined }));
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  let port: number | undefined;
  let exitCode = 0;
  let killTimer: NodeJS.Timeout | undefined;
  let finish!: (code: number) => void;
  const done = new Promise<number>((resolve) => (finish = resolve));

  const onSignal = (signal: NodeJS.Signals) => {
    if (phase === 'stopping') return;
    o.write(`\n${signal}: stopping ${slots.filter((s) => s.child).length} worker(s)…\n`);
    stopAll(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  function launch(slot: Slot): void {
    slot.timer = undefined;
    slot.ready = undefined;
    slot.startedAt = Date.now();
    const child = o.start(slot.index, port);
    slot.child = child;
    const readyTimer = setTimeout(() => {
      o.write(`worker ${slot.index} (pid ${child.pid}) did not become ready within ${startTimeoutMs / 1000} s: killing it\n`);
      child.kill('SIGKILL');
    }, startTimeoutMs);
    child.on('message', (m: unknown) => {
      if (!isReady(m) || slot.child !== child || slot.ready || phase === 'stopping') return;
      clearTimeout(readyTimer);
      slot.ready = m;
      o.write(`worker ${slot.index} ready: node ${m.nodeId}, pid ${m.pid}${phase === 'running' ? ' (restarted)' : ''}${m.internalUrl ? `, internal ${m.internalUrl}` : ''}\n`);
      if (phase === 'starting') void started(slot);
      // A restarted worker wrote a new setup token, which replaced the one printed before.
      else if (m.setupUrl) o.write(`  the admin setup link is now: ${m.setupUrl}\n`);
    });
    child.on('error', (e) => {
      o.write(`worker ${slot.index}: ${e.message}\n`);
      // A fork that failed never emits 'exit'.
      if (child.pid === undefined) exited(slot, child, 1, null);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(readyTimer);
      exited(slot, child, code, signal);
    });
  }

  async function started(slot: Slot): Promise<void> {
    if (slot.index === 1) {
      // Worker 1 made everything the others share (TLS, schema, keys) and resolved the port.
      port = slot.ready!.port;
      for (const s of slots.slice(1)) launch(s);
    }
    if (!slots.every((s) => s.ready) || phase !== 'starting') return;
    phase = 'running';
    const first = slots[0]!.ready!;
    let setupUrl = first.setupUrl;
    // Each worker wrote its own setup token on start; ask worker 1 for the last word.
    if (setupUrl !== undefined) setupUrl = await freshSetupLink(slots[0]!);
    if ((phase as string) === 'stopping') return;
    o.write(first.banner.replace(/Palisade is running at \S+/, (line) => `${line} (${o.count} workers)`));
    if (first.setupUrl !== undefined) {
      o.write(setupUrl ? `\n  No admin account yet. Open this one-time link to create it:\n\n    ${setupUrl}\n\n` : '\n  No admin account yet, and the setup link could not be made: restart to get one.\n\n');
    }
  }

  function freshSetupLink(slot: Slot): Promise<string | undefined> {
    const child = slot.child;
    if (!child?.connected) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => reply(undefined), 10_000);
      const onMessage = (m: unknown) => {
        if (isSetupLink(m)) reply(m.url);
      };
      function reply(url: string | undefined): void {
        clearTimeout(timer);
        child!.off('message', onMessage);
        child!.off('exit', gone);
        resolve(url);
      }
      const gone = () => reply(undefined);
      child.on('message', onMessage);
      child.once('exit', gone);
      child.send({ type: 'setup-link' }, (e) => e && reply(undefined));
    });
  }

  function exited(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    const wasReady = slot.ready !== undefined;
    slot.child = undefined;
    slot.ready = undefined;
    if (phase === 'stopping') {
      // SIGTERM before its handler was installed (still starting) is a clean stop too.
      if (code !== 0 && signal !== 'SIGTERM' && exitCode === 0) exitCode = 1;
      maybeDone();
      return;
    }
    if (phase === 'starting') {
      o.write(`worker ${slot.index} (pid ${child.pid}) ${wasReady ? 'exited' : 'failed to start'} (${describeExit(code, signal)}): stopping\n`);
      stopAll(code !== null && code > 0 ? code : 1);
      return;
    }
    slot.quickDeaths = Date.now() - slot.startedAt < policy.stableMs ? slot.quickDeaths + 1 : 0;
    if (slot.quickDeaths >= policy.maxQuickDeaths) {
      o.write(`worker ${slot.index} (pid ${child.pid}) ${describeExit(code, signal)}; it died ${slot.quickDeaths} times within ${policy.stableMs / 1000} s of starting: giving up, stopping\n`);
      stopAll(1);
      return;
    }
    const delay = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** slot.quickDeaths);
    o.write(`worker ${slot.index} (pid ${child.pid}) ${wasReady ? 'exited' : 'failed to start'} (${describeExit(code, signal)}): restarting in ${delay} ms\n`);
    slot.timer = setTimeout(() => launch(slot), delay);
  }

  function stopAll(code: number): void {
    if (phase === 'stopping') return;
    phase = 'stopping';
    exitCode = code;
    for (const s of slots) {
      clearTimeout(s.timer);
      s.child?.kill('SIGTERM');
    }
    killTimer = setTimeout(() => {
      for (const s of slots) {
        if (!s.child) continue;
        o.write(`worker ${s.index} (pid ${s.child.pid}) did not stop within ${stopTimeoutMs / 1000} s: killing it\n`);
        s.child.kill('SIGKILL');
      }
    }, stopTimeoutMs);
    maybeDone();
  }

  function maybeDone(): void {
    if (slots.some((s) => s.child)) return;
    clearTimeout(killTimer);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    finish(exitCode);
  }

  launch(slots[0]!);
  return done;
}
