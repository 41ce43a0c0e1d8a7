/** The real client over real HTTP against a test double of the server (test/helpers/fake-server.ts). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { PalisadeError, type TaskEvent } from '@palisade/protocol';
import { Palisade, TaskError } from '../src/index.ts';
import { startFakeServer, type FakeServer } from './helpers/fake-server.ts';

let server: FakeServer;
let palisade: Palisade;

before(async () => {
  server = await startFakeServer();
  palisade = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret });
});
after(() => server.close());

test('run resolves with the final task and streams every event in order', async () => {
  const events: TaskEvent[] = [];
  const task = await palisade.run('ok', { query: 'shoes' }, { onProgress: (e) => events.push(e) });
  assert.equal(task.state, 'succeeded');
  assert.deepEqual(task.result?.outputs, { title: 'Example Domain', n: 3 });
  const kinds = events.map((e) => (e.type === 'state' ? `state:${e.state}` : e.type === 'progress' ? `${e.stepType}:${e.status}` : 'end'));
  assert.deepEqual(kinds, [
    'state:queued', 'state:dispatched', 'state:running', 'navigate:started', 'navigate:done',
    'extract:started', 'extract:done', 'state:succeeded', 'end',
  ]);
  const submit = server.requestsTo('/api/v1/tasks').at(-1);
  assert.deepEqual(JSON.parse(submit?.body ?? '{}'), { recipe: 'ok', input: { query: 'shoes' } });
  assert.match(submit?.headers.authorization ?? '', /^Bearer at-cc-/);
  assert.equal(submit?.headers['content-type'], 'application/json');
});

test('a failed task rejects with a TaskError carrying the step error and the task', async () => {
  await assert.rejects(palisade.run('fail'), (e: unknown) => {
    assert.ok(e instanceof TaskError);
    assert.ok(e instanceof PalisadeError);
    assert.equal(e.code, 'PAL_ERR_STEP_FAILED');
    assert.equal(e.task.state, 'failed');
    assert.equal(e.task.error?.step, 1);
    return true;
  });
});

test('a task no agent can take rejects with PAL_ERR_NO_AGENT', async () => {
  await assert.rejects(palisade.run('no-agent'), (e: unknown) => e instanceof TaskError && e.code === 'PAL_ERR_NO_AGENT');
});

test('an unknown recipe rejects with the server problem code', async () => {
  await assert.rejects(palisade.run('nope'), (e: unknown) => e instanceof PalisadeError && !(e instanceof TaskError) && e.code === 'PAL_ERR_UNKNOWN_RECIPE');
  await assert.rejects(palisade.recipe('nope'), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNKNOWN_RECIPE');
  await assert.rejects(palisade.get('missing'), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_NOT_FOUND');
});

test('aborting a run cancels the task on the server and rejects with PAL_ERR_TASK_CANCELLED', async () => {
  const controller = new AbortController();
  const promise = palisade.run('slow', undefined, {
    signal: controller.signal,
    onProgress: (e) => {
      if (e.type === 'progress' && e.status === 'done') controller.abort(new Error('user pressed stop'));
    },
  });
  await assert.rejects(promise, (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TASK_CANCELLED');
  const id = server.state.cancels.at(-1);
  assert.ok(id, 'the task was cancelled on the server');
  assert.equal((await palisade.get(id)).state, 'cancelled');
});

test('an already aborted signal submits nothing', async () => {
  const before = server.requestsTo('/api/v1/tasks').length;
  await assert.rejects(palisade.run('ok', undefined, { signal: AbortSignal.abort() }), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TASK_CANCELLED');
  assert.equal(server.requestsTo('/api/v1/tasks').length, before);
});

test('an idempotency key returns the same task instead of a second one', async () => {
  const a = await palisade.run('ok', undefined, { idempotencyKey: 'order-42' });
  const b = await palisade.run('ok', undefined, { idempotencyKey: 'order-42' });
  assert.equal(a.id, b.id);
  assert.equal(JSON.parse(server.requestsTo('/api/v1/tasks').at(-1)?.body ?? '{}').idempotencyKey, 'order-42');
});

test('runSteps submits inline steps with their site (a whole Recorder flow is accepted)', async () => {
  const flow = { title: 'recorded', steps: [{ type: 'navigate' as const, url: 'https://example.com/' }] };
  const task = await palisade.runSteps('https://example.com', flow, undefined, { agentId: 'agent-1', timeoutMs: 5000 });
  assert.equal(task.state, 'succeeded');
  const body = JSON.parse(server.requestsTo('/api/v1/tasks').at(-1)?.body ?? '{}');
  assert.deepEqual(body, { site: 'https://example.com', steps: flow.steps, agentId: 'agent-1', timeoutMs: 5000 });
});

test('a dropped event stream is reopened and the run still completes', async () => {
  const events: string[] = [];
  const task = await palisade.run('drop', undefined, { onProgress: (e) => events.push(e.type === 'state' ? e.state : e.type === 'progress' ? `${e.step}:${e.status}` : 'end') });
  assert.equal(task.state, 'succeeded');
  assert.deepEqual(events, ['queued', 'dispatched', 'running', '0:started', '0:done', '1:started', '1:done', 'succeeded', 'end'], 'replayed events are not repeated');
  const record = server.state.tasks.get(task.id);
  assert.equal(record?.streams, 2);
});

test('events() ends after the end event, at once for a finished task', async () => {
  const task = await palisade.run('ok');
  const seen: string[] = [];
  for await (const e of palisade.events(task.id)) seen.push(e.type);
  assert.equal(seen.at(-1), 'end');
  assert.equal(seen.filter((t) => t === 'end').length, 1);
});

test('submit, get and cancel; cancelling a finished task is PAL_ERR_TASK_FINISHED', async () => {
  const task = await palisade.submit({ recipe: 'slow' });
  assert.equal(task.state, 'queued');
  const cancelled = await palisade.cancel(task.id);
  assert.equal(cancelled.state, 'cancelled');
  await assert.rejects(palisade.cancel(task.id), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TASK_FINISHED');
});

test('recipes, agents, me and clients follow the contract', async () => {
  assert.deepEqual((await palisade.recipes()).map((r) => r.name), ['ok']);
  assert.equal((await palisade.recipe('ok')).inputs.q?.required, true);
  assert.deepEqual((await palisade.agents())[0]?.grants, ['https://example.com']);
  assert.equal((await palisade.me()).clientId, server.clientId);
  const created = await palisade.clients.create({ name: 'ci', scopes: ['tasks'] });
  assert.equal(created.clientSecret, 'shown-once');
  assert.deepEqual((await palisade.clients.list()).map((c) => c.clientId), [created.clientId]);
  await palisade.clients.delete(created.clientId);
  assert.deepEqual(await palisade.clients.list(), []);
  await assert.rejects(palisade.clients.delete(created.clientId), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_NOT_FOUND');
});

test('an expired token is refreshed once on a 401 and the request repeated', async () => {
  const fresh = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret });
  await fresh.me();
  const issued = server.state.issued.clientCredentials;
  server.state.validTokens.clear(); // every token the server issued is now refused
  const [a, b] = await Promise.all([fresh.agents(), fresh.recipes()]);
  assert.equal(a.length, 1);
  assert.equal(b.length, 1);
  assert.equal(server.state.issued.clientCredentials, issued + 1, 'one new token for both requests');
});

test('wrong client credentials reject with PAL_ERR_UNAUTHENTICATED', async () => {
  const bad = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: 'wrong' });
  await assert.rejects(bad.agents(), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAUTHENTICATED');
});

test('an unreachable server rejects with PAL_ERR_UNAVAILABLE and the network cause', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const down = new Palisade({ server: `http://127.0.0.1:${port}`, accessToken: 'x' });
  await assert.rejects(down.me(), (e: unknown) => {
    assert.ok(e instanceof PalisadeError);
    assert.equal(e.code, 'PAL_ERR_UNAVAILABLE');
    assert.ok(e.cause instanceof Error);
    assert.match(e.message, /ECONNREFUSED/);
    return true;
  });
});

test('a request with no answer in timeoutMs rejects with PAL_ERR_TIMEOUT', async () => {
  const slow = await startFakeServer({ tokenDelayMs: 2000 });
  try {
    const p = new Palisade({ server: slow.url, clientId: slow.clientId, clientSecret: slow.clientSecret, timeoutMs: 100 });
    await assert.rejects(p.me(), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TIMEOUT');
  } finally {
    await slow.close();
  }
});

test('a silent event stream is reopened after streamIdleMs, and given up after `reconnects`', async () => {
  const quick = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret, streamIdleMs: 150 });
  const task = await quick.submit({ recipe: 'slow' });
  const seen: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const e of quick.events(task.id, { reconnects: 1 })) seen.push(e.type);
    })(),
    (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TIMEOUT',
  );
  assert.equal(server.state.tasks.get(task.id)?.streams, 2);
  assert.ok(seen.includes('progress'));
  await quick.cancel(task.id);
});
