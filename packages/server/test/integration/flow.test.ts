/**
 * The skeleton's path through the real server: admin setup → device-grant sign-in for an agent →
 * API client → task submitted → dispatched to the synthetic agent → progress and result back over
 * REST and SSE.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SyntheticAgent } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';

const SITE = 'http://127.0.0.1:9';
const steps = [
  { type: 'navigate', url: `${SITE}/search?q=\${input.q}` },
  { type: 'extract', name: 'titles', selectors: ['li a'], all: true },
];

describe('task flow over TLS', () => {
  let t: TestServer;
  let agent: SyntheticAgent;
  let token: string;

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    const agentTokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
    assert.ok(agentTokens.refresh_token, 'the device grant issues a refresh token');
    agent = await SyntheticAgent.connect({
      url: t.url, token: agentTokens.access_token, ca: t.server.tls?.ca, grants: [SITE],
      onTask: (f) => ({ outcome: 'succeeded', result: { outputs: { titles: [`result for ${f.steps[0]?.type === 'navigate' ? f.steps[0].url : ''}`] } } }),
    });
    ({ token } = await apiClient(t));
  });
  after(async () => {
    agent?.close();
    await t?.close();
  });

  it('runs a task on the agent and returns its result', async () => {
    const res = await t.fetch('/api/v1/tasks', {
      method: 'POST', token, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ site: SITE, steps, input: { q: 'palisade' } }),
    });
    assert.equal(res.status, 201);
    const task = (await res.json()) as { id: string; state: string };
    const events = await t.fetch(`/api/v1/tasks/${task.id}/events`, { token });
    assert.equal(events.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const text = await events.text();
    const end = /event: end\ndata: (.*)\n/.exec(text);
    assert.ok(end, `the stream ends with an end event: ${text}`);
    const final = JSON.parse(end[1]!).task;
    assert.equal(final.state, 'succeeded');
    assert.deepEqual(final.result.outputs.titles, [`result for ${SITE}/search?q=palisade`]);
    assert.equal(final.agentId, agent.agentId);
    const got = await (await t.fetch(`/api/v1/tasks/${task.id}`, { token })).json();
    assert.equal((got as { state: string }).state, 'succeeded');
  });

  it('HEAD on the event stream of an unfinished task answers at once with the headers only', async () => {
    const site = 'http://127.0.0.1:8';
    const agentTokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
    let release!: () => void;
    const busy = await SyntheticAgent.connect({
      url: t.url, token: agentTokens.access_token, ca: t.server.tls?.ca, grants: [site],
      onTask: () => new Promise((resolve) => (release = () => resolve({ outcome: 'succeeded', result: { outputs: {} } }))),
    });
    try {
      const res = await t.fetch('/api/v1/tasks', {
        method: 'POST', token, headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ site, steps: [{ type: 'navigate', url: `${site}/` }] }),
      });
      assert.equal(res.status, 201, await res.clone().text());
      const task = (await res.json()) as { id: string; state: string };
      const head = await t.fetch(`/api/v1/tasks/${task.id}/events`, { method: 'HEAD', token, signal: AbortSignal.timeout(3000) });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-type'), 'text/event-stream; charset=utf-8');
      assert.notEqual(((await (await t.fetch(`/api/v1/tasks/${task.id}`, { token })).json()) as { state: string }).state, 'succeeded', 'still running');
      assert.equal((await t.fetch('/api/v1/tasks/no-such-task/events', { method: 'HEAD', token })).status, 404);
      release();
    } finally {
      busy.close();
    }
  });

  it('replays kept events to a late subscriber, and resumes after Last-Event-ID', async () => {
    const res = await t.fetch('/api/v1/tasks', {
      method: 'POST', token, headers: { 'content-type': 'application/json', prefer: 'wait=5' },
      body: JSON.stringify({ site: SITE, steps, input: { q: 'late' } }),
    });
    const task = (await res.json()) as { id: string; state: string };
    assert.equal(task.state, 'succeeded', 'the task finished before anyone subscribed');
    const all = await (await t.fetch(`/api/v1/tasks/${task.id}/events`, { token })).text();
    const ids = [...all.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    const types = [...all.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    assert.deepEqual(types, ['state', 'state', 'progress', 'progress', 'end'], all);
    assert.deepEqual(ids, [0, 1, 2, 3, 4]);
    const end = JSON.parse(/event: end\ndata: (.*)\n/.exec(all)![1]!) as { task: { result?: { outputs: unknown } } };
    assert.ok(end.task.result, 'the replayed end event carries the result');
    const rest = await (await t.fetch(`/api/v1/tasks/${task.id}/events`, { token, headers: { 'last-event-id': '2' } })).text();
    assert.deepEqual([...rest.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]), ['progress', 'end']);
  });
});

describe('Prefer: wait', () => {
  it('answers with the finished task in one request, and with the current state when the wait runs out', async () => {
    const t = await startTestServer();
    try {
      await createAdmin(t);
      const agentTokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
      let hold = false;
      const agent = await SyntheticAgent.connect({ url: t.url, token: agentTokens.access_token, ca: t.server.tls?.ca, grants: [SITE], onTask: () => (hold ? 'ignore' : { outcome: 'succeeded' }) });
      const { token } = await apiClient(t);
      const submit = () => t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json', prefer: 'wait=1' }, body: JSON.stringify({ site: SITE, steps, input: { q: 'x' } }) });
      const res = await submit();
      assert.equal(res.status, 201);
      assert.equal(res.headers.get('preference-applied'), 'wait=1');
      assert.equal(((await res.json()) as { state: string }).state, 'succeeded');
      hold = true;
      const started = Date.now();
      const slow = await submit();
      assert.equal(((await slow.json()) as { state: string }).state, 'running');
      assert.ok(Date.now() - started >= 900, 'waited about a second');
      assert.deepEqual(t.server.tasks.openHandles.listeners, 0, 'the waiter unsubscribed');
      hold = false;
      const capped = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json', prefer: 'wait=999' }, body: JSON.stringify({ site: SITE, steps, input: { q: 'x' } }) });
      assert.equal(capped.headers.get('preference-applied'), 'wait=60', 'waits are capped at 60 s');
      agent.close();
    } finally {
      await t.close();
    }
  });
});

describe('event history bounds', () => {
  it('keeps at most HISTORY_EVENTS_PER_TASK events per task (progress trimmed first) and HISTORY_TASKS tasks', async () => {
    const { HISTORY_EVENTS_PER_TASK, HISTORY_TASKS } = await import('../../src/tasks/service.ts');
    // The agent floods progress far faster than the per-connection frame rate allows (ws-limits.test.ts tests that limit).
    const t = await startTestServer({ wsMessageRate: 1e6, wsMessageBurst: 1e6 });
    try {
      await createAdmin(t);
      const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
      let manual = true;
      const agent = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], onTask: () => (manual ? 'ignore' : { outcome: 'succeeded' }) });
      const { token } = await apiClient(t);
      const submit = async (wait: boolean) => (await (await t.fetch('/api/v1/tasks', {
        method: 'POST', token, headers: { 'content-type': 'application/json', ...(wait ? { prefer: 'wait=5' } : {}) },
        body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }] }),
      })).json()) as { id: string; state: string };

      // One task with far more progress events than are kept.
      const busy = await submit(false);
      for (let state = ''; state !== 'running';) state = ((await (await t.fetch(`/api/v1/tasks/${busy.id}`, { token })).json()) as { state: string }).state;
      const total = HISTORY_EVENTS_PER_TASK + 100;
      for (let i = 0; i < total; i += 50) {
        for (let j = i; j < Math.min(total, i + 50); j++) agent.send({ type: 'task.progress', taskId: busy.id, step: 0, stepType: 'navigate', status: 'done', elapsedMs: j });
        agent.send({ type: 'ping', t: i });
        await agent.next((f) => f.type === 'pong' && f.t === i);
      }
      agent.send({ type: 'task.result', taskId: busy.id, outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } } });
      for (let state = ''; state !== 'succeeded';) state = ((await (await t.fetch(`/api/v1/tasks/${busy.id}`, { token })).json()) as { state: string }).state;
      const replay = await (await t.fetch(`/api/v1/tasks/${busy.id}/events`, { token })).text();
      const types = [...replay.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
      assert.equal(types.length, HISTORY_EVENTS_PER_TASK, 'exactly the cap is kept');
      assert.deepEqual(types.slice(0, 2), ['state', 'state'], 'state changes survive; progress is trimmed first');
      assert.equal(types.at(-1), 'end');

      // Past HISTORY_TASKS finished tasks, the oldest history is dropped (a late subscriber then gets the task's state and end only).
      manual = false;
      const first = await submit(true);
      for (let i = 0; i < HISTORY_TASKS; i++) await submit(true);
      const late = await (await t.fetch(`/api/v1/tasks/${first.id}/events`, { token })).text();
      assert.deepEqual([...late.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]), ['state', 'end']);
      assert.ok(!/^id: /m.test(late.split('event: end')[0]!), 'nothing kept was replayed');
      agent.close();
    } finally {
      await t.close();
    }
  });
});
