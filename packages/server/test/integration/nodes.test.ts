/**
 * Two nodes of one deployment (one public URL, PostgreSQL + Redis): an agent connected to node B is
 * seen as connected, on B, from node A; revoking its session on node A closes its connection on B;
 * a task submitted on A runs on B's agent with its events and result back on A, cancelling on A
 * reaches B, and a duplicate dispatch message never runs a task twice.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { apiClient, clientToken, deviceLogin, type TestServer } from '../support/harness.ts';
import { SyntheticAgent, type SyntheticAgentOptions } from '../support/agent.ts';
import { monitorRedis, REDIS_URL } from '../support/redis.ts';
import { startTwoNodes, twoNodesSkip, type TwoNodes } from '../support/two-nodes.ts';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { startNodeProcess } from '../support/node-proc.ts';

const skip = await twoNodesSkip('two-node tests');

describe('two nodes sharing PostgreSQL and Redis', { skip }, () => {
  let nodes: TwoNodes | undefined;
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    // B writes `running` to the store only a minute after an accept, so reads made meanwhile show
    // what the nodes heard rather than what the store has (see the test on reads of a running task).
    nodes = await startTwoNodes('node', { b: { runningRecordMs: 60_000 } });
    ({ a, b } = nodes);
  });
  after(() => nodes?.close());

  const agentsOn = async (t: TestServer, token: string) => ((await (await t.fetch('/api/v1/agents', { token })).json()) as { agents: { id: string; connected: boolean; node?: string }[] }).agents;

  it('presence: an agent on node B is connected, on B, as node A sees it; and gone when it leaves', async () => {
    const client = await apiClient(a, 'presence');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [] });
    const seen = (await agentsOn(a, client.token)).find((x) => x.id === agent.agentId);
    assert.deepEqual({ connected: seen?.connected, node: seen?.node }, { connected: true, node: 'node-b' });
    const closed = agent.closed();
    agent.close();
    await closed;
    let still = true;
    for (let i = 0; i < 50 && still; i++) {
      still = (await agentsOn(a, client.token)).find((x) => x.id === agent.agentId)?.connected ?? false;
      if (still) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(still, false);
  });

  it("revoking a session on node A closes that session's WebSocket on node B within seconds", async () => {
    const cli = await deviceLogin(a, 'palisade-cli', 'openid offline_access tasks admin');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [] });
    const closed = agent.closed();
    const started = Date.now();
    const res = await a.fetch(`/api/v1/sessions/${String(decodeJwt(ext.access_token).gid)}`, { method: 'DELETE', token: cli.access_token });
    assert.equal(res.status, 204);
    const { code } = await closed;
    assert.equal(code, 4410);
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
    assert.equal((await b.fetch('/api/v1/me', { token: ext.access_token })).status, 401, 'refused on node B too');
  });

  it('an API client revoked on node A is refused on node B at once, though B had it cached', async () => {
    const client = await apiClient(a, 'revoked across nodes');
    const tokenB = await clientToken(b, client.clientId, client.clientSecret);
    assert.equal((await b.fetch('/api/v1/recipes', { token: tokenB })).status, 200, 'B has read (and cached) the client');
    assert.equal((await a.fetch(`/api/v1/clients/${client.clientId}`, { method: 'DELETE', token: client.adminToken })).status, 204);
    let status = 200;
    for (let i = 0; i < 40 && status === 200; i++) {
      status = (await b.fetch('/api/v1/recipes', { token: tokenB })).status;
      if (status === 200) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(status, 401, 'its tokens are refused on B');
    const res = await b.fetch('/oauth2/token', {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'tasks' }),
    });
    assert.equal(res.status, 401, 'and B issues it no new token');
  });
  const SITE = 'http://127.0.0.1:9';

  /**
   * An API client (`clientName`) and an agent of the same user connected to node B, granted SITE,
   * with `options` (its `onTask`…); the agent is closed once `fn` is done, whatever happens.
   */
  const withAgentOnB = async (clientName: string, options: Partial<SyntheticAgentOptions>, fn: (client: { token: string }, agent: SyntheticAgent) => Promise<void>) => {
    const client = await apiClient(a, clientName);
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [SITE], ...options });
    try {
      await fn(client, agent);
    } finally {
      agent.close();
    }
  };
  const submit = (t: TestServer, token: string, extra: Record<string, unknown> = {}) => t.fetch('/api/v1/tasks', {
    method: 'POST', token, headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: `${SITE}/` }, { type: 'extract', name: 'h', selectors: ['h1'] }], ...extra }),
  });
  const stateOn = async (t: TestServer, token: string, id: string) => ((await (await t.fetch(`/api/v1/tasks/${id}`, { token })).json()) as { state: string }).state;
  /** Waits until node `t` keeps no more deadline timers and followed tasks than `base` did: it let go of the task. */
  const letGo = (t: TestServer, base: { deadline: number; following: number }) =>
    until(async () => t.server.tasks.openHandles.deadline === base.deadline && t.server.tasks.openHandles.following === base.following, 'node A let go of the task', 3000);
  async function until(fn: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await fn())) {
      if (Date.now() > end) throw new Error(`${what}: not in time`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  it('a task submitted on node A runs on the agent connected to node B; state, progress and result come back on A', async () => {
    await withAgentOnB('cross-node', { onTask: () => ({ outcome: 'succeeded', result: { outputs: { ranOn: 'b' } } }) }, async (client, agent) => {
      const res = await submit(a, client.token);
      assert.equal(res.status, 201, await res.clone().text());
      const task = (await res.json()) as { id: string };
      const text = await (await a.fetch(`/api/v1/tasks/${task.id}/events`, { token: client.token, signal: AbortSignal.timeout(10_000) })).text();
      const types = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
      // How many state events depends on when the stream opened (its first is the state it found).
      assert.deepEqual(types.filter((x) => x !== 'state'), ['progress', 'progress', 'end'], text);
      const states = [...text.matchAll(/^event: state\ndata: (.*)$/gm)].map((m) => (JSON.parse(m[1]!) as { state: string }).state);
      assert.equal(states.at(-1), 'running', text);
      const end = JSON.parse(/event: end\ndata: (.*)\n/.exec(text)![1]!) as { task: { state: string; agentId: string; result: { outputs: unknown } } };
      assert.equal(end.task.state, 'succeeded');
      assert.equal(end.task.agentId, agent.agentId);
      assert.deepEqual(end.task.result.outputs, { ranOn: 'b' });
      assert.equal(await stateOn(a, client.token, task.id), 'succeeded');
      assert.equal(a.server.tasks.openHandles.following, 0, 'node A stopped following the ended task');
    });
  });

  it("a short task's events reach node A in one bus message, in order; a longer task's before its end", async () => {
    const published: string[][] = [];
    const monitor = await monitorRedis(REDIS_URL, (args) => {
      if (args[0]?.toLowerCase() === 'publish' && args[1]?.includes(':bus:task:')) published.push(args.slice(1));
    });
    try {
      await withAgentOnB('batched events', {}, async (client) => {
        await new Promise((r) => setTimeout(r, 100)); // MONITOR is under way
        const res = await submit(a, client.token, {});
        const task = (await res.json()) as { id: string };
        await until(async () => (await stateOn(a, client.token, task.id)) === 'succeeded', 'the task ended');
        type Event = { type: string; state?: string };
        const mine = () => published.filter(([ch]) => ch!.endsWith(`:bus:task:${task.id}`)).map(([, m]) => JSON.parse(m!) as { from: string; event: Event; before?: Event[] });
        await until(async () => mine().at(-1)?.event.type === 'end', 'its end seen by MONITOR', 2000);
        // In one message when the task ends within taskEventBatchMs (10 ms) of its dispatch; a slow
        // moment (this machine runs other tests meanwhile) may split them once. One each before.
        assert.ok(mine().length <= 2, `one message (two at most): ${JSON.stringify(mine())}`);
        // Each message's latest in `event` (where a node that reads only that finds the end); in order.
        assert.deepEqual(mine().flatMap((m) => [...m.before ?? [], m.event]).map((e) => e.state ?? e.type), ['dispatched', 'running', 'progress', 'progress', 'end']);
      });
      // An agent that accepts and then works: its running goes to A long before any end.
      await withAgentOnB('events before the end', { onTask: () => 'ignore' }, async (client) => {
        const task = (await (await submit(a, client.token)).json()) as { id: string };
        const stream = await a.fetch(`/api/v1/tasks/${task.id}/events`, { token: client.token, signal: AbortSignal.timeout(3000) });
        const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
        let text = '';
        while (!/"state":"running"/.test(text)) {
          const { value, done } = await reader.read(); // the stream's 3 s run out first if running never comes
          assert.ok(!done, text);
          text += value;
        }
        assert.doesNotMatch(text, /^event: end$/m);
        await reader.cancel();
        assert.equal((await (await a.fetch(`/api/v1/tasks/${task.id}/cancel`, { method: 'POST', token: client.token })).json() as { state: string }).state, 'cancelled');
      });
    } finally {
      monitor.close();
    }
  });

  it('after many tasks across the nodes, every timer, listener, subscription and cached task is released on both', async () => {
    await withAgentOnB('churn across nodes', {}, async (client) => {
      const ids = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const res = await submit(a, client.token, i % 2 ? { waitForAgent: true } : {});
        assert.equal(res.status, 201);
        return ((await res.json()) as { id: string }).id;
      }));
      // Half the callers watch their task's events on A while it runs on B.
      await Promise.all(ids.filter((_, i) => i % 2 === 0).map((id) => a.fetch(`/api/v1/tasks/${id}/events`, { token: client.token }).then((r) => r.text())));
      await until(async () => (await Promise.all(ids.map((id) => stateOn(a, client.token, id)))).every((s) => s === 'succeeded'), 'all ran', 15_000);
      const zero = { accept: 0, deadline: 0, grace: 0, record: 0, listeners: 0, live: 0, following: 0, unended: 0, outbox: 0 };
      await until(async () => JSON.stringify(a.server.tasks.openHandles) === JSON.stringify(zero) && JSON.stringify(b.server.tasks.openHandles) === JSON.stringify(zero), 'released', 3000)
        .catch(() => assert.deepEqual({ a: a.server.tasks.openHandles, b: b.server.tasks.openHandles }, { a: zero, b: zero }));
    });
  });

  it('a task waiting for an agent (waitForAgent) runs when one connects to another node; node A, which keeps its deadline, hears its end and lets go', async () => {
    const client = await apiClient(a, 'waits across nodes');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const base = a.server.tasks.openHandles;
    const res = await submit(a, client.token, { waitForAgent: true });
    assert.equal(res.status, 201, await res.clone().text());
    const task = (await res.json()) as { id: string; state: string };
    assert.equal(task.state, 'queued');
    await until(async () => a.server.tasks.openHandles.following === base.following + 1, 'A follows the queued task');
    assert.equal(a.server.tasks.openHandles.deadline, base.deadline + 1, "A keeps the task's deadline");
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [SITE] });
    try {
      await until(async () => (await stateOn(a, client.token, task.id)) === 'succeeded', 'the task ran on B');
      // Long before the task's deadline (the default, minutes away).
      await letGo(a, base);
    } finally {
      agent.close();
    }
  });

  it('reads on the dispatching node and on the submitting node say running from the accept on, though the store hears it later; a cancel applies', async () => {
    await withAgentOnB('running read', { onTask: () => 'ignore' }, async (client) => {
      const task = (await (await submit(a, client.token)).json()) as { id: string };
      await until(async () => (await stateOn(b, client.token, task.id)) === 'running', 'running as B reads it');
      await until(async () => (await stateOn(a, client.token, task.id)) === 'running', 'running as A reads it');
      assert.equal((await a.server.store.tasks.byId(task.id))?.state, 'dispatched', 'the store has not heard it yet (runningRecordMs)');
      assert.equal(b.server.tasks.openHandles.record, 1);
      const res = await a.fetch(`/api/v1/tasks/${task.id}/cancel`, { method: 'POST', token: client.token });
      assert.equal(((await res.json()) as { state: string }).state, 'cancelled');
      await until(async () => b.server.tasks.openHandles.record === 0, 'B let go of the pending write');
      assert.equal((await a.server.store.tasks.byId(task.id))?.state, 'cancelled');
    });
  });

  it('cancelling on node A reaches the agent on node B at once; a late result from the agent changes nothing', async () => {
    await withAgentOnB('cancel across nodes', { onTask: () => 'ignore' }, async (client, agent) => {
      const task = (await (await submit(a, client.token)).json()) as { id: string };
      await until(async () => (await stateOn(a, client.token, task.id)) === 'running', 'running on B');
      const res = await a.fetch(`/api/v1/tasks/${task.id}/cancel`, { method: 'POST', token: client.token });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { state: string }).state, 'cancelled');
      const cancel = await agent.next((f) => f.type === 'task.cancel' && f.taskId === task.id, 3000);
      assert.equal((cancel as { reason: string }).reason, 'cancelled');
      agent.send({ type: 'task.result', taskId: task.id, outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } } });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await stateOn(b, client.token, task.id), 'cancelled');
      assert.equal(await stateOn(a, client.token, task.id), 'cancelled');
      assert.equal(b.server.tasks.openHandles.accept, 0);
      // B kept this task's events (dispatched, running) but hears no end event on the bus: the
      // cancel message lets its history go like an ended task's (else it stayed until the cap).
      assert.deepEqual([a.server.tasks.openHandles.unended, b.server.tasks.openHandles.unended], [0, 0]);
    });
  });

  it("a watcher on node A that leaves before the end of a task running on B: A lets go of the events it kept", async () => {
    await withAgentOnB('watcher leaves', { onTask: () => 'ignore' }, async (client, agent) => {
      // Submitted on B, to B's own agent: A takes no part but for the watcher.
      const task = (await (await submit(b, client.token)).json()) as { id: string };
      await until(async () => (await stateOn(b, client.token, task.id)) === 'running', 'running on B');
      const watching = new AbortController();
      const stream = await a.fetch(`/api/v1/tasks/${task.id}/events`, { token: client.token, signal: watching.signal });
      const reader = stream.body!.getReader();
      await until(async () => a.server.tasks.openHandles.following === 1, 'A follows the task');
      // An event A hears while it follows: A keeps it (a late watcher could ask for it again).
      agent.send({ type: 'task.progress', taskId: task.id, step: 0, stepType: 'navigate', status: 'done', elapsedMs: 1 });
      let seen = '';
      while (!seen.includes('event: progress')) seen += new TextDecoder().decode((await reader.read()).value);
      assert.equal(a.server.tasks.openHandles.unended, 1, 'A keeps the events of a task it follows');
      watching.abort();
      await until(async () => a.server.tasks.openHandles.following === 0, 'A stops following when its watcher leaves');
      agent.send({ type: 'task.result', taskId: task.id, outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } } });
      await until(async () => (await stateOn(a, client.token, task.id)) === 'succeeded', 'done on B');
      // A heard nothing of the end: without letting go, its history stayed until the 1,000-task cap.
      assert.deepEqual([a.server.tasks.openHandles.unended, b.server.tasks.openHandles.unended], [0, 0]);
    });
  });

  it('a task for an agent on node B is stored already dispatched to it by node A: B sends it without a write of its own', async () => {
    await withAgentOnB('born-dispatched', { onTask: () => 'no-accept' }, async (client, agent) => {
      const task = (await (await submit(a, client.token)).json()) as { id: string; state: string; agentId?: string };
      assert.deepEqual([task.state, task.agentId], ['dispatched', agent.agentId], 'the answer names the agent chosen');
      await agent.next((f) => f.type === 'task.dispatch' && f.taskId === task.id);
      const stored = await a.server.store.tasks.byId(task.id);
      assert.deepEqual([stored?.state, stored?.agentId, stored?.nodeId, stored?.attempts], ['dispatched', agent.agentId, 'node-b', 1]);
      assert.equal(stored?.updatedAt, stored?.createdAt, 'node B moved nothing in the store to send it');
      await a.fetch(`/api/v1/tasks/${task.id}/cancel`, { method: 'POST', token: client.token });
    });
  });

  /** Stores a task dispatched to `agentId` on node B as if its dispatch message had been lost, `ago` ms ago. */
  const lostDispatch = async (token: string, agentId: string, ago = 10_000) => {
    const at = new Date(Date.now() - ago).toISOString();
    const id = `t_lost_${randomUUID()}`;
    await a.server.store.tasks.insert({
      id, ownerUserId: String(decodeJwt(token).sub), clientId: 'lost-client', site: SITE, steps: [{ type: 'navigate', url: `${SITE}/` }],
      state: 'dispatched', agentId, nodeId: 'node-b', attempts: 1, requestHash: 'h', waitForAgent: false, createdAt: at, updatedAt: at,
      deadline: new Date(Date.now() + 60_000).toISOString(),
    });
    return id;
  };

  it('a dispatch the bus lost: the sweeper points the task out to node B, which sends it to its agent after a compare-and-set', async () => {
    const dispatched: string[] = [];
    await withAgentOnB('lost dispatch', { onTask: (f) => { dispatched.push(f.taskId); return { outcome: 'succeeded' }; } }, async (client, agent) => {
      const token = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
      const id = await lostDispatch(token, agent.agentId!);
      // Within a sweep or two (a beat is 2 s): B confirms the task is still dispatched to it, then sends it.
      await until(async () => (await a.server.store.tasks.byId(id))?.state === 'succeeded', 'the lost task ran', 10_000);
      assert.deepEqual(dispatched.filter((t) => t === id), [id], 'sent once');
      void client;
    });
  });

  it('a task pointed out to node B for an agent no longer there goes back to the queue, its attempt uncounted, and on to an agent that is', async () => {
    await withAgentOnB('agent gone', {}, async (_client, agent) => {
      const token = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
      const id = await lostDispatch(token, 'ag_gone_long_ago');
      await until(async () => (await a.server.store.tasks.byId(id))?.state === 'succeeded', 'the task ran on the agent present', 10_000);
      const done = await a.server.store.tasks.byId(id);
      assert.deepEqual([done?.agentId, done?.attempts], [agent.agentId, 1]);
    });
  });

  it('a cancel that reaches node B before the dispatch of the task (sent by a slower node): B does not send the cancelled task', async () => {
    const dispatched: string[] = [];
    await withAgentOnB('cancel first', { onTask: (f) => { dispatched.push(f.taskId); return { outcome: 'succeeded' }; } }, async (_client, agent) => {
      const token = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
      const id = await lostDispatch(token, agent.agentId!, 0);
      const stored = (await a.server.store.tasks.byId(id))!;
      await a.server.store.tasks.update(stored, { state: 'cancelled', updatedAt: new Date().toISOString() });
      const redis = new Redis(REDIS_URL);
      try {
        const topic = `${nodes!.prefix}:bus:node:node-b`;
        await redis.publish(topic, JSON.stringify({ k: 'cancel', taskId: id, agentId: agent.agentId, reason: 'cancelled' }));
        // The dispatch as first stored, fresh: without the cancel noted, B would send it without asking the store.
        await redis.publish(topic, JSON.stringify({ k: 'dispatch', taskId: id, task: stored }));
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(dispatched.filter((x) => x === id), [], 'not sent');
        assert.equal((await a.server.store.tasks.byId(id))?.state, 'cancelled');
      } finally {
        redis.disconnect();
      }
    });
  });

  it("node A's subscription to a new task's events is slow (Redis) and node B's bus comes back as the task is stored: sent once; A hears its end and lets go", async () => {
    const dispatched: string[] = [];
    await withAgentOnB('late follow', { onTask: (f) => { dispatched.push(f.taskId); return { outcome: 'succeeded' }; } }, async (client) => {
      // What node A holds already (tasks of earlier tests still running or queued).
      const base = a.server.tasks.openHandles;
      const bus = a.server.hot.bus;
      const subscribe = bus.subscribe;
      // A's subscriptions to task topics take 600 ms (the dispatch waits for it).
      bus.subscribe = (topic, handler) => topic.startsWith('task:')
        ? new Promise<void>((r) => setTimeout(r, 600)).then(() => subscribe.call(bus, topic, handler))
        : subscribe.call(bus, topic, handler);
      const redis = new Redis(REDIS_URL);
      try {
        const answer = submit(a, client.token);
        // Once the task is stored (dispatched to B's agent), B hears its bus came back (an empty
        // message, as after a reconnect) and takes the tasks stored dispatched to it: this one runs and ends.
        await until(async () => (await a.server.store.tasks.listUnfinished()).length > 0 || dispatched.length > 0, 'stored', 2000);
        await redis.publish(`${nodes!.prefix}:bus:node:node-b`, '');
        const task = (await (await answer).json()) as { id: string };
        await until(async () => (await a.server.store.tasks.byId(task.id))?.state === 'succeeded', 'ran on B', 3000);
        await letGo(a, base);
        assert.deepEqual(dispatched.filter((x) => x === task.id), [task.id], 'sent once');
      } finally {
        bus.subscribe = subscribe;
        redis.disconnect();
      }
    });
  });

  it("with no agent on node A, A subscribes to a new task's events beside its presence read, not after it; a refused submission leaves no subscription", async () => {
    await withAgentOnB('early follow', { onTask: () => ({ outcome: 'succeeded' }) }, async (client) => {
      const base = a.server.tasks.openHandles;
      const bus = a.server.hot.bus;
      const presence = a.server.hot.presence;
      const subscribe = bus.subscribe;
      const forUser = presence.forUser;
      const taskTopics: string[] = [];
      /** Task topics A had subscribed to (or started to) when each presence read of A's answered. */
      const seenByPresence: number[] = [];
      bus.subscribe = (topic, handler) => {
        if (topic.startsWith('task:')) taskTopics.push(topic);
        return subscribe.call(bus, topic, handler);
      };
      // Each presence read takes 300 ms more: a subscription started after it would come after.
      presence.forUser = async (userId) => {
        const entries = await forUser.call(presence, userId);
        await new Promise((r) => setTimeout(r, 300));
        seenByPresence.push(taskTopics.length);
        return entries;
      };
      try {
        const res = await submit(a, client.token);
        assert.equal(res.status, 201, await res.clone().text());
        const task = (await res.json()) as { id: string };
        await until(async () => (await a.server.store.tasks.byId(task.id))?.state === 'succeeded', 'ran on B', 3000);
        assert.deepEqual(taskTopics, [`task:${task.id}`], 'one subscription, to the new task');
        assert.deepEqual(seenByPresence, [1], 'it was under way while the presence read was');
        // Refused after the presence read (no agent granted that site): the subscription is undone.
        const refused = await a.fetch('/api/v1/tasks', {
          method: 'POST', token: client.token, headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ site: 'https://not-granted.test', steps: [{ type: 'navigate', url: 'https://not-granted.test/' }] }),
        });
        assert.equal(refused.status, 403, await refused.clone().text());
        assert.equal(((await refused.json()) as { code: string }).code, 'PAL_ERR_SITE_NOT_GRANTED');
        assert.equal(taskTopics.length, 2, 'the refused submission had started to follow its task');
        await until(async () => a.server.tasks.openHandles.following === base.following, 'node A follows nothing more than before', 3000);
        const redis = new Redis(REDIS_URL);
        try {
          const subscribers = async () => Number(((await redis.pubsub('NUMSUB', `${nodes!.prefix}:bus:${taskTopics[1]}`)) as [string, number])[1]);
          await until(async () => (await subscribers()) === 0, "Redis has no subscriber to the refused task's topic", 3000);
        } finally {
          redis.disconnect();
        }
      } finally {
        bus.subscribe = subscribe;
        presence.forUser = forUser;
      }
    });
  });

  it('a duplicate dispatch message (at-least-once delivery) never runs a task twice', async () => {
    const dispatched: string[] = [];
    await withAgentOnB('duplicates', { onTask: (f) => { dispatched.push(f.taskId); return { outcome: 'succeeded' }; } }, async (client) => {
      const redis = new Redis(REDIS_URL);
      try {
        const task = (await (await submit(a, client.token)).json()) as { id: string };
        await until(async () => (await stateOn(a, client.token, task.id)) === 'succeeded', 'done');
        // The same "dispatch" again, three times, as a retried or duplicated delivery would bring it
        // (read from the store, and carrying the task as stored at first).
        const first = { ...(await a.server.store.tasks.byId(task.id))!, state: 'dispatched' };
        for (let i = 0; i < 3; i++) await redis.publish(`${nodes!.prefix}:bus:node:node-b`, JSON.stringify({ k: 'dispatch', taskId: task.id, ...(i === 2 ? { task: first } : {}) }));
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(dispatched, [task.id], 'dispatched to the agent once');
        assert.equal(await stateOn(a, client.token, task.id), 'succeeded');
      } finally {
        redis.disconnect();
      }
    });
  });
  it('a node killed with SIGKILL mid-task: its task is taken back and runs again when the agent reconnects to another node, long before the deadline', async () => {
    const client = await apiClient(a, 'node death');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const c = await startNodeProcess({ ...nodes!.shared, nodeId: 'node-c', publicUrl: a.url, nodeBeatMs: 200 });
    try {
      const instanceId = randomUUID();
      const first = await SyntheticAgent.connect({ url: c.url, token: ext.access_token, ca: c.ca, grants: [SITE], instanceId, onTask: () => 'ignore' });
      // An idle agent on C too (no grants, so it takes no task): it never reconnects.
      const idle = await SyntheticAgent.connect({ url: c.url, token: ext.access_token, ca: c.ca, grants: [] });
      assert.equal((await agentsOn(a, client.token)).find((x) => x.id === idle.agentId)?.node, 'node-c');
      const task = (await (await submit(a, client.token, { timeoutMs: 60_000 })).json()) as { id: string };
      await until(async () => (await stateOn(a, client.token, task.id)) === 'running', 'running on node C');
      const gone = first.closed();
      const killedAt = Date.now();
      await c.kill();
      await gone;
      // Its presence lives minutes (presenceRefreshMs), but a dead node's entries count no more.
      await until(async () => (await agentsOn(a, client.token)).find((x) => x.id === idle.agentId)?.connected === false, "the idle agent shown gone with node C", 10_000);
      assert.ok(Date.now() - killedAt < 10_000);
      // The browser reconnects, through the load balancer, to a node that is still up.
      const second = await SyntheticAgent.connect({ url: a.url, token: ext.access_token, ca: a.server.tls?.ca, grants: [SITE], instanceId });
      try {
        assert.equal(second.agentId, first.agentId, 'the same agent');
        await until(async () => (await stateOn(a, client.token, task.id)) === 'succeeded', 'ran again after node C died', 15_000);
        const tookMs = Date.now() - killedAt;
        assert.ok(tookMs < 10_000, `taken back in ${tookMs} ms (deadline 60 s)`);
        const view = (await (await a.fetch(`/api/v1/tasks/${task.id}`, { token: client.token })).json()) as { attempts: number };
        assert.equal(view.attempts, 2, 'dispatched once more');
        const lost = [...a.securityEvents, ...b.securityEvents].filter((e) => e.activity_name === 'node.lost');
        assert.equal(lost.length, 1, 'one node (the sweeper of that beat) reported it');
        assert.match(lost[0]!.message ?? '', /node-c/);
      } finally {
        second.close();
      }
    } finally {
      await c.kill();
    }
  });

  describe('a task requeued on the node that ran it (a short reconnect grace on node A)', () => {
    let pair: TwoNodes | undefined;
    before(async () => {
      pair = await startTwoNodes('requeue', { a: { reconnectGraceMs: 300 } });
    });
    after(() => pair?.close());

    it("its agent gone and none other free: node A follows it, hears its end when B's agent runs it, and lets go of its deadline timer", async () => {
      const { a: a2, b: b2 } = pair!;
      const client = await apiClient(a2, 'requeued');
      const ext = await deviceLogin(a2, 'palisade-extension', 'openid offline_access agent');
      const base = a2.server.tasks.openHandles;
      const first = await SyntheticAgent.connect({ url: a2.url, token: ext.access_token, ca: a2.server.tls?.ca, grants: [SITE], onTask: () => 'ignore' });
      const task = (await (await submit(a2, client.token)).json()) as { id: string };
      await until(async () => (await stateOn(a2, client.token, task.id)) === 'running', 'running on A');
      first.close();
      await until(async () => (await a2.server.store.tasks.byId(task.id))?.state === 'queued', 'requeued once the grace ran out');
      await until(async () => a2.server.tasks.openHandles.following === base.following + 1, 'A follows the requeued task');
      assert.equal(a2.server.tasks.openHandles.deadline, base.deadline + 1, "A keeps the task's deadline");
      const second = await SyntheticAgent.connect({ url: b2.url, token: ext.access_token, ca: b2.server.tls?.ca, grants: [SITE], onTask: () => ({ outcome: 'succeeded' }) });
      try {
        await until(async () => (await a2.server.store.tasks.byId(task.id))?.state === 'succeeded', 'ran on B');
        // Long before the task's deadline (the default, minutes away).
        await letGo(a2, base);
      } finally {
        second.close();
      }
    });
  });
});
