/**
 * The memory high-water mark against a real server: above it, new task submissions and new agent
 * connections are refused (503 PAL_ERR_OVERLOADED + Retry-After; an agent upgraded but not yet
 * introduced is closed 1013) and /readyz answers 503, while open connections, running tasks, reads,
 * token requests and health checks go on; below 90 % of the mark all is taken again. The sampler is
 * injected (the test sets the heap figure) except in one test, where the real one and a 1 MiB mark
 * prove the real path sheds; the CLI flag is crossed too.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WebSocket } from 'ws';
import { PROTOCOL_VERSION, WS_BEARER_PREFIX, WS_SUBPROTOCOL, type Problem, type TaskView } from '@palisade/protocol';
import { OVERLOAD_RETRY_AFTER_S, type MemorySample } from '../../src/edge/memory-guard.ts';
import { rawAgentSocket, SyntheticAgent } from '../support/agent.ts';
import { apiClient, clientToken, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';

const MIB = 1024 * 1024;
const HIGH = 100 * MIB;
const SITE = 'http://127.0.0.1:9';

const closed = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));

async function until(fn: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function problem(res: Response, status: number, code: string): Promise<Problem> {
  const body = (await res.json()) as Problem;
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.code, code);
  assert.match(res.headers.get('content-type') ?? '', /application\/problem\+json/);
  return body;
}

describe('memory high-water mark', () => {
  let t: TestServer;
  let token: string;
  let clientId: string;
  let clientSecret: string;
  let agentToken: string;
  let heap = 10 * MIB;
  let samples = 0;
  const sampler = (): MemorySample => {
    samples++;
    return { heapUsed: heap, rss: heap + 50 * MIB };
  };
  /** Sets the heap figure and samples at once (the 50 ms timer would get there too). */
  const setHeap = (bytes: number) => {
    heap = bytes;
    return t.server.memory.sample();
  };
  const submit = (path = '/api/v1/tasks') => t.fetch(path, { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: `${SITE}/` }] }) });
  const task = async (id: string) => (await (await t.fetch(`/api/v1/tasks/${id}`, { token })).json()) as TaskView;
  const shedEvents = () => t.securityEvents.filter((e) => e.activity_name.startsWith('memory.shed.')).map((e) => e.activity_name);
  const openAgentSocket = () => rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + agentToken], { ca: t.server.tls?.ca });
  const shedCount = async (entry: string) => (await t.server.metrics.registry.getSingleMetric('palisade_memory_shed_total')!.get()).values.find((v) => v.labels.entry === entry)?.value;

  before(async () => {
    t = await startTestServer({ memoryHighWaterBytes: HIGH, memorySampleMs: 50, memorySampler: sampler });
    await createAdmin(t);
    agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    ({ token, clientId, clientSecret } = await apiClient(t));
  });
  let stopped = false;
  after(async () => {
    if (!stopped) await t?.close();
  });

  it('above the mark new work is refused and what runs goes on; under 90 % of it all is taken again', async () => {
    // Before: an agent running a task, and a socket upgraded but not yet introduced (no hello).
    const agent = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], onTask: () => 'ignore' });
    const pending = await openAgentSocket();
    assert.ok(pending.ws, 'upgraded while memory was fine');
    const first = await submit();
    assert.equal(first.status, 201);
    const running = (await first.json()) as TaskView;
    await until(async () => (await task(running.id)).state === 'running');

    // Over the mark: one start event, however many samples follow (the timer samples every 50 ms too).
    assert.equal(setHeap(HIGH + MIB), true);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(t.server.memory.sample(), true);
    assert.deepEqual(shedEvents(), ['memory.shed.start']);
    const start = t.securityEvents.find((e) => e.activity_name === 'memory.shed.start')!;
    assert.equal(start.severity, 'high');
    assert.equal(start.status_code, 'PAL_ERR_OVERLOADED');

    // A new task: 503 with Retry-After, however the path is spelled (the router's match is checked).
    const refused = await submit();
    assert.equal(refused.headers.get('retry-after'), String(OVERLOAD_RETRY_AFTER_S));
    await problem(refused, 503, 'PAL_ERR_OVERLOADED');
    await problem(await submit('/api/v1/%74asks'), 503, 'PAL_ERR_OVERLOADED');
    assert.equal((await t.server.store.tasks.listUnfinished()).length, 1, 'nothing was stored for the refused tasks');

    // Reads, health, token requests: as before.
    const me = await t.fetch('/api/v1/me', { token });
    assert.equal(me.status, 200);
    assert.equal((await me.json() as { clientId: string }).clientId, clientId);
    assert.equal((await task(running.id)).state, 'running');
    assert.equal((await t.fetch('/healthz')).status, 200);
    assert.ok(await clientToken(t, clientId, clientSecret), 'tokens are still issued (a refused refresh would close open connections)');

    // Readiness: 503, so the balancer sends new work elsewhere.
    const notReady = await t.fetch('/readyz');
    assert.equal(notReady.headers.get('retry-after'), String(OVERLOAD_RETRY_AFTER_S));
    assert.match((await problem(notReady, 503, 'PAL_ERR_OVERLOADED')).detail!, /memory shedding/);

    // A new agent: the upgrade is refused 503 before its token is even checked.
    const authChecks = t.securityEvents.filter((e) => e.activity_name === 'ws.authenticate').length;
    const upgrade = await openAgentSocket();
    assert.equal(upgrade.status, 503);
    assert.equal((JSON.parse(upgrade.body!) as Problem).code, 'PAL_ERR_OVERLOADED');
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'ws.upgrade.checkMemory' && e.status_code === 'PAL_ERR_OVERLOADED'));
    assert.equal(t.securityEvents.filter((e) => e.activity_name === 'ws.authenticate').length, authChecks);

    // The socket upgraded before, saying hello now: closed 1013 ("try again later") with the error frame.
    const frames: { type: string; code?: string }[] = [];
    pending.ws!.on('message', (d) => frames.push(JSON.parse(String(d)) as { type: string; code?: string }));
    const end = closed(pending.ws!);
    pending.ws!.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'late', version: '0.0.0', instanceId: 'late-1' }, grants: [SITE] }));
    assert.equal((await end).code, 1013);
    assert.equal(frames.find((f) => f.type === 'error')?.code, 'PAL_ERR_OVERLOADED');

    // The open agent: a frame round trip, then its running task's progress and result get through.
    agent.send({ type: 'ping', t: 7 });
    assert.equal((await agent.next((f) => f.type === 'pong') as { t: number }).t, 7);
    agent.send({ type: 'task.progress', taskId: running.id, step: 0, stepType: 'navigate', status: 'done', elapsedMs: 1 });
    agent.send({ type: 'task.result', taskId: running.id, outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } } });
    await until(async () => (await task(running.id)).state === 'succeeded');
    assert.equal(await shedCount('task'), 2);
    assert.equal(await shedCount('agent'), 2);

    // Between the marks: still shedding (no flapping); back over and down again: still one start.
    assert.equal(setHeap(95 * MIB), true);
    assert.equal((await t.fetch('/readyz')).status, 503);
    assert.equal(setHeap(HIGH + MIB), true);
    assert.equal((await submit()).status, 503);
    assert.deepEqual(shedEvents(), ['memory.shed.start']);

    // Under 90 % of the mark: ready, tasks and agents taken again; one stop event.
    assert.equal(setHeap(89 * MIB), false);
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(shedEvents(), ['memory.shed.start', 'memory.shed.stop']);
    const ready = await t.fetch('/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', checks: { durableStore: 'ok', hotStore: 'ok', memory: 'ok' } });
    const again = await submit();
    assert.equal(again.status, 201);
    await until(async () => (await task(((await again.json()) as TaskView).id)).state === 'running');
    const second = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE] });
    assert.ok(second.agentId);
    for (const a of [agent, second]) {
      const c = a.closed();
      a.close();
      await c;
    }
  });

  it('the sampling timer stops when the server closes', async () => {
    const before = samples;
    await new Promise((r) => setTimeout(r, 200));
    const running = samples;
    assert.ok(running >= before + 2, `the 50 ms timer sampled (${running - before} times)`);
    stopped = true;
    await t.close();
    const closedAt = samples;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(samples, closedAt, 'no sample after close()');
  });
});

describe('memory high-water mark, real sampler', () => {
  it('a 1 MiB mark: this process is above it, so the node sheds at once', async () => {
    const t = await startTestServer({ memoryHighWaterBytes: MIB });
    try {
      assert.equal(t.server.memory.shedding, true);
      assert.ok(t.server.memory.last.heapUsed > MIB);
      assert.ok(t.server.memory.last.rss > t.server.memory.last.heapUsed);
      const res = await t.fetch('/api/v1/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      assert.equal(res.headers.get('retry-after'), String(OVERLOAD_RETRY_AFTER_S));
      await problem(res, 503, 'PAL_ERR_OVERLOADED');
      await problem(await t.fetch('/readyz'), 503, 'PAL_ERR_OVERLOADED');
      assert.equal((await t.fetch('/healthz')).status, 200);
      const upgrade = await rawAgentSocket(t.url, [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
      assert.equal(upgrade.status, 503);
    } finally {
      await t.close();
    }
  });
});

describe('palisade-server --memory-high-water', () => {
  const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
  /** Runs the CLI; once it prints its URL, `onUrl` runs and the server is stopped. */
  const run = (args: string[], env: Record<string, string> = {}, onUrl?: (url: string) => Promise<void>) => new Promise<{ code: number | null; stderr: string; error?: unknown }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PALISADE_LOG_LEVEL: 'warn', ...env } });
    let stderr = '';
    let error: unknown;
    let seen = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      const m = /Palisade is running at (\S+)/.exec(stderr);
      if (m && !seen && onUrl) {
        seen = true;
        onUrl(m[1]!).catch((e: unknown) => (error = e)).finally(() => child.kill('SIGTERM'));
      }
    });
    child.on('close', (code) => resolve({ code, stderr, error }));
  });

  it('refuses a value that is not a whole number of MiB, or above the heap limit, with exit 2', async () => {
    for (const [args, env] of [[['--memory-high-water', '0'], {}], [['--memory-high-water', '99999999'], {}], [[], { PALISADE_MEMORY_HIGH_WATER_MB: '1.5' }]] as const) {
      const r = await run(['start', ...args], env);
      assert.equal(r.code, 2, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
      assert.match(r.stderr, /--memory-high-water must be a whole number of MiB from 1 to \d+ \(this process's V8 heap limit/);
    }
  });

  it('sets the mark: with 1 MiB the node is not ready and refuses tasks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-mem-'));
    try {
      let seen: (number | string)[] = [];
      const r = await run(['start', '--port', '0', '--data-dir', dir, '--insecure-http', '--memory-high-water', '1'], {}, async (url) => {
        const ready = await fetch(`${url}/readyz`);
        const submit = await fetch(`${url}/api/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        seen = [ready.status, submit.status, ((await submit.json()) as Problem).code];
      });
      assert.equal(r.error, undefined);
      assert.deepEqual(seen, [503, 503, 'PAL_ERR_OVERLOADED']);
      assert.equal(r.code, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
