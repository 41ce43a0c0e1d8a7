/** The SQLite adapter runs the durable-store contract, in memory and on a file that is reopened. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { storeContract } from './contract.ts';

storeContract('sqlite (memory)', async () => openSqliteStore(':memory:'));

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
