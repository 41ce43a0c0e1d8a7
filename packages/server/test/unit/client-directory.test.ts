/** The per-node API-client cache: reads the store at most once per TTL, forgets on revocation at once, stays bounded. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import { createClientDirectory, newApiClient } from '../../src/auth/clients.ts';
import type { ClientRepo } from '../../src/store/types.ts';

async function setup(o: { ttlMs?: number; max?: number } = {}) {
  const store = openSqliteStore(':memory:');
  await store.users.create({ id: 'u1', username: 'owner', passwordHash: '', role: 'admin', createdAt: new Date().toISOString() });
  let reads = 0;
  const counted: ClientRepo = { ...store.clients, byId: (id) => { reads++; return store.clients.byId(id); } };
  const hot = createMemoryHotStore();
  const dir = createClientDirectory({ clients: counted, revocations: hot.revocations, noticeMs: 60_000, ...o });
  const add = async () => {
    const { record } = newApiClient('u1', 'c', ['tasks']);
    await store.clients.create(record);
    return record.clientId;
  };
  return { store, hot, dir, add, reads: () => reads };
}

describe('client directory', () => {
  it('reads the store once per TTL', async () => {
    const s = await setup({ ttlMs: 100 });
    const id = await s.add();
    for (let i = 0; i < 5; i++) assert.equal((await s.dir.get(id))?.clientId, id);
    assert.equal(s.reads(), 1);
    await sleep(150);
    await s.dir.get(id);
    assert.equal(s.reads(), 2, 'read again once the entry is older than the TTL');
    assert.equal(await s.dir.get('pal_unknown'), undefined);
  });

  it('a revoked client is refused at once, cached or not, and by another node that had it cached', async () => {
    const s = await setup();
    const id = await s.add();
    const other = createClientDirectory({ clients: s.store.clients, revocations: s.hot.revocations, noticeMs: 60_000 });
    assert.ok(await s.dir.get(id));
    assert.ok(await other.get(id));
    assert.equal(await s.dir.revoke(id), true);
    assert.equal(await s.dir.get(id), undefined);
    assert.equal(await other.get(id), undefined, 'the revocation notice reached the other cache');
    assert.equal(await s.dir.revoke(id), false, 'nothing left to revoke');
  });

  it('holds at most `max` clients: the oldest is read again', async () => {
    const s = await setup({ max: 3 });
    const ids = [await s.add(), await s.add(), await s.add(), await s.add()];
    for (const id of ids) await s.dir.get(id);
    const before = s.reads();
    await s.dir.get(ids[3]!);
    assert.equal(s.reads(), before, 'the newest is cached');
    await s.dir.get(ids[0]!);
    assert.equal(s.reads(), before + 1, 'the oldest was evicted');
  });
});
