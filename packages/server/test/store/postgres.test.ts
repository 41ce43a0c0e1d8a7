/**
 * The PostgreSQL adapter runs the durable-store contract against the real server on 127.0.0.1:5432
 * (database `test`), in a schema of its own that is dropped afterwards. In CI (`CI=true`) it must
 * run; elsewhere, if PostgreSQL is unreachable, it is skipped with a loud notice.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { openPostgresStore } from '../../src/store/postgres.ts';
import { storeContract } from './contract.ts';

const url = process.env.PALISADE_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `palisade_test_${process.pid}`;

async function reachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

const up = await reachable();
if (!up && process.env.CI === 'true') throw new Error(`PostgreSQL is not reachable at ${url}, and CI=true requires the PostgreSQL tests to run`);
if (!up) {
  process.stderr.write(`\n\n!!! SKIPPED: PostgreSQL store tests — nothing answers at ${url} (they run in CI) !!!\n\n`);
  describe('durable store contract: postgres', () => it('skipped: PostgreSQL unreachable', { skip: `no PostgreSQL at ${url}` }, () => undefined));
} else {
  after(async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });
  storeContract('postgres', () => openPostgresStore({ connectionString: url, schema }));

  describe('postgres migrations', () => {
    it('nodes starting together migrate once', async () => {
      const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore({ connectionString: url, schema })));
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      const { rows } = await c.query(`SELECT count(*)::int AS n FROM ${schema}.palisade_migrations`);
      await c.end();
      assert.equal(rows[0].n, 1);
      await Promise.all(stores.map((s) => s.close()));
    });
  });
}
