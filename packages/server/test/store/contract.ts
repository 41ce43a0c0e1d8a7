/**
 * The durable-store contract: every adapter (SQLite, PostgreSQL) runs exactly these tests (their
 * OAuth records also run `oidc-contract.ts`). Call `storeContract(name, open)` from the adapter's test file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { UnfinishedCapReached, type DurableStore, type TaskRecord } from '../../src/store/types.ts';

const iso = () => new Date().toISOString();
/** A record as data (absent and undefined fields alike). */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v ?? null));

export function storeContract(name: string, open: () => Promise<DurableStore>): void {
  describe(`durable store contract: ${name}`, () => {
    let s: DurableStore;
    const userId = `u_${randomUUID()}`;
    before(async () => {
      s = await open();
      await s.users.create({ id: userId, username: `user-${userId}`, passwordHash: 'h', role: 'admin', createdAt: iso() });
    });
    after(async () => s?.close());

    it('users: create, find by id and name, unique names', async () => {
      assert.equal((await s.users.byId(userId))?.role, 'admin');
      assert.equal((await s.users.byUsername(`user-${userId}`))?.id, userId);
      assert.equal(await s.users.byId('missing'), undefined);
      await assert.rejects(s.users.create({ id: `u_${randomUUID()}`, username: `user-${userId}`, passwordHash: 'h', role: 'user', createdAt: iso() }));
      assert.ok((await s.users.count()) >= 1);
    });

    it('users: linked to an upstream identity atomically, once', async () => {
      const subject = randomUUID();
      const mk = (n: number) => ({ id: `u_${randomUUID()}`, username: `github:${subject}:${n}`, passwordHash: '', role: 'user' as const, createdAt: iso() });
      const link = { provider: 'github', subject, email: 'ada@example.com' };
      assert.equal(await s.users.byIdentity('github', subject), undefined);
      const results = await Promise.all([s.users.createLinked(mk(1), link), s.users.createLinked(mk(2), link)]);
      assert.deepEqual(results.map((r) => r.created).sort(), [false, true], 'of two concurrent first sign-ins, one creates the account');
      assert.equal(results[0]!.user.id, results[1]!.user.id);
      assert.equal((await s.users.byIdentity('github', subject))?.id, results[0]!.user.id);
      assert.equal(await s.users.byIdentity('google', subject), undefined, 'per provider');
      const loser = results.find((r) => r.created) === results[0] ? 2 : 1;
      assert.equal(await s.users.byUsername(`github:${subject}:${loser}`), undefined, 'no orphan account from the losing attempt');
    });

    it('clients: create, list by owner, revoke once', async () => {
      const clientId = `pal_${randomUUID()}`;
      await s.clients.create({ clientId, ownerUserId: userId, name: 'c', secretHash: 'sha256:x', scopes: ['tasks'], createdAt: iso() });
      assert.deepEqual((await s.clients.byId(clientId))?.scopes, ['tasks']);
      assert.ok((await s.clients.listByOwner(userId)).some((c) => c.clientId === clientId));
      assert.equal(await s.clients.revoke(clientId, iso()), true);
      assert.equal(await s.clients.revoke(clientId, iso()), false);
      assert.ok((await s.clients.byId(clientId))?.revokedAt);
      assert.ok(!(await s.clients.listByOwner(userId)).some((c) => c.clientId === clientId));
    });

    it('agents: upsert keeps one record per (user, instance)', async () => {
      const instanceId = randomUUID();
      const a = await s.agents.upsert({ id: 'ag_1', userId, instanceId, name: 'n1', version: '1', grants: ['https://a.example'], createdAt: iso(), lastSeenAt: iso() });
      const b = await s.agents.upsert({ id: 'ag_2', userId, instanceId, name: 'n2', version: '2', grants: [], createdAt: iso(), lastSeenAt: iso() });
      assert.equal(b.id, a.id, 'the first id stays');
      assert.equal(b.name, 'n2');
      await s.agents.touch(a.id, iso(), ['https://b.example']);
      assert.deepEqual((await s.agents.byId(a.id))?.grants, ['https://b.example']);
      assert.equal((await s.agents.listByUser(userId)).filter((x) => x.instanceId === instanceId).length, 1);
    });

    const task = (over: Partial<TaskRecord> = {}): TaskRecord => ({
      id: `t_${randomUUID()}`, ownerUserId: userId, clientId: 'c', site: 'https://a.example', steps: [{ type: 'navigate', url: 'https://a.example/' }],
      state: 'queued', attempts: 0, requestHash: 'h', waitForAgent: false, createdAt: iso(), updatedAt: iso(), deadline: iso(), ...over,
    });

    it('tasks: insert, idempotency key unique per owner, compare-and-set updates', async () => {
      const t1 = task({ idempotencyKey: 'k1' });
      assert.equal((await s.tasks.insert(t1)).created, true);
      const dup = await s.tasks.insert(task({ idempotencyKey: 'k1' }));
      assert.equal(dup.created, false);
      assert.equal(dup.task.id, t1.id);
      assert.equal((await s.tasks.byIdempotencyKey(userId, 'k1'))?.id, t1.id);
      const moved = await s.tasks.update(t1, { state: 'dispatched', agentId: 'ag_1', attempts: 1 });
      assert.equal(moved?.state, 'dispatched');
      assert.deepEqual(plain(await s.tasks.byId(t1.id)), plain(moved), 'what update returns is what the store holds');
      assert.equal(await s.tasks.update(t1, { state: 'running' }), undefined, 'a stale expected state changes nothing');
      assert.equal((await s.tasks.byId(t1.id))?.state, 'dispatched');
      // Dispatched reads the same after a requeue and a new dispatch: the agent and the attempt tell them apart.
      assert.equal(await s.tasks.update({ ...moved!, agentId: 'ag_other' }, { state: 'queued' }), undefined, 'dispatched to another agent: nothing changes');
      assert.equal(await s.tasks.update({ ...moved!, attempts: 2 }, { state: 'queued' }), undefined, 'another attempt: nothing changes');
      assert.equal(await s.tasks.update({ ...moved!, nodeId: 'node-x' }, { state: 'queued' }), undefined, 'through another node: nothing changes');
      assert.equal((await s.tasks.byId(t1.id))?.state, 'dispatched');
      const done = await s.tasks.update(moved!, {
        state: 'succeeded', result: { outputs: { a: [1, 'x'] }, artifacts: [], timings: { totalMs: 3, steps: [] } }, agentId: undefined,
      });
      assert.deepEqual(done?.result?.outputs, { a: [1, 'x'] });
      assert.equal(done?.agentId, undefined);
      assert.deepEqual(plain(await s.tasks.byId(t1.id)), plain(done), 'what update returns is what the store holds');
      assert.ok(!(await s.tasks.listUnfinished()).some((x) => x.id === t1.id));
      const t2 = task();
      await s.tasks.insert(t2);
      assert.ok((await s.tasks.listUnfinished()).some((x) => x.id === t2.id));
      assert.ok((await s.tasks.listUnfinished(userId)).some((x) => x.id === t2.id));
      assert.equal((await s.tasks.listUnfinished('someone-else')).length, 0);
      const open = await s.tasks.countUnfinished(userId);
      await s.tasks.insert(task());
      assert.equal(await s.tasks.countUnfinished(userId), open + 1);
      assert.deepEqual((await s.tasks.byId(t2.id))?.steps, t2.steps);
      // A task may be stored already dispatched (an agent was chosen before it was stored), with its agent and node, capped or not.
      for (const o of [undefined, { maxUnfinished: 1000 }]) {
        const born = task({ state: 'dispatched', agentId: 'ag_1', nodeId: 'node-b', attempts: 1 });
        assert.equal((await s.tasks.insert(born, o)).created, true);
        assert.deepEqual(plain(await s.tasks.byId(born.id)), plain(born), 'stored as given, node included');
        assert.equal((await s.tasks.update(born, { state: 'succeeded' }))?.state, 'succeeded', 'and moved on from there');
      }
    });

    it('tasks: insert with a cap counts the owner\'s unfinished tasks in the same step; at the cap nothing is stored; a replay still answers', async () => {
      const owner = `u_cap_${randomUUID()}`;
      const capped = (over: Partial<TaskRecord> = {}) => task({ ownerUserId: owner, ...over });
      const first = capped({ idempotencyKey: 'cap-k' });
      assert.equal((await s.tasks.insert(first, { maxUnfinished: 2 })).created, true);
      const second = capped();
      assert.equal((await s.tasks.insert(second, { maxUnfinished: 2 })).created, true);
      const third = capped();
      await assert.rejects(s.tasks.insert(third, { maxUnfinished: 2 }), (e: unknown) => e instanceof UnfinishedCapReached && e.open === 2);
      assert.equal(await s.tasks.byId(third.id), undefined, 'nothing stored past the cap');
      assert.equal(await s.tasks.countUnfinished(owner), 2);
      const replay = await s.tasks.insert(capped({ idempotencyKey: 'cap-k' }), { maxUnfinished: 2 });
      assert.deepEqual([replay.created, replay.task.id], [false, first.id], 'an idempotent replay answers even at the cap');
      // Finished tasks do not count; the cap belongs to the owner only.
      await s.tasks.update(second, { state: 'cancelled' });
      assert.equal((await s.tasks.insert(third, { maxUnfinished: 2 })).created, true, 'room again once one finished');
      assert.equal((await s.tasks.insert(task({ ownerUserId: `u_other_${randomUUID()}` }), { maxUnfinished: 1 })).created, true, 'another owner is not counted against it');
      assert.deepEqual(plain(await s.tasks.byId(third.id)), plain(third), 'stored as given, through the capped insert');
    });

    it('tasks: a relaxed move is stored; a move from running also applies to the task still dispatched to the same agent, never to another agent', async () => {
      const t = task();
      await s.tasks.insert(t);
      const dispatched = (await s.tasks.update(t, { state: 'dispatched', agentId: 'ag_1', attempts: 1 }))!;
      const running = await s.tasks.update(dispatched, { state: 'running' }, { relaxed: true });
      assert.equal((await s.tasks.byId(t.id))?.state, 'running', 'a relaxed write is read back like any other');
      assert.equal(running?.state, 'running');
      // As if the relaxed `running` had been lost: the task is still dispatched to ag_1.
      const t2 = task();
      await s.tasks.insert(t2);
      const d2 = (await s.tasks.update(t2, { state: 'dispatched', agentId: 'ag_1', attempts: 1 }))!;
      const believed: TaskRecord = { ...d2, state: 'running' };
      assert.equal((await s.tasks.update(believed, { state: 'succeeded' }))?.state, 'succeeded', 'the result of the agent that holds it is kept');
      assert.equal((await s.tasks.byId(t2.id))?.state, 'succeeded');
      // Requeued and dispatched to another agent meanwhile: a stale `running` of ag_1 changes nothing.
      const t3 = task();
      await s.tasks.insert(t3);
      const d3 = (await s.tasks.update(t3, { state: 'dispatched', agentId: 'ag_2', attempts: 2 }))!;
      assert.equal(await s.tasks.update({ ...d3, state: 'running', agentId: 'ag_1' }, { state: 'succeeded' }), undefined);
      assert.equal((await s.tasks.byId(t3.id))?.state, 'dispatched');
      // Nor does it apply to a task that ended.
      assert.equal(await s.tasks.update({ ...running!, state: 'running' }, { state: 'failed' }) !== undefined, true, 'still running: applies');
      assert.equal(await s.tasks.update({ ...running!, state: 'running' }, { state: 'failed' }), undefined, 'ended: changes nothing');
    });

    it('meta: set, overwrite, delete', async () => {
      await s.meta.set('k', 'v1');
      await s.meta.set('k', 'v2');
      assert.equal(await s.meta.get('k'), 'v2');
      await s.meta.delete('k');
      assert.equal(await s.meta.get('k'), undefined);
      await s.meta.set('once', 'v');
      assert.equal(await s.meta.deleteIf('once', 'other'), false, 'a different value is not consumed');
      const both = await Promise.all([s.meta.deleteIf('once', 'v'), s.meta.deleteIf('once', 'v')]);
      assert.deepEqual(both.sort(), [false, true], 'exactly one concurrent consume wins');
      const key = `cas-${randomUUID()}`;
      const created = await Promise.all([s.meta.compareAndSet(key, undefined, 'a'), s.meta.compareAndSet(key, undefined, 'b')]);
      assert.deepEqual(created.sort(), [false, true], 'exactly one concurrent create wins');
      const won = (await s.meta.get(key))!;
      assert.equal(await s.meta.compareAndSet(key, 'stale', 'c'), false, 'a stale expectation changes nothing');
      const moved = await Promise.all([s.meta.compareAndSet(key, won, 'x'), s.meta.compareAndSet(key, won, 'y')]);
      assert.deepEqual(moved.sort(), [false, true], 'exactly one concurrent update wins');
    });
  });
}
