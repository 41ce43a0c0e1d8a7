/**
 * @module fuzz/fuzz — runs one surface (`http` or `ws`) against a Palisade server in a child
 * process: starts it, makes real fixtures through the real flows (the admin via the setup page,
 * device-grant sign-ins for the CLI and the extension, an API client), sends `count` generated
 * inputs with `concurrency` in flight, checks every answer, watches the process (exit = crash),
 * its memory (RSS from /proc, heap from process.memoryUsage() after a full GC) and two canaries
 * (`/healthz`, and a well-behaved agent's ping) that must keep being served throughout.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request, fetch as ufetch } from 'undici';
import { ask, nextMessage } from '../lib.ts';
import { createAdmin, deviceLogin, clientToken, type TestServer } from '../../packages/server/test/support/harness.ts';
import { SyntheticAgent } from '../../packages/server/test/support/agent.ts';
import type { Palisade } from '../../packages/server/src/app.ts';
import type { FuzzAsk, MemSample, Ready } from './server.ts';
import { GRANTED } from './gen.ts';
import { generateHttp, sendHttp, checkHttp, type HttpContext, type HttpInput, type HttpOutcome } from './http.ts';
import { generateWs, FuzzConnection, runRawUnit, runPreauthUnit, wsPlaceholders, type WsContext, type WsOutcome, type WsUnit } from './ws.ts';
import { knownId, printable, type Finding, type Violation } from './oracle.ts';

export type Surface = 'http' | 'ws';

export interface FuzzOptions {
  surface: Surface;
  seed: string;
  /** Inputs to send. */
  count: number;
  /** Inputs in flight at once (HTTP requests, or WebSocket connections). Default 8. */
  concurrency?: number;
  /** Only these input indices, one at a time, each printed in full with its outcome. */
  only?: number[] | undefined;
  /** Progress and findings are written here. Default stderr. */
  log?: (line: string) => void;
  /** Seconds between progress lines. Default 10. */
  progressEvery?: number;
  /** Tokens are renewed this often (access tokens live 15 minutes), ms. Default 10 minutes. */
  refreshMs?: number;
  /** Time one input may take before it counts as a hang, ms. Default 15000. */
  timeoutMs?: number;
  /** `lifted` (default): rate limits off so inputs reach the handlers; `default`: the shipped limits. */
  limits?: 'lifted' | 'default';
  /** Write a heap snapshot of the server at the warm-up point and at the end into this folder. */
  heapSnapshots?: string | undefined;
}

export interface MemPoint {
  at: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  fds: number;
}

export interface SurfaceResult {
  surface: Surface;
  seed: string;
  limits: 'lifted' | 'default';
  count: number;
  done: number;
  seconds: number;
  rate: number;
  concurrency: number;
  /** Outcomes by label (HTTP status, WebSocket frame types and close codes). */
  outcomes: Record<string, number>;
  /** Violations by kind (known findings excluded). */
  kinds: Record<string, number>;
  /** Up to 20 examples of each kind, with the input. */
  findings: Finding[];
  /** Known findings seen, by id, with one example each. */
  known: Record<string, { count: number; example: Finding }>;
  crashed?: { code: number | null; signal: string | null; stderr: string; inFlight: string[] } | undefined;
  /**
   * GC'd samples after the fixtures, after the warm-up (10 % of the inputs) and at the end;
   * `gc` at every tenth of the run (after a full GC); `trace` every few seconds (no GC).
   */
  memory: { start: MemPoint; warm: MemPoint; end: MemPoint; gc: MemPoint[]; trace: MemPoint[]; heapDriftPct: number; rssDriftPct: number };
  canary: { http: { n: number; p50: number; p99: number; max: number; failures: number }; ws: { n: number; p50: number; p99: number; max: number; failures: number } };
  /** Security events counted by the server (`Success|Failure  activity  code`). */
  events: Record<string, number>;
  /** Lines the server logged at `error` or above that are not security events. */
  serverErrors: string[];
  /** WebSocket only: frames written (a unit may write many). */
  framesSent?: number | undefined;
}

// ── the server process and its fixtures ──────────────────────────────────────────────────────────

interface Fixtures {
  adminToken: string;
  agentToken: string;
  clientToken: string;
  clientId: string;
  clientSecret: string;
  taskIds: string[];
}

interface Target {
  child: ChildProcess;
  ready: Ready;
  work: string;
  t: TestServer;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

async function startTarget(limits: 'lifted' | 'default'): Promise<Target> {
  const work = mkdtempSync(join(tmpdir(), 'palisade-fuzz-'));
  const child = fork(new URL('./server.ts', import.meta.url).pathname, [], {
    env: { ...process.env, FUZZ_WORK: work, FUZZ_LIMITS: limits },
    execArgv: [...process.execArgv.filter((a) => !a.startsWith('--test')), '--expose-gc'],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-64 * 1024);
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const ready = await nextMessage(child, (m) => (m as { ready?: Ready }).ready).catch((e: Error) => {
    throw new Error(`the server process did not start: ${e.message}\n${err}`);
  });
  const dispatcher = new Agent({ connect: { ca: ready.ca } });
  const t: TestServer = {
    server: { setupUrl: ready.setupUrl } as Palisade,
    url: ready.url, dispatcher, securityEvents: [],
    fetch: (path, init = {}) => {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return ufetch(new URL(path, ready.url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    close: async () => {},
  };
  return { child, ready, work, t, stderr: () => err, exited };
}

async function signIn(t: TestServer): Promise<{ adminToken: string; agentToken: string }> {
  const admin = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
  const agent = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
  return { adminToken: admin.access_token, agentToken: agent.access_token };
}

async function makeFixtures(t: TestServer): Promise<Fixtures> {
  await createAdmin(t);
  const { adminToken, agentToken } = await signIn(t);
  const res = await t.fetch('/api/v1/clients', { method: 'POST', token: adminToken, body: JSON.stringify({ name: 'fuzz client' }), headers: { 'content-type': 'application/json' } });
  if (res.status !== 201) throw new Error(`creating the fuzz API client failed: ${res.status} ${await res.text()}`);
  const { clientId, clientSecret } = (await res.json()) as { clientId: string; clientSecret: string };
  return { adminToken, agentToken, clientId, clientSecret, clientToken: await clientToken(t, clientId, clientSecret), taskIds: [] };
}

/** Tasks for inputs to name: one that succeeded (inputs cancel only this one), one queued for an hour (site nobody grants). */
async function fixtureTasks(t: TestServer, f: Fixtures): Promise<void> {
  const submit = async (body: unknown, prefer?: string) => {
    const res = await t.fetch('/api/v1/tasks', { method: 'POST', token: f.clientToken, body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...(prefer ? { prefer } : {}) } });
    const v = (await res.json()) as { id?: string };
    if (!v.id) throw new Error(`fixture task refused: ${res.status} ${JSON.stringify(v)}`);
    f.taskIds.push(v.id);
  };
  await submit({ site: GRANTED[0], steps: [{ type: 'navigate', url: `${GRANTED[0]}/` }] }, 'wait=5');
  await submit({ site: 'https://queued.example', steps: [{ type: 'navigate', url: 'https://queued.example/' }], waitForAgent: true, timeoutMs: 3_600_000 });
}

async function memPoint(child: ChildProcess, pid: number, gc: boolean, at: number): Promise<MemPoint> {
  const m = await ask(child, { ask: 'mem', gc } satisfies FuzzAsk, (x) => (x as { mem?: MemSample }).mem);
  let rss = m.rss;
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    if (kb) rss = Number(kb) * 1024;
  } catch {
    // not Linux: process.memoryUsage().rss
  }
  let fds = -1;
  try {
    fds = readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    // not Linux
  }
  return { at, rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, fds };
}

// ── recording ────────────────────────────────────────────────────────────────────────────────────

const EXAMPLES_PER_KIND = 20;

class Recorder {
  readonly outcomes = new Map<string, number>();
  readonly kinds = new Map<string, number>();
  readonly findings: Finding[] = [];
  readonly known = new Map<string, { count: number; example: Finding }>();
  readonly #log: (s: string) => void;
  readonly #verbose: boolean;
  constructor(log: (s: string) => void, verbose: boolean) {
    this.#log = log;
    this.#verbose = verbose;
  }
  count(label: string): void {
    this.outcomes.set(label, (this.outcomes.get(label) ?? 0) + 1);
  }
  add(surface: Surface, seed: string, index: number, route: string, tags: readonly string[], violations: Violation[], input: string, observed: string, status?: number, code?: string, target?: string): void {
    for (const v of violations) {
      const known = knownId({ surface, route, target, tags, kind: v.kind, detail: v.detail, status, code });
      const f: Finding = { ...v, surface, seed, index, input, observed, known };
      if (known) {
        const k = this.known.get(known);
        if (k) k.count++;
        else {
          this.known.set(known, { count: 1, example: f });
          this.#log(`  known finding ${known} at ${surface} seed=${seed} index=${index}`);
        }
        continue;
      }
      const n = (this.kinds.get(v.kind) ?? 0) + 1;
      this.kinds.set(v.kind, n);
      if (n <= EXAMPLES_PER_KIND) {
        this.findings.push(f);
        if (n <= 3 || this.#verbose) this.#log(formatFinding(f));
      }
    }
  }
}

/** A finding as the report prints it: where, what, how to reproduce, the input and the answer. */
export function formatFinding(f: Finding): string {
  return [
    `✖ ${f.kind} — ${f.surface} seed=${f.seed} index=${f.index}${f.known ? ` (known: ${f.known})` : ''}`,
    `  ${f.detail}`,
    `  reproduce: node bench/fuzz/run.ts --surface ${f.surface} --seed ${JSON.stringify(f.seed)} --only ${f.index}`,
    `  input:\n${indent(f.input)}`,
    `  observed:\n${indent(f.observed)}`,
  ].join('\n');
}

const indent = (s: string) => s.split('\n').map((l) => `    ${l}`).join('\n');

function describeHttp(i: HttpInput): string {
  return `[${i.route}] mode=${i.mode} tags=${i.tags.join(',')}`;
}

function observedHttp(o: HttpOutcome): string {
  if (o.responses.length === 0) return `no response: ${o.error ?? '?'} after ${o.ms.toFixed(0)} ms`;
  return o.responses.map((r) => `HTTP ${r.status} ${r.contentType} (${o.ms.toFixed(0)} ms)\n${printable(r.body, 1500)}`).join('\n');
}

function pct(samples: number[]): { n: number; p50: number; p99: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? 0 };
}

// ── the run ──────────────────────────────────────────────────────────────────────────────────────

/** Runs one surface; see the module comment. */
export async function runSurface(o: FuzzOptions): Promise<SurfaceResult> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const concurrency = o.only ? 1 : (o.concurrency ?? 8);
  const timeoutMs = o.timeoutMs ?? 15_000;
  const indices = o.only ?? null;
  const total = indices ? indices.length : o.count;
  const rec = new Recorder(log, !!indices);
  const target = await startTarget(o.limits ?? 'lifted');
  const { child, ready, t } = target;
  let crashed: SurfaceResult['crashed'];
  let stopping = false;
  const inFlight = new Map<number, string>();
  const inFlightSince = new Map<number, number>();
  const phase = new Map<number, string>();
  void target.exited.then(({ code, signal }) => {
    if (stopping) return;
    crashed = { code, signal, stderr: target.stderr(), inFlight: [...inFlight.values()] };
    log(`✖ the server process exited (code ${code}, signal ${signal}) with ${inFlight.size} input(s) in flight:\n${[...inFlight.values()].join('\n')}\n${target.stderr()}`);
  });

  const fx = await makeFixtures(t);
  const target4 = { host: '127.0.0.1', port: ready.port, ca: ready.ca };
  // A generated Host header becomes undici's TLS server name: the certificate chain is still checked, its names are not.
  const dispatcher = new Agent({ connect: { ca: ready.ca, checkServerIdentity: () => undefined }, connections: concurrency * 2, pipelining: 1, keepAliveTimeout: 60_000 });
  const side = new Agent({ connect: { ca: ready.ca }, connections: 4 });
  // The fixture agent runs what the HTTP inputs submit to granted sites (so tasks finish and
  // dispatch, progress and results are exercised); on the WebSocket surface it is the canary.
  const canary = await SyntheticAgent.connect({ url: ready.url, token: fx.agentToken, ca: ready.ca, grants: GRANTED, instanceId: 'fuzz-canary' });
  await fixtureTasks(t, fx);

  const httpCtx: HttpContext = { target: target4, origin: ready.url, ...fx };
  const wsCtx: WsContext = { target: target4, wsUrl: `${ready.url.replace(/^https/, 'wss')}/ws/agent`, agentToken: fx.agentToken, adminToken: fx.adminToken, clientToken: fx.clientToken };

  const start = await memPoint(child, ready.pid, true, 0);
  let warm: MemPoint | undefined;
  const trace: MemPoint[] = [start];
  const warmAt = Math.max(1, Math.floor(total * 0.1));

  // Canaries: /healthz and the agent's ping, every 250 ms; each must answer within 5 s.
  const canaryHttp: number[] = [];
  const canaryWs: number[] = [];
  let canaryHttpFail = 0;
  let canaryWsFail = 0;
  let seq = 0;
  const canaryTimer = setInterval(() => {
    if (crashed) return;
    const t0 = performance.now();
    void request(`${ready.url}/healthz`, { dispatcher: side, headersTimeout: 5000, bodyTimeout: 5000 }).then(async (r) => {
      await r.body.text();
      if (r.statusCode !== 200) throw new Error(`healthz ${r.statusCode}`);
      canaryHttp.push(performance.now() - t0);
    }).catch((e: Error) => {
      if (stopping || crashed) return;
      canaryHttpFail++;
      rec.add(o.surface, o.seed, -1, 'canary', [], [{ kind: 'canary', detail: `/healthz failed: ${e.message}` }], 'GET /healthz', e.message);
    });
    const t1 = performance.now();
    const tag = ++seq;
    if (canary.ws.readyState !== canary.ws.OPEN) return;
    canary.send({ type: 'ping', t: tag });
    void canary.next((f) => f.type === 'pong' && f.t === tag, 5000).then(() => canaryWs.push(performance.now() - t1)).catch((e: Error) => {
      if (stopping || crashed) return;
      canaryWsFail++;
      rec.add(o.surface, o.seed, -1, 'canary', [], [{ kind: 'canary', detail: `the canary agent's ping got no pong: ${e.message}` }], '{"type":"ping"}', e.message);
    });
  }, 250);
  canaryTimer.unref();
  void canary.closed().then(({ code, reason }) => {
    if (stopping || crashed) return;
    rec.add(o.surface, o.seed, -1, 'canary', [], [{ kind: 'canary', detail: `the canary agent was disconnected: ${code} ${reason}` }], '(canary connection)', `${code} ${reason}`);
  });

  // Tokens live 15 minutes: renew them (and the canary's, in-band) well before.
  const refresh = setInterval(() => {
    void (async () => {
      const s = await signIn(t);
      const token = await clientToken(t, fx.clientId, fx.clientSecret);
      Object.assign(httpCtx, s, { clientToken: token });
      Object.assign(wsCtx, s, { clientToken: token });
      canary.send({ type: 'auth', token: s.agentToken });
      log(`  tokens renewed`);
    })().catch((e: Error) => log(`  renewing tokens failed: ${e.message}`));
  }, o.refreshMs ?? 10 * 60_000);
  refresh.unref();

  // WebSocket surface: a feeder submits tasks the fuzzed agents are dispatched (their units refer to them).
  const feeder = o.surface === 'ws' && !indices ? setInterval(() => {
    void request(`${ready.url}/api/v1/tasks`, {
      method: 'POST', dispatcher: side,
      headers: { authorization: `Bearer ${httpCtx.clientToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ site: GRANTED[0], steps: [{ type: 'navigate', url: `${GRANTED[0]}/` }], waitForAgent: true, timeoutMs: 5000 }),
    }).then((r) => r.body.dump()).catch(() => undefined);
  }, 100) : undefined;
  feeder?.unref();

  let next = 0;
  let done = 0;
  let framesSent = 0;
  const t0 = performance.now();
  let sampling = false;
  const snapshot = (name: string) => ask(child, { ask: 'heap-snapshot', file: join(o.heapSnapshots!, `${o.surface}-${name}.heapsnapshot`) } satisfies FuzzAsk, (m) => (m as { snapshot?: string }).snapshot).then((f) => log(`  heap snapshot: ${f}`));
  // After a full GC at every tenth of the run (the first is the warm-up point): a leak shows as a
  // heap that keeps rising from one to the next, a cache filling up as one that levels off.
  const gcTrace: MemPoint[] = [];
  const warmUp = async () => {
    if (sampling || crashed || done < warmAt * (gcTrace.length + 1) || gcTrace.length >= 9) return;
    sampling = true;
    const p = await memPoint(child, ready.pid, true, done).finally(() => (sampling = false));
    gcTrace.push(p);
    trace.push(p);
    if (!warm && o.heapSnapshots) await snapshot('warm');
    warm ??= p;
  };
  // Progress, the memory trace, and inputs stuck in flight far past every time limit (a hang the
  // senders' own timeouts did not catch).
  const stuckMs = timeoutMs + 75_000;
  const reported = new Set<number>();
  const progress = setInterval(() => {
    void (async () => {
      if (sampling || crashed) return;
      const now = performance.now();
      for (const [i, since] of inFlightSince) {
        if (now - since > stuckMs && !reported.has(i)) {
          reported.add(i);
          rec.add(o.surface, o.seed, i, 'stuck', [], [{ kind: 'hang', detail: `in flight for ${((now - since) / 1000).toFixed(0)} s` }], `${inFlight.get(i) ?? '?'} phase=${phase.get(i) ?? '?'}`, 'no outcome');
        }
      }
      sampling = true;
      const m = await memPoint(child, ready.pid, false, done).finally(() => (sampling = false));
      trace.push(m);
      const rate = done / ((now - t0) / 1000);
      const bad = [...rec.kinds.values()].reduce((a, b) => a + b, 0);
      log(`  ${o.surface} ${done}/${total} ${rate.toFixed(0)}/s · findings ${bad} · known ${[...rec.known.values()].reduce((a, b) => a + b.count, 0)} · rss ${(m.rss / 2 ** 20).toFixed(0)} MiB · heap ${(m.heapUsed / 2 ** 20).toFixed(0)} MiB · fds ${m.fds} · in flight ${inFlight.size}`);
    })().catch(() => undefined);
  }, (o.progressEvery ?? 10) * 1000);
  progress.unref();

  // Replaying (--only): what the server wrote to stderr during each input (Koa prints the errors
  // oidc-provider does not handle there), and the new lines of its error log.
  let stderrSeen = target.stderr().length;
  let errorLogSeen = 0;
  const newStderr = () => {
    const err = target.stderr();
    const fresh = err.slice(stderrSeen);
    stderrSeen = err.length;
    const file = join(target.work, 'errors.log');
    const log = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const logged = log.slice(errorLogSeen).split('\n').filter((l) => l && !l.includes('"siem":true'));
    errorLogSeen = log.length;
    return `${fresh.trim() ? `\n  server stderr:\n${indent(fresh.trim())}` : ''}${logged.length > 0 ? `\n  server error log:\n${indent(logged.join('\n'))}` : ''}`;
  };

  const take = (): number | undefined => {
    if (crashed) return undefined;
    if (indices) return next < indices.length ? indices[next++] : undefined;
    return next < o.count ? next++ : undefined;
  };

  const httpWorker = async () => {
    for (let i = take(); i !== undefined; i = take()) {
      const input = generateHttp(o.seed, i);
      inFlight.set(i, `http seed=${o.seed} index=${i} ${describeHttp(input)}`);
      inFlightSince.set(i, performance.now());
      const out = await sendHttp(input, httpCtx, dispatcher, timeoutMs, (p) => phase.set(i, p));
      inFlight.delete(i);
      inFlightSince.delete(i);
      if (crashed) break;
      const v = checkHttp(input, out);
      const first = out.responses[0];
      rec.count(first ? `${input.mode === 'undici' ? '' : `${input.mode} `}${first.status}` : `${input.mode} no response`);
      let code: string | undefined;
      try {
        code = first?.contentType.includes('json') ? (JSON.parse(first.body) as { code?: string }).code : undefined;
      } catch {
        code = undefined;
      }
      if (v.length > 0 || indices) rec.add('http', o.seed, i, input.route, input.tags, v, `${describeHttp(input)}\n${out.sent}`, observedHttp(out), first?.status, code, input.target);
      if (indices) log(`— http index ${i} ${describeHttp(input)}\n${out.sent}\n→ ${observedHttp(out)}\n  violations: ${v.length === 0 ? 'none' : v.map((x) => `${x.kind}: ${x.detail}`).join('; ')}${newStderr()}`);
      await cleanUp(input, out);
      done++;
      await warmUp();
    }
  };

  /** Keeps state bounded: API clients created by inputs are deleted, tasks left waiting are cancelled. */
  const cleanUp = async (input: HttpInput, out: HttpOutcome) => {
    const r = out.responses[0];
    if (!r || input.mode !== 'undici' || r.status >= 300) return;
    let body: { clientId?: string; id?: string; state?: string };
    try {
      body = JSON.parse(r.body) as typeof body;
    } catch {
      return;
    }
    const call = (method: 'DELETE' | 'POST', path: string) => request(`${ready.url}${path}`, { method, dispatcher: side, headers: { authorization: `Bearer ${httpCtx.adminToken}` } }).then((x) => x.body.dump()).catch(() => undefined);
    if (input.route === 'POST /api/v1/clients' && input.method === 'POST' && body.clientId) await call('DELETE', `/api/v1/clients/${encodeURIComponent(body.clientId)}`);
    if (input.route === 'POST /api/v1/tasks' && input.method === 'POST' && body.id && body.state && ['queued', 'dispatched', 'running'].includes(body.state)) await call('POST', `/api/v1/tasks/${encodeURIComponent(body.id)}/cancel`);
  };

  const wsWorker = async (slot: number) => {
    let conn: FuzzConnection | undefined;
    const unitTimeout = timeoutMs;
    for (let i = take(); i !== undefined; i = take()) {
      const unit = generateWs(o.seed, i);
      inFlight.set(i, `ws seed=${o.seed} index=${i} ${unit.kind} tags=${unit.tags.join(',')}`);
      inFlightSince.set(i, performance.now());
      let out: WsOutcome;
      if (unit.kind === 'frames') {
        if (!conn?.open) {
          conn?.close();
          conn = await FuzzConnection.open(wsCtx, `fuzz-${slot}`, { bearer: true, hello: true }).catch((e: Error) => {
            // With the shipped limits (--limits default), a 429 is the limiter doing its job.
            if (/: 429$/.test(e.message)) rec.count('connect refused 429');
            else if (!crashed) rec.add('ws', o.seed, i, 'connect', unit.tags, [{ kind: 'connect-failed', detail: `a valid agent could not connect: ${e.message}` }], '(valid agent connection + hello)', e.message);
            return undefined;
          });
        }
        if (!conn) {
          inFlight.delete(i);
      inFlightSince.delete(i);
          done++;
          continue;
        }
        out = await conn.run(unit.frames, wsPlaceholders(wsCtx, `fuzz-${slot}`, conn.held.at(-1), i), 1e12 + i, unitTimeout);
        if (conn.closed) rec.count(`frames: closed ${conn.closed.code}`);
      } else if (unit.kind === 'preauth') {
        out = await runPreauthUnit(unit, wsCtx, `pre-${slot}`, unitTimeout);
        rec.count(`preauth: ${out.status === 429 ? 'refused 429' : out.closed !== undefined ? `closed ${out.closed}` : 'open'}`);
      } else {
        out = await runRawUnit(unit, wsCtx, `raw-${slot}`, unitTimeout);
        rec.count(`${unit.kind}: ${out.status ?? 'no answer'}${out.closed !== undefined ? ` close ${out.closed}` : ''}`);
      }
      inFlight.delete(i);
      inFlightSince.delete(i);
      if (crashed) break;
      framesSent += out.framesSent;
      for (const r of out.received) rec.count(`recv ${r}`);
      const code = out.received.find((r) => r.startsWith('error:'))?.slice(6);
      if (out.violations.length > 0 || indices) rec.add('ws', o.seed, i, unit.kind, unit.tags, out.violations, `[${unit.kind}] tags=${unit.tags.join(',')}\n${out.sent}`, observedWs(out), out.status, code);
      if (indices) log(`— ws index ${i} [${unit.kind}] tags=${unit.tags.join(',')}\n${out.sent}\n→ ${observedWs(out)}\n  violations: ${out.violations.length === 0 ? 'none' : out.violations.map((x) => `${x.kind}: ${x.detail}`).join('; ')}${newStderr()}`);
      done++;
      await warmUp();
    }
    conn?.close();
  };

  log(`${o.surface}: ${total} inputs, seed ${JSON.stringify(o.seed)}, concurrency ${concurrency}, rate limits ${o.limits ?? 'lifted'}, server pid ${ready.pid} at ${ready.url}`);
  await Promise.all(Array.from({ length: concurrency }, (_, slot) => (o.surface === 'http' ? httpWorker() : wsWorker(slot))));
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(canaryTimer);
  clearInterval(progress);
  clearInterval(refresh);
  if (feeder) clearInterval(feeder);

  let end = start;
  let events: Record<string, number> = {};
  if (!crashed) {
    end = await memPoint(child, ready.pid, true, done);
    if (o.heapSnapshots) await snapshot('end');
    trace.push(end);
    events = await ask(child, { ask: 'stats' } satisfies FuzzAsk, (m) => (m as { stats?: Record<string, number> }).stats).catch(() => ({}));
  }
  stopping = true;
  canary.close();
  await dispatcher.close();
  await side.close();
  await (t.dispatcher as Agent).close();
  if (!crashed) {
    child.send({ ask: 'stop' });
    await Promise.race([target.exited, new Promise((r) => setTimeout(r, 10_000))]);
  }
  if (child.exitCode === null) child.kill('SIGKILL');
  const errorsFile = join(target.work, 'errors.log');
  const serverErrors = existsSync(errorsFile)
    ? readFileSync(errorsFile, 'utf8').split('\n').filter((l) => l && !l.includes('"siem":true')).map((l) => printable(l, 1500))
    : [];
  rmSync(target.work, { recursive: true, force: true });
  const w = warm ?? start;
  return {
    surface: o.surface, seed: o.seed, limits: o.limits ?? 'lifted', count: total, done, seconds, rate: done / seconds, concurrency,
    outcomes: Object.fromEntries([...rec.outcomes].sort((a, b) => b[1] - a[1])),
    kinds: Object.fromEntries(rec.kinds), findings: rec.findings, known: Object.fromEntries(rec.known), crashed,
    memory: { start, warm: w, end, gc: [...gcTrace, end], trace, heapDriftPct: ((end.heapUsed - w.heapUsed) / w.heapUsed) * 100, rssDriftPct: ((end.rss - w.rss) / w.rss) * 100 },
    canary: { http: { ...pct(canaryHttp), failures: canaryHttpFail }, ws: { ...pct(canaryWs), failures: canaryWsFail } },
    events, serverErrors, framesSent: o.surface === 'ws' ? framesSent : undefined,
  };
}

function observedWs(o: WsOutcome): string {
  return [
    o.status !== undefined ? `upgrade answered ${o.status}` : undefined,
    o.received.length > 0 ? `server frames: ${o.received.join(', ')}` : 'no server frames',
    o.closed !== undefined ? `closed ${o.closed}` : 'connection open',
  ].filter(Boolean).join('; ');
}

/** One line per rule broken, plus the crash; empty when the run is clean (known findings aside). */
export function problems(r: SurfaceResult): string[] {
  const out: string[] = [];
  if (r.crashed) out.push(`the server crashed (exit ${r.crashed.code}, signal ${r.crashed.signal}); in flight: ${r.crashed.inFlight.join(' | ')}`);
  for (const [k, n] of Object.entries(r.kinds)) out.push(`${n} × ${k}`);
  if (r.done < r.count && !r.crashed) out.push(`only ${r.done} of ${r.count} inputs were sent`);
  return out;
}

export type { WsUnit, HttpInput };
