/**
 * The PostgreSQL adapter runs the durable-store contract against the real server on 127.0.0.1:5432
 * (database `test`), in a schema of its own that is dropped afterwards. In CI (`CI=true`) it must
 * run; elsewhere, if PostgreSQL is unreachable, it is skipped with a loud notice.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { openPostgresStore } from '../../src/store/postgres.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import { storeContract } from './contract.ts';
import { oidcContract } from './oidc-contract.ts';

const schema = `palisade_test_${process.pid}`;
const skip = await postgresSkip('PostgreSQL store tests');

if (skip) {
  describe('durable store contract: postgres', () => it('skipped: PostgreSQL unreachable', { skip }, () => undefined));
} else {
  after(() => dropSchema(schema));
  storeContract('postgres', () => openPostgresStore({ connectionString: POSTGRES_URL, schema }));
  oidcContract('postgres', () => openPostgresStore({ connectionString: POSTGRES_URL, schema }));

  describe('postgres migrations', () => {
    it('nodes starting together migrate once', async () => {
      const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore({ connectionString: POSTGRES_URL, schema })));
      const c = new pg.Client({ connectionString: POSTGRES_URL });
      await c.connect();
      const { rows } = await c.query(`SELECT count(*)::int AS n, count(DISTINCT version)::int AS d, max(version)::int AS m FROM ${schema}.palisade_migrations`);
      await c.end();
      assert.ok(rows[0].n >= 2);
      assert.equal(rows[0].d, rows[0].n, 'no migration applied twice');
      assert.equal(rows[0].m, rows[0].n, 'every migration applied, in order');
      await Promise.all(stores.map((s) => s.close()));
    });
  });
}
