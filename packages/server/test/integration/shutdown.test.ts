/**
 * Graceful shutdown against a real server: it stops accepting at once (the port closes, `/readyz`
 * answers 503, agent upgrades 503 with Retry-After, keep-alive connections get `Connection: close`),
 * a task an agent is running still finishes, then agents are closed with 1012 and the stores close;
 * a task that never finishes is cut off by the drain deadline (and requeued on restart); every
 * count and timer is back at zero. One node of two (PostgreSQL + Redis): the draining node gets no
 * new task, and one it still ran at the deadline is taken back by the other node. Then through the
 * CLI: SIGTERM drains and exits 0, a second SIGTERM stops at once.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { Agent, fetch as ufetch } from 'undici';
import { WebSocket } from 'ws';
import { PROTOCOL_VERSION, WS_BEARER_PREFIX, WS_SUBPROTOCOL, type Problem, type TaskView } from '@palisade/protocol';
import { rawAgentSocket, SyntheticAgent, type TaskOutcome } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, freePort, startTestServer, type TestServer } from '../support/harness.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../support/redis.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { CreateOptions } from '../../src/app.ts';

const SITE = 'http://127.0.0.1:9';
const STEPS = [{ type: 'navigate', url: `${SITE}/` }];
const RESULT = { outputs: { done: true }, artifacts: [], timings: { totalMs: 5, steps: [] } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a test needs of a server (an in-process TestServer, or a CLI process seen from outside). */
type Reachable = Pick<TestServer, 'url' | 'fetch'>;

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, ms = 5000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what} not met in time`);
    await sleep(20);
  }
}

async function submit(t: Reachable, token: string): Promise<string> {
  const res = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: STEPS }) });
  assert.equal(res.status, 201, await res.clone().text());
  return ((await res.json()) as TaskView).id;
}

async function untilRunning(t: Reachable, token: string, id: string): Promise<void> {
  await until(async () => ((await (await t.fetch(`/api/v1/tasks/${id}`, { token })).json()) as TaskView).state === 'running', 5000, `task ${id} running`);
}

/**
 * A connection opened now with a request head begun but not finished: the server counts it busy
 * (not idle), as a keep-alive connection is while a request is on it. `finish()` ends the head
 * and returns the raw answer once the server closes the connection.
 */
async function pendingRequest(url: string, head: string): Promise<{ finish(): Promise<{ status: number; headers: Record<string, string>; body: string }> }> {
  const { hostname, port } = new URL(url);
  const socket: Socket = tcpConnect(Number(port), hostname);
  await once(socket, 'connect');
  let data = '';
  socket.on('data', (d: Buffer) => (data += d.toString()));
  socket.write(head);
  await sleep(50);
  return {
    async finish() {
      const closed = once(socket, 'close');
      socket.write('\r\n');
      await Promise.race([closed, sleep(3000).then(() => assert.fail(`the server kept the connection open; got: ${data}`))]);
      const [top, ...rest] = data.split('\r\n\r\n');
      const [statusLine, ...lines] = top!.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      return { status: Number(statusLine!.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
    },
  };
}

/** Resolves with the error of a new TCP connection to `url`'s port, or `connected`. */
function newConnection(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = tcpConnect(Number(port), hostname);
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

interface Setup {
  t: TestServer;
  dataDir: string;
  agentToken: string;
  token: string;
  agent(onTask?: () => TaskOutcome): Promise<SyntheticAgent>;
}

async function setup(options: CreateOptions = {}, dataDir = mkdtempSync(join(tmpdir(), 'palisade-shutdown-'))): Promise<Setup> {
  const t = await startTestServer({ insecureHttp: true, ...options, dataDir });
  await createAdmin(t);
  const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
  const { token } = await apiClient(t);
  return {
    t, dataDir, agentToken, token,
    agent: (onTask) => SyntheticAgent.connect({ url: t.url, token: agentToken, grants: [SITE], ...(onTask ? { onTask } : {}) }),
  };
}

/** Every count of connections, agents and task timers (after a close: all zero). */
function counts(t: TestServer) {
  return { connections: t.server.connections!.total, tracked: t.server.connections!.tracked, agents: t.server.agents.size, tasks: t.server.tasks.openHandles };
}
const ZERO = { connections: 0, tracked: { ips: 0, users: 0, synced: true }, agents: 0, tasks: { accept: 0, deadline: 0, grace: 0, record: 0, listeners: 0, live: 0, following: 0, unended: 0, outbox: 0 } };

/** The task as stored in the SQLite file of a stopped server. */
async function storedTask(dataDir: string, id: string) {
  const store = openSqliteStore(join(dataDir, 'palisade.db'));
  try {
    return await store.tasks.byId(id);
  } finally {
    await store.close();
  }
}

describe('graceful shutdown', () => {
  it('stops accepting at once, lets a running task finish, then closes agents with 1012 and the stores; counts back to zero', async () => {
    const s = await setup();
    try {
      const agent = await s.agent(() => 'ignore');
      const id = await submit(s.t, s.token);
      await untilRunning(s.t, s.token, id);
      // Connections opened before the drain, each with a request on it.
      const readyz = await pendingRequest(s.t.url, 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      const healthz = await pendingRequest(s.t.url, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      const upgrade = await pendingRequest(s.t.url, [
        'GET /ws/agent HTTP/1.1', 'Host: 127.0.0.1', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}, ${WS_BEARER_PREFIX}${s.agentToken}`, '',
      ].join('\r\n'));
      // An agent upgraded before the drain that says hello only after it began.
      const late = await rawAgentSocket(s.t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + s.agentToken]);
      const lateClosed = once(late.ws!, 'close');

      const progress: { running: number; remainingMs: number }[] = [];
      let finished = false;
      const shutdown = s.t.server.shutdown({ drainMs: 10_000, progressMs: 100, onProgress: (p) => progress.push(p) }).finally(() => (finished = true));
      assert.equal(s.t.server.draining, true);

      const ready = await readyz.finish();
      assert.equal(ready.status, 503, '/readyz is 503 at once');
      assert.equal(ready.headers['retry-after'], '1');
      assert.equal(ready.headers.connection, 'close');
      assert.equal((JSON.parse(ready.body) as Problem).code, 'PAL_ERR_UNAVAILABLE');
      const health = await healthz.finish();
      assert.equal(health.status, 200, 'a request on an open connection is still answered…');
      assert.equal(health.headers.connection, 'close', '…and the connection then closed');
      const refused = await upgrade.finish();
      assert.equal(refused.status, 503, 'a new agent upgrade is refused');
      assert.equal(refused.headers['retry-after'], '1');
      assert.equal((JSON.parse(refused.body) as Problem).code, 'PAL_ERR_UNAVAILABLE');
      assert.equal(await newConnection(s.t.url), 'ECONNREFUSED', 'a new connection is refused');
      late.ws!.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'late', version: '0', instanceId: 'late-1' }, grants: [SITE] }));
      assert.equal((await lateClosed)[0], 1012, 'a hello during the drain is sent to reconnect elsewhere');

      // The task is still running: the shutdown waits, reporting progress.
      await sleep(350);
      assert.equal(finished, false, 'still draining');
      assert.equal(agent.ws.readyState, WebSocket.OPEN, 'the running agent stays connected');
      assert.ok(progress.length >= 3, `progress reported every 100 ms: ${JSON.stringify(progress)}`);
      assert.ok(progress.every((p) => p.running === 1));
      assert.ok(progress.at(-1)!.remainingMs < progress[0]!.remainingMs);

      const agentClosed = agent.closed();
      agent.send({ type: 'task.result', taskId: id, outcome: 'succeeded', result: RESULT });
      const result = await shutdown;
      assert.equal(result.drained, true);
      assert.equal(result.running, 0);
      assert.ok(result.waitedMs >= 350 && result.waitedMs < 5000, String(result.waitedMs));
      const close = await agentClosed;
      assert.equal(close.code, 1012, 'agents are told to reconnect (service restart)');
      assert.match(close.reason, /restart/);
      assert.deepEqual(counts(s.t), ZERO);
      await s.t.dispatcher.close();
      const stored = await storedTask(s.dataDir, id);
      assert.equal(stored?.state, 'succeeded', 'the result sent during the drain was taken');
      assert.deepEqual(stored?.result?.outputs, { done: true });
    } finally {
      await s.t.close().catch(() => undefined);
      rmSync(s.dataDir, { recursive: true, force: true });
    }
  });

  it('a task that never finishes: the drain deadline ends the wait; the task is requeued when the server starts again', async () => {
    const s = await setup({ reconnectGraceMs: 60_000 });
    try {
      const agent = await s.agent(() => 'ignore');
      const id = await submit(s.t, s.token);
      await untilRunning(s.t, s.token, id);
      const agentClosed = agent.closed();
      const started = Date.now();
      const result = await s.t.server.shutdown({ drainMs: 500 });
      const took = Date.now() - started;
      assert.equal(result.drained, false);
      assert.equal(result.running, 1);
      assert.ok(result.waitedMs >= 500 && result.waitedMs < 1500, `waited ${result.waitedMs} ms`);
      assert.ok(took < 4000, `stopped in ${took} ms`);
      assert.equal((await agentClosed).code, 1012);
      // The agent's close started a 60 s grace timer in the task service: released with the rest.
      assert.deepEqual(counts(s.t), ZERO);
      assert.equal((await storedTask(s.dataDir, id))?.state, 'running', 'left as it was, for the next start');
      const again = await startTestServer({ insecureHttp: true, dataDir: s.dataDir });
      try {
        const requeued = await again.server.store.tasks.byId(id);
        assert.equal(requeued?.state, 'queued', 'requeued for the agent to take when it reconnects');
        assert.equal(requeued?.attempts, 1);
      } finally {
        await again.close();
      }
    } finally {
      await s.t.close().catch(() => undefined);
      rmSync(s.dataDir, { recursive: true, force: true });
    }
  });

  it('close() with a task accepted whose running is not yet written: it is written first, for the next start', async () => {
    const s = await setup({ runningRecordMs: 60_000 });
    try {
      await s.agent(() => 'ignore');
      const id = await submit(s.t, s.token);
      await untilRunning(s.t, s.token, id); // this node's view: running from the accept on
      assert.equal((await s.t.server.store.tasks.byId(id))?.state, 'dispatched', 'not yet written (runningRecordMs)');
      assert.equal(s.t.server.tasks.openHandles.record, 1);
      await s.t.server.close();
      assert.equal((await storedTask(s.dataDir, id))?.state, 'running', 'written before the store closed');
      assert.deepEqual(counts(s.t), ZERO);
    } finally {
      await s.t.close().catch(() => undefined);
      rmSync(s.dataDir, { recursive: true, force: true });
    }
  });

  it('close() during the drain ends the wait at once (what a second signal does); an event stream still open is cut', async () => {
    const s = await setup();
    try {
      const agent = await s.agent(() => 'ignore');
      const id = await submit(s.t, s.token);
      await untilRunning(s.t, s.token, id);
      // A caller following the task: its stream would never end by itself (the task does not).
      const events = await s.t.fetch(`/api/v1/tasks/${id}/events`, { token: s.token });
      assert.equal(events.status, 200);
      const reader = events.body!.getReader();
      await reader.read();
      const streamEnded = (async () => {
        try {
          while (!(await reader.read()).done);
        } catch {
          // cut: as good as ended
        }
      })();
      const agentClosed = agent.closed();
      const shutdown = s.t.server.shutdown({ drainMs: 30_000 });
      await sleep(200);
      const started = Date.now();
      await s.t.server.close();
      const result = await shutdown;
      await streamEnded;
      assert.ok(Date.now() - started < 3000, `closed in ${Date.now() - started} ms`);
      assert.equal(result.drained, false);
      assert.equal(result.running, 1);
      assert.equal((await agentClosed).code, 1012);
      assert.deepEqual(counts(s.t), ZERO);
    } finally {
      await s.t.close().catch(() => undefined);
      rmSync(s.dataDir, { recursive: true, force: true });
    }
  });
});

const clusterSkip = (await postgresSkip('the two-node shutdown test')) || (await redisSkip('the two-node shutdown test'));

describe('graceful shutdown of one node of two (PostgreSQL + Redis)', { skip: clusterSkip }, () => {
  it('the draining node is given no new task; one its agent still runs at the deadline is taken back by the other node and runs on the agent reconnected there', async () => {
    const schema = `palisade_drain_${process.pid}`;
    const prefix = testPrefix();
    const shared = { databaseUrl: POSTGRES_URL, databaseSchema: schema, redisUrl: REDIS_URL, redisPrefix: prefix, nodeBeatMs: 300 };
    const a = await startTestServer({ ...shared, nodeId: 'drain-a' });
    let b: TestServer | undefined;
    try {
      await createAdmin(a);
      b = await startTestServer({ ...shared, nodeId: 'drain-b', publicUrl: a.url });
      const agentToken = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
      const { token } = await apiClient(a);
      const instanceId = randomUUID();
      const dispatchedOnA: string[] = [];
      const onA = await SyntheticAgent.connect({ url: a.url, token: agentToken, ca: a.server.tls?.ca, grants: [SITE], instanceId, onTask: (f) => (dispatchedOnA.push(f.taskId), 'ignore') });
      const first = await submit(b, token);
      await untilRunning(b, token, first);
      const closed = onA.closed();
      const shutdown = a.server.shutdown({ drainMs: 1000 });
      // Submitted on B while A drains: B sends it to A (its agent is there), and A does not dispatch it.
      const second = await submit(b, token);
      const result = await shutdown;
      assert.deepEqual({ drained: result.drained, running: result.running }, { drained: false, running: 1 });
      assert.equal((await closed).code, 1012);
      assert.deepEqual(dispatchedOnA, [first], 'nothing new was dispatched on the draining node');
      // The agent reconnects, reaching node B (the balancer no longer sends anyone to A).
      const onB = await SyntheticAgent.connect({ url: b.url, token: agentToken, ca: b.server.tls?.ca, grants: [SITE], instanceId });
      try {
        const state = async (id: string) => (await (await b!.fetch(`/api/v1/tasks/${id}`, { token })).json()) as TaskView;
        const v2 = await until(async () => ((await state(second)).state === 'succeeded' ? state(second) : undefined), 5000, 'the task submitted during the drain succeeded');
        assert.equal(v2.attempts, 1);
        // A stopped beating when it closed: B's sweeper takes the first task back after three beats.
        const v1 = await until(async () => ((await state(first)).state === 'succeeded' ? state(first) : undefined), 8000, 'the task left running on A succeeded on B');
        assert.equal(v1.attempts, 2, 'run again: a second attempt');
        assert.equal(v1.agentId, onB.agentId);
      } finally {
        onB.close();
      }
    } finally {
      await a.close().catch(() => undefined);
      await b?.close();
      await dropSchema(schema);
      await dropPrefix(prefix);
    }
  });
});

// ── the CLI ─────────────────────────────────────────────────────────────────────────────────

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

interface CliProcess {
  child: ChildProcess;
  stderr(): string;
  /** Waits for `re` in stderr (from the start). */
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; at: number }>;
}

function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PALISADE_LOG_LEVEL: 'warn', ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
  return {
    child,
    stderr: () => stderr,
    waitFor: (re, ms = 15_000) => until(() => re.exec(stderr) ?? undefined, ms, `${re} in the CLI's output (so far: ${stderr.slice(-500)})`),
    exited,
  };
}

/** The CLI's server as the harness's helpers need it (plain HTTP: no CA). */
function reach(url: string, setupUrl?: string): TestServer & { dispatcher: Agent } {
  const dispatcher = new Agent();
  return {
    url, dispatcher, securityEvents: [],
    server: { setupUrl } as TestServer['server'],
    fetch: (path, init = {}) => {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return ufetch(new URL(path, url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    close: () => dispatcher.close(),
  };
}

describe('palisade-server shutdown on signals', () => {
  it('SIGTERM drains (exit 0 once the running task finished, agents told 1012); a second SIGTERM stops at once (exit 1)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-drain-'));
    // One port for both runs: the issuer (and so the tokens' `iss`) carries it.
    const args = ['start', '--port', String(await freePort()), '--data-dir', dir, '--insecure-http', '--drain-timeout', '20'];
    const procs: CliProcess[] = [];
    try {
      // First run: a task finishes during the drain.
      const cli = startCli(args);
      procs.push(cli);
      const url = (await cli.waitFor(/Palisade is running at (http:\/\/\S+)/))[1]!;
      const setupUrl = (await cli.waitFor(/(http:\/\/\S+\/setup\?token=\S+)\n/))[1]!;
      const t = reach(url, setupUrl);
      await createAdmin(t);
      const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
      const { token } = await apiClient(t);
      const agent = await SyntheticAgent.connect({ url, token: agentToken, grants: [SITE], onTask: () => 'ignore' });
      const id = await submit(t, token);
      await untilRunning(t, token, id);
      await t.close();

      cli.child.kill('SIGTERM');
      await cli.waitFor(/SIGTERM: shutting down/);
      await cli.waitFor(/draining: 1 task\(s\) still running, \d+ s left \(of 20 s; a second signal stops at once\)/);
      await sleep(300);
      assert.equal(cli.child.exitCode, null, 'still draining while the task runs');
      const agentClosed = agent.closed();
      agent.send({ type: 'task.result', taskId: id, outcome: 'succeeded', result: RESULT });
      const exit = await Promise.race([cli.exited, sleep(10_000).then(() => assert.fail('no exit after the task finished'))]);
      assert.equal(exit.code, 0, cli.stderr());
      assert.match(cli.stderr(), /drained: every task finished/);
      assert.equal((await agentClosed).code, 1012);
      assert.equal((await storedTask(dir, id))?.state, 'succeeded');

      // Second run on the same data folder (the tokens are still good): a task that never finishes, two signals.
      const again = startCli(args);
      procs.push(again);
      const url2 = (await again.waitFor(/Palisade is running at (http:\/\/\S+)/))[1]!;
      const t2 = reach(url2);
      const agent2 = await SyntheticAgent.connect({ url: url2, token: agentToken, grants: [SITE], onTask: () => 'ignore' });
      const id2 = await submit(t2, token);
      await untilRunning(t2, token, id2);
      await t2.close();
      const agent2Closed = agent2.closed();
      again.child.kill('SIGTERM');
      await again.waitFor(/draining: 1 task\(s\) still running/);
      const secondAt = Date.now();
      again.child.kill('SIGTERM');
      const exit2 = await Promise.race([again.exited, sleep(10_000).then(() => assert.fail('no exit after the second SIGTERM'))]);
      assert.ok(exit2.at - secondAt < 3000, `exited ${exit2.at - secondAt} ms after the second signal (the drain timeout is 20 s)`);
      assert.equal(exit2.code, 1, 'a forced stop exits 1');
      assert.match(again.stderr(), /second signal \(SIGTERM\): stopping now, without waiting for running tasks/);
      assert.equal((await agent2Closed).code, 1012, 'agents are still told to reconnect');
      assert.equal((await storedTask(dir, id2))?.state, 'running', 'left for the next start to requeue');
    } finally {
      for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--drain-timeout / PALISADE_DRAIN_TIMEOUT: whole seconds from 0 to 3600, else exit 2', async () => {
    const cases = [[['--drain-timeout', '1.5'], {}], [[], { PALISADE_DRAIN_TIMEOUT: '3601' }]] as const;
    await Promise.all(cases.map(async ([args, env]) => {
      const cli = startCli(['start', '--port', '0', ...args], env);
      const { code } = await cli.exited;
      assert.equal(code, 2, `${args.join(' ')} ${JSON.stringify(env)}: ${cli.stderr()}`);
      assert.match(cli.stderr(), /--drain-timeout must be a whole number of seconds from 0 to 3600/);
    }));
  });
});
