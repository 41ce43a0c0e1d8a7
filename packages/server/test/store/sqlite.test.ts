/** The SQLite adapter runs the durable-store contract, in memory and on a file that is reopened. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { storeContract } from './contract.ts';
import { oidcContract } from './oidc-contract.ts';

storeContract('sqlite (memory)', async () => openSqliteStore(':memory:'));
oidcContract('sqlite', async () => openSqliteStore(':memory:'));

describe('sqlite on disk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-sqlite-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  it('keeps what was written across a reopen, and migrates once', async () => {
    const path = join(dir, 'p.db');
    const a = openSqliteStore(path);
    await a.meta.set('survives', 'yes');
    await a.close();
    const b = openSqliteStore(path);
    assert.equal(await b.meta.get('survives'), 'yes');
    await b.close();
  });
});

describe('sqlite checkpoints', () => {
  it('run on their own thread: the WAL is folded into the database without a write doing it', async () => {
    const { statSync } = await import('node:fs');
    const dir = mkdtempSync(join(tmpdir(), 'palisade-ckpt-'));
    try {
      const path = join(dir, 'c.db');
      const s = openSqliteStore(path);
      for (let i = 0; i < 2000; i++) await s.meta.set(`k${i}`, 'x'.repeat(200));
      const walBefore = statSync(`${path}-wal`).size;
      assert.ok(walBefore > 0);
      // Within a few intervals the checkpoint thread copies the log into the database file.
      const dbBefore = statSync(path).size;
      let grown = false;
      for (let i = 0; i < 50 && !grown; i++) {
        await new Promise((r) => setTimeout(r, 100));
        grown = statSync(path).size > dbBefore;
      }
      assert.ok(grown, 'the database file received the checkpointed pages');
      await s.close();
      assert.equal(statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0, 0, 'closing truncates the log');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
