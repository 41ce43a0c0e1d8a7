/** Shared helpers for benchmarks: percentiles, machine description, markdown output. */
import { cpus, totalmem } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { Session } from 'node:inspector/promises';
import { fetch as ufetch, type Dispatcher } from 'undici';
import type { Palisade } from '../packages/server/src/app.ts';
import type { TestServer } from '../packages/server/test/support/harness.ts';

export function percentiles(samples: number[]): { p50: number; p99: number; p999: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** What a closed loop measured in its timed window. */
export interface LoopResult {
  /** Latency (ms) of every request that succeeded and completed inside the window. */
  samples: number[];
  /** Requests that failed and completed inside the window. */
  errors: number;
  /** The first failure, of the whole run (warm-up included). */
  firstError: string;
  /** CPU time of this process over the window. */
  cpu: NodeJS.CpuUsage;
}

/**
 * The load side of a benchmark driver: `loops` closed loops, each with one `request` in flight, from
 * `startedAt` (epoch ms; drivers sharing one window get it from their parent) through a warm-up of
 * `warmupSeconds`, then `seconds` timed. `tell` hears `window-open` and `window-closed`, so the
 * parent can read the server's CPU over exactly that window. `request` resolves to an error text, or
 * undefined when the answer was right.
 */
export async function closedLoop(o: {
  loops: number; warmupSeconds: number; seconds: number; startedAt?: number;
  tell: (phase: 'window-open' | 'window-closed') => void;
  request: () => Promise<string | undefined>;
}): Promise<LoopResult> {
  const w = timedWindow(o);
  const samples: number[] = [];
  let errors = 0;
  let firstError = '';
  const loop = async () => {
    while (w.now() < w.end) {
      const start = w.now();
      const error = await attempt(o.request);
      if (error !== undefined && !firstError) firstError = error;
      const end = w.now();
      // Throughput counts the requests that completed inside the window.
      if (end >= w.start && end <= w.end) {
        if (error === undefined) samples.push(end - start);
        else errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: o.loops }, loop));
  return { samples, errors, firstError, cpu: await w.closed };
}

/**
 * An open loop: a new `request` starts every 1000 / `rate` ms whatever the answers (as independent
 * users arrive), through the same warm-up and window as `closedLoop`. Each latency is measured from
 * the moment the request was due, so a stall shows in the figures instead of slowing the load (no
 * coordinated omission); a connection pool that queues requests counts the queueing too. The window
 * holds the requests due inside it; their answers are awaited after it (at most `graceMs`; one still
 * unanswered then counts as failed).
 */
export async function openLoop(o: {
  rate: number; warmupSeconds: number; seconds: number; startedAt?: number; graceMs?: number;
  tell: (phase: 'window-open' | 'window-closed') => void;
  request: () => Promise<string | undefined>;
}): Promise<LoopResult> {
  if (!(o.rate > 0)) throw new Error('openLoop: rate must be positive');
  const w = timedWindow(o);
  const interval = 1000 / o.rate;
  const samples: number[] = [];
  let errors = 0;
  let firstError = '';
  const pending = new Set<Promise<void>>();
  const launch = (due: number) => {
    const p = attempt(o.request).then((error) => {
      pending.delete(p);
      if (error !== undefined && !firstError) firstError = error;
      if (due < w.start) return;
      if (error === undefined) samples.push(w.now() - due);
      else errors++;
    });
    pending.add(p);
  };
  // Every request due by now is started (a late timer starts several at once, each keeping its own due time).
  for (let due = w.now(); due < w.end; due += interval) {
    const wait = due - w.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    launch(due);
  }
  const cpu = await w.closed;
  const grace = new Promise<'late'>((r) => setTimeout(() => r('late'), o.graceMs ?? 10_000).unref());
  if ((await Promise.race([Promise.all(pending).then(() => 'done' as const), grace])) === 'late') {
    errors += pending.size;
    firstError ||= `${pending.size} requests unanswered ${o.graceMs ?? 10_000} ms after the window`;
  }
  return { samples, errors, firstError, cpu };
}

/** Runs `request`, turning a throw into its error text. */
async function attempt(request: () => Promise<string | undefined>): Promise<string | undefined> {
  try {
    return await request();
  } catch (e) {
    return String(e);
  }
}

/** The clock, the timed window's bounds (ms on that clock) and its CPU reading, shared by both loops. */
function timedWindow(o: { warmupSeconds: number; seconds: number; startedAt?: number; tell: (phase: 'window-open' | 'window-closed') => void }) {
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  const t0 = now() - (Date.now() - (o.startedAt ?? Date.now()));
  const start = t0 + o.warmupSeconds * 1000;
  const end = start + o.seconds * 1000;
  let cpuStart = process.cpuUsage();
  setTimeout(() => {
    cpuStart = process.cpuUsage();
    o.tell('window-open');
  }, Math.max(0, start - now()));
  const closed = new Promise<NodeJS.CpuUsage>((resolve) => setTimeout(() => {
    resolve(process.cpuUsage(cpuStart));
    o.tell('window-closed');
  }, Math.max(0, end - now())));
  return { now, start, end, closed };
}

/** What a driver reports of its timed window: counts, rate and latencies (ms). */
export interface LoopSummary {
  requests: number;
  errors: number;
  firstError: string;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  mean: number;
  /** CPU time of the load generator over the window, as a fraction of one core. */
  driverCpu: number;
}

/** A closed loop's window as a driver reports it (`seconds`: the window's length). */
export function summarise(loop: LoopResult, seconds: number): LoopSummary {
  if (loop.samples.length === 0) throw new Error(`no successful request in the window; first error: ${loop.firstError}`);
  const p = percentiles(loop.samples);
  return {
    requests: loop.samples.length, errors: loop.errors, firstError: loop.firstError, seconds, rps: loop.samples.length / seconds,
    p50: p.p50, p99: p.p99, p999: p.p999, mean: p.mean, driverCpu: (loop.cpu.user + loop.cpu.system) / 1e6 / seconds,
  };
}

/** One line: CPU model, cores, memory, Node version, date. */
export function machine(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? 'unknown CPU'} × ${c.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}

export function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

const DOC = new URL('../docs/BENCHMARKS.md', import.meta.url);

/** Replaces (or appends) the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` in docs/BENCHMARKS.md. */
export function writeSection(name: string, title: string, body: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n## ${title}\n\n${body.trim()}\n${end}`;
  let doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n\nFigures measured on the project machine (2 cores, noisy): every benchmark compares against a baseline measured in the same run and reports ratios.\n';
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  doc = i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(DOC, doc);
}

/** Busy CPU seconds of the whole machine so far, from /proc/stat (Linux), else NaN. */
export function machineBusy(): number {
  try {
    const [user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return (user! + nice! + system! + irq! + softirq!) / 100;
  } catch {
    return Number.NaN;
  }
}

/** The next IPC message of `child` that `pick` accepts; rejects if the child exits first. */
export function nextMessage<T>(child: ChildProcess, pick: (m: unknown) => T | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown) => {
      const v = pick(m);
      if (v === undefined) return;
      child.off('message', onMessage).off('exit', onExit);
      resolve(v);
    };
    const onExit = (code: number | null) => reject(new Error(`child exited (${code}) before answering`));
    child.on('message', onMessage).once('exit', onExit);
  });
}

/** Sends `message` to `child` and waits for the answer `pick` accepts. */
export function ask<T>(child: ChildProcess, message: unknown, pick: (m: unknown) => T | undefined): Promise<T> {
  const answer = nextMessage(child, pick);
  child.send(message as object);
  return answer;
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

/**
 * Adds a V8 CPU profile's self time (µs) to `areas` (by package, Node subsystem or Palisade file;
 * a native frame counts for the JavaScript that called it) and to `fns` (by function).
 */
export function addProfile(file: string, areas: Map<string, number>, fns: Map<string, number>): void {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  prof.samples.forEach((id, i) => {
    const us = prof.timeDeltas[i] ?? 0;
    const f = byId.get(id)!.callFrame;
    const fn = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(packages|bench)\//, '$1/')}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    fns.set(fn, (fns.get(fn) ?? 0) + us);
    let cur: number | undefined = id;
    while (cur !== undefined && !byId.get(cur)!.callFrame.url && parent.get(cur) !== undefined && byId.get(parent.get(cur)!)!.callFrame.url) cur = parent.get(cur);
    const url = byId.get(cur ?? id)!.callFrame.url;
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
    const area = pkg ?? (url.startsWith('node:') ? `node:${url.slice(5).replace(/^internal\//, '').split('/')[0]}` : url.includes('/packages/') ? `palisade ${url.replace(/^.*\/packages\/[^/]+\/src\//, '')}` : url ? 'bench' : f.functionName);
    areas.set(area, (areas.get(area) ?? 0) + us);
  });
}

/** What a benchmark asks the server process it started. */
export type Ask = { ask: 'cpu' | 'profile-start' | 'stop' } | { ask: 'profile-stop'; file: string };

/**
 * In a benchmark's server process: answers the parent's asks — its CPU use, a CPU profile of a
 * window (`profile-start`, then `profile-stop` writes it to `file`), and `stop` (runs `stop`, exits 0).
 */
export function answerAsks(stop: () => Promise<void>): void {
  const inspector = new Session();
  process.on('message', (m: Ask) => {
    void (async () => {
      if (m.ask === 'cpu') process.send!({ cpu: process.cpuUsage() });
      else if (m.ask === 'profile-start') {
        inspector.connect();
        await inspector.post('Profiler.enable');
        await inspector.post('Profiler.setSamplingInterval', { interval: 200 });
        await inspector.post('Profiler.start');
        process.send!({ profiling: true });
      } else if (m.ask === 'profile-stop') {
        const { profile } = await inspector.post('Profiler.stop');
        writeFileSync(m.file, JSON.stringify(profile));
        inspector.disconnect();
        process.send!({ profiled: m.file });
      } else if (m.ask === 'stop') {
        await stop();
        process.exit(0);
      }
    })();
  });
}

/**
 * A `TestServer` view of a server running elsewhere (another process, the real CLI), so the test
 * harness's helpers (createAdmin, apiClient, deviceLogin) work against it. `close` does nothing.
 */
export function remoteServer(url: string, dispatcher: Dispatcher, server: Partial<Palisade> = {}): TestServer {
  return {
    server: server as Palisade, url, dispatcher: dispatcher as TestServer['dispatcher'], securityEvents: [],
    fetch: (path, init = {}) => {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return ufetch(new URL(path, url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    close: async () => {},
  };
}
