/**
 * Task routing and the state machine against the real server: idempotency, no eligible agent,
 * waiting for an agent, an agent lost mid-task (re-dispatched once, then failed with a reason),
 * an agent that never accepts, deadlines, cancellation, and a result from the wrong agent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { TaskView } from '@palisade/protocol';
import { SyntheticAgent } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';

const SITE = 'http://127.0.0.1:9';
const STEPS = [{ type: 'navigate', url: `${SITE}/` }];
/** `runningRecordMs` here: long enough that a stalled process does not reach it between an accept and a result. */
const RECORD_MS = 1000;

describe('task routing', () => {
  let t: TestServer;
  let token: string;
  let agentToken: string;
  const agents: SyntheticAgent[] = [];

  const submit = async (extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) => {
    const res = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ site: SITE, steps: STEPS, ...extra }) });
    return { status: res.status, body: (await res.json()) as TaskView & { code?: string } };
  };
  const get = async (id: string) => (await (await t.fetch(`/api/v1/tasks/${id}`, { token })).json()) as TaskView;
  const until = async (id: string, state: string, ms = 5000) => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await get(id);
      if (v.state === state) return v;
      if (Date.now() > end) throw new Error(`task ${id} is ${v.state}, expected ${state}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const connect = async (onTask?: Parameters<typeof SyntheticAgent.connect>[0]['onTask'], grants = [SITE]) => {
    const a = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants, ...(onTask ? { onTask } : {}) });
    agents.push(a);
    return a;
  };
  const closeAll = async () => {
    for (const a of agents.splice(0)) {
      const c = a.closed();
      a.close();
      await c;
    }
    await new Promise((r) => setTimeout(r, 30));
  };

  before(async () => {
    t = await startTestServer({ acceptTimeoutMs: 300, reconnectGraceMs: 200, maxUnfinishedTasksPerUser: 5, runningRecordMs: RECORD_MS });
    await createAdmin(t);
    agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    ({ token } = await apiClient(t));
  });
  after(async () => {
    await closeAll();
    await t?.close();
  });

  it('no connected agent: PAL_ERR_NO_AGENT, nothing stored', async () => {
    const r = await submit();
    assert.equal(r.status, 409);
    assert.equal(r.body.code, 'PAL_ERR_NO_AGENT');
    assert.equal((await t.server.store.tasks.listUnfinished()).length, 0);
  });

  it('waitForAgent: queued until an agent with the grant connects, then run', async () => {
    const r = await submit({ waitForAgent: true });
    assert.equal(r.status, 201);
    assert.equal(r.body.state, 'queued');
    await connect(undefined, ['http://127.0.0.1:1']);
    assert.equal((await get(r.body.id)).state, 'queued', 'an agent without the grant does not receive it');
    await connect();
    const done = await until(r.body.id, 'succeeded');
    assert.equal(done.attempts, 1);
    await closeAll();
  });

  it('idempotency: same key and body → same task; same key, other body → conflict', async () => {
    await connect();
    const a = await submit({ idempotencyKey: 'order-42' });
    const b = await submit({ idempotencyKey: 'order-42' });
    assert.equal(a.status, 201);
    assert.equal(b.status, 200);
    assert.equal(b.body.id, a.body.id);
    const viaHeader = await submit({}, { 'idempotency-key': 'order-42' });
    assert.equal(viaHeader.body.id, a.body.id, 'the Idempotency-Key header is the same key');
    const c = await submit({ idempotencyKey: 'order-42', steps: [{ type: 'navigate', url: `${SITE}/other` }] });
    assert.equal(c.status, 409);
    assert.equal(c.body.code, 'PAL_ERR_IDEMPOTENCY_CONFLICT');
    await closeAll();
  });

  it('agent lost mid-task: re-dispatched once to another agent', async () => {
    const first = await connect(() => 'ignore');
    const r = await submit();
    await until(r.body.id, 'running');
    const second = await connect();
    first.close();
    const done = await until(r.body.id, 'succeeded');
    assert.equal(done.attempts, 2);
    assert.equal(done.agentId, second.agentId);
    await closeAll();
  });

  it('an agent that reconnects within the grace period keeps its task (no new attempt)', async () => {
    const instanceId = 'same-browser';
    let release: (() => void) | undefined;
    const first = await connect(() => 'ignore');
    void first;
    await closeAll();
    const a1 = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId, onTask: () => 'ignore' });
    const r = await submit();
    await until(r.body.id, 'running');
    a1.close();
    await a1.closed();
    // The browser is still running the task; it comes back on a new connection and reports the result.
    const a2 = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId, onTask: () => 'ignore' });
    agents.push(a2);
    assert.equal(a2.agentId, a1.agentId, 'the same agent');
    a2.send({ type: 'task.result', taskId: r.body.id, outcome: 'succeeded', result: { outputs: { done: true }, artifacts: [], timings: { totalMs: 5, steps: [] } } });
    const done = await until(r.body.id, 'succeeded');
    assert.equal(done.attempts, 1);
    assert.deepEqual(done.result?.outputs, { done: true });
    void release;
    await closeAll();
  });

  it('a second connection of the same agent replaces the first, which is closed', async () => {
    const a1 = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId: 'twice' });
    const closed = a1.closed();
    const a2 = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId: 'twice' });
    agents.push(a2);
    assert.equal((await closed).code, 1000);
    assert.equal(t.server.agents.get(a2.agentId!)?.inFlight.size, 0);
    await closeAll();
  });

  it('a fresh token in an auth frame keeps the connection; another user\'s token is refused', async () => {
    const a = await connect();
    const fresh = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    a.send({ type: 'auth', token: fresh });
    a.send({ type: 'ping', t: 7 });
    const pong = await a.next((f) => f.type === 'pong');
    assert.equal(pong.type === 'pong' && pong.t, 7, 'still open and answering');
    assert.ok(!a.frames.some((f) => f.type === 'error'));
    const closed = a.closed();
    a.send({ type: 'auth', token });
    assert.equal((await closed).code, 4403, 'a client token (no agent scope) closes the connection');
    await closeAll();
  });

  it('at most maxUnfinishedTasksPerUser unfinished tasks per user', async () => {
    await connect(() => 'ignore');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await submit()).body.id);
    const over = await submit();
    assert.equal(over.status, 429);
    assert.equal(over.body.code, 'PAL_ERR_RATE_LIMITED');
    for (const id of ids) await t.fetch(`/api/v1/tasks/${id}/cancel`, { method: 'POST', token });
    assert.equal((await submit()).status, 201, 'room again once tasks end');
    await closeAll();
  });

  it('agent lost twice: failed with PAL_ERR_AGENT_LOST and a reason', async () => {
    const a1 = await connect(() => 'ignore');
    const r = await submit();
    await until(r.body.id, 'running');
    const a2 = await connect(() => 'ignore');
    a1.close();
    // After the grace period the task moves to the second agent…
    for (let v = await get(r.body.id); v.agentId !== a2.agentId || v.state !== 'running'; v = await get(r.body.id)) await new Promise((res) => setTimeout(res, 20));
    a2.close();
    const failed = await until(r.body.id, 'failed');
    assert.equal(failed.error?.code, 'PAL_ERR_AGENT_LOST');
    assert.match(failed.error!.message, /disconnected.*2 attempts/);
    await closeAll();
  });

  it('an agent that never accepts: offered again, then failed', async () => {
    await connect(() => 'no-accept');
    const r = await submit();
    const failed = await until(r.body.id, 'failed');
    assert.equal(failed.error?.code, 'PAL_ERR_AGENT_LOST');
    assert.match(failed.error!.message, /did not accept/);
    await closeAll();
  });

  it('deadline: an unfinished task expires and its agent is told to cancel', async () => {
    const a = await connect(() => 'ignore');
    const r = await submit({ timeoutMs: 1000 });
    const expired = await until(r.body.id, 'expired', 4000);
    assert.equal(expired.error?.code, 'PAL_ERR_TASK_EXPIRED');
    const cancel = await a.next((f) => f.type === 'task.cancel');
    assert.equal(cancel.type === 'task.cancel' && cancel.taskId, r.body.id);
    await closeAll();
  });

  it('cancel: the caller cancels, the agent is told, a second cancel is refused', async () => {
    const a = await connect(() => 'ignore');
    const r = await submit();
    await until(r.body.id, 'running');
    const res = await t.fetch(`/api/v1/tasks/${r.body.id}/cancel`, { method: 'POST', token });
    assert.equal(((await res.json()) as TaskView).state, 'cancelled');
    const cancel = await a.next((f) => f.type === 'task.cancel');
    assert.equal(cancel.type === 'task.cancel' && cancel.taskId, r.body.id);
    const again = await t.fetch(`/api/v1/tasks/${r.body.id}/cancel`, { method: 'POST', token });
    assert.equal(again.status, 409);
    assert.equal(((await again.json()) as { code: string }).code, 'PAL_ERR_TASK_FINISHED');
    await closeAll();
  });

  it('an agent runs at most maxInFlightPerAgent tasks at once; the next waits queued and is its as soon as one ends', async () => {
    const s = await startTestServer({ maxInFlightPerAgent: 2 });
    try {
      await createAdmin(s);
      const agentTok = (await deviceLogin(s, 'palisade-extension', 'openid offline_access agent')).access_token;
      const { token: tok } = await apiClient(s);
      const dispatched: string[] = [];
      const a = await SyntheticAgent.connect({ url: s.url, token: agentTok, ca: s.server.tls?.ca, grants: [SITE], onTask: (f) => (dispatched.push(f.taskId), 'ignore') });
      const state = async (id: string) => ((await (await s.fetch(`/api/v1/tasks/${id}`, { token: tok })).json()) as TaskView).state;
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await s.fetch('/api/v1/tasks', { method: 'POST', token: tok, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: STEPS }) });
        assert.equal(res.status, 201, 'a busy agent still counts as one that can take the site');
        ids.push(((await res.json()) as TaskView).id);
      }
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(dispatched, ids.slice(0, 2), 'two dispatched');
      assert.equal(await state(ids[2]!), 'queued', 'the third waits');
      a.send({ type: 'task.result', taskId: ids[0], outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } } });
      for (let i = 0; i < 100 && dispatched.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(dispatched, ids, 'the third went to the agent when the first ended');
      assert.equal(await state(ids[0]!), 'succeeded');
      a.close();
    } finally {
      await s.close();
    }
  });

  it('a failed outcome carries the agent\'s error', async () => {
    await connect(() => ({ outcome: 'failed', error: { code: 'PAL_ERR_STEP_FAILED', message: 'no element matched #q', step: 0 } }));
    const r = await submit();
    const failed = await until(r.body.id, 'failed');
    assert.deepEqual(failed.error, { code: 'PAL_ERR_STEP_FAILED', message: 'no element matched #q', step: 0 });
    await closeAll();
  });

  it('a result from an agent that does not hold the task is ignored and logged', async () => {
    const holder = await connect(() => 'ignore');
    const r = await submit();
    await until(r.body.id, 'running');
    const intruder = await connect(() => 'ignore');
    intruder.send({ type: 'task.result', taskId: r.body.id, outcome: 'succeeded', result: { outputs: { stolen: true }, artifacts: [], timings: { totalMs: 1, steps: [] } } });
    await new Promise((res) => setTimeout(res, 100));
    assert.equal((await get(r.body.id)).state, 'running');
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'agent.task.frame' && e.actor.agent_uid === intruder.agentId));
    void holder;
    await closeAll();
  });

  it('scopes and unknown task ids', async () => {
    await connect();
    const r = await submit();
    const other = await t.fetch(`/api/v1/tasks/${r.body.id}`, { token: agentToken });
    assert.equal(other.status, 403, 'an agent token lacks the tasks scope');
    const missing = await t.fetch('/api/v1/tasks/t_doesnotexist', { token });
    assert.equal(missing.status, 404);
    await closeAll();
  });

  it('the agent chosen for a new task reconnects while the task is being stored: the task goes to its new connection, once, its attempt counted once', async () => {
    await closeAll();
    for (const left of await t.server.store.tasks.listUnfinished()) await t.fetch(`/api/v1/tasks/${left.id}/cancel`, { method: 'POST', token });
    const repo = t.server.store.tasks;
    const insert = repo.insert;
    let chosen!: () => void;
    const storing = new Promise<void>((resolve) => (chosen = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The insert waits until the agent chosen for the task has left and come back.
    repo.insert = async (task, o) => {
      chosen();
      await gate;
      return insert.call(repo, task, o);
    };
    const instanceId = randomUUID();
    const ran: string[] = [];
    const first = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId, onTask: () => { ran.push('first'); return { outcome: 'succeeded' }; } });
    let second: SyntheticAgent | undefined;
    try {
      const submitted = submit();
      await storing;
      const gone = first.closed();
      first.close();
      await gone;
      await new Promise((r) => setTimeout(r, 30));
      // The same browser again (same instance: the same agent id), on a new connection.
      second = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], instanceId, onTask: () => { ran.push('second'); return { outcome: 'succeeded' }; } });
      assert.equal(second.agentId, first.agentId);
      release();
      const { status, body } = await submitted;
      assert.equal(status, 201);
      const done = await until(body.id, 'succeeded', 2000);
      assert.deepEqual(ran, ['second'], 'sent once, to the connection that is there');
      assert.equal(done.attempts, 1);
    } finally {
      repo.insert = insert;
      second?.close();
    }
  });

  it(`"running" reaches the store runningRecordMs after the accept; a task that ends sooner goes from dispatched straight to its end`, async () => {
    await closeAll();
    // Tasks earlier tests left queued would go to the agents below too.
    for (const left of await t.server.store.tasks.listUnfinished()) await t.fetch(`/api/v1/tasks/${left.id}/cancel`, { method: 'POST', token });
    const repo = t.server.store.tasks;
    const update = repo.update;
    const insert = repo.insert;
    // Each write of a state: stored (a new task, stored already dispatched to the agent chosen) or moved.
    const written: { id: string; state: string; at: number }[] = [];
    repo.insert = async (task, o) => {
      const at = Date.now();
      const r = await insert.call(repo, task, o);
      if (r.created) written.push({ id: task.id, state: `stored ${task.state}`, at });
      return r;
    };
    repo.update = async (current, patch, o) => {
      const at = Date.now();
      const moved = await update.call(repo, current, patch, o);
      if (moved && patch.state !== undefined) written.push({ id: current.id, state: patch.state, at });
      return moved;
    };
    const writesOf = (id: string) => written.filter((w) => w.id === id);
    try {
      await connect(); // answers at once
      const quick = await submit();
      await until(quick.body.id, 'succeeded');
      assert.deepEqual(writesOf(quick.body.id).map((w) => w.state), ['stored dispatched', 'succeeded']);
      await closeAll();

      await connect(() => 'ignore'); // accepts, never answers
      const slow = await submit();
      await until(slow.body.id, 'running'); // this node's view, at once
      for (let s = (await repo.byId(slow.body.id))!.state; s !== 'running'; s = (await repo.byId(slow.body.id))!.state) {
        assert.equal(s, 'dispatched');
        await new Promise((r) => setTimeout(r, 20));
      }
      const [dispatched, running] = writesOf(slow.body.id);
      assert.deepEqual([dispatched?.state, running?.state], ['stored dispatched', 'running']);
      // The accept came after the dispatched write, and the running write RECORD_MS after the accept.
      assert.ok(running!.at - dispatched!.at >= RECORD_MS - 2, `running written ${running!.at - dispatched!.at} ms after dispatched`);
      assert.equal((await t.fetch(`/api/v1/tasks/${slow.body.id}/cancel`, { method: 'POST', token })).status, 200);
      assert.deepEqual(writesOf(slow.body.id).map((w) => w.state), ['stored dispatched', 'running', 'cancelled']);
      assert.equal(t.server.tasks.openHandles.record, 0);
      await closeAll();
    } finally {
      repo.update = update;
      repo.insert = insert;
    }
  });

  it('timers and listeners are released when tasks end', async () => {
    await closeAll();
    await new Promise((r) => setTimeout(r, 300));
    // End what earlier tests left unfinished (queued after their agents left), then nothing may remain.
    for (const left of await t.server.store.tasks.listUnfinished()) {
      assert.equal((await t.fetch(`/api/v1/tasks/${left.id}/cancel`, { method: 'POST', token })).status, 200);
    }
    assert.deepEqual(t.server.tasks.openHandles, { accept: 0, deadline: 0, grace: 0, record: 0, listeners: 0, live: 0, following: 0, unended: 0, outbox: 0 });
    assert.equal(t.server.agents.size, 0);
  });
});
