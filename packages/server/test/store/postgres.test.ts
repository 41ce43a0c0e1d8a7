/**
 * The PostgreSQL adapter runs the durable-store contract against the real server on 127.0.0.1:5432
 * (database `test`), in a schema of its own that is dropped afterwards. In CI (`CI=true`) it must
 * run; elsewhere, if PostgreSQL is unreachable, it is skipped with a loud notice.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { MAX_NAMED_STATEMENTS, openPostgresStore, preparedStatements, statementNamer } from '../../src/store/postgres.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import { storeContract } from './contract.ts';
import { oidcContract } from './oidc-contract.ts';

const schema = `palisade_test_${process.pid}`;

// Needs no server: runs everywhere.
describe('prepared statement names', () => {
  it('one name per text up to the cap, unnamed past it; a forgotten text gets a new name', () => {
    const names = statementNamer(MAX_NAMED_STATEMENTS);
    const given = new Set<string>();
    for (let i = 0; i < MAX_NAMED_STATEMENTS; i++) given.add(names.name(`SELECT ${i}`)!);
    assert.equal(given.size, MAX_NAMED_STATEMENTS, 'a distinct name for each text');
    assert.equal(names.name('SELECT 0'), names.name('SELECT 0'), 'the same text, the same name');
    assert.equal(names.name(`SELECT ${MAX_NAMED_STATEMENTS}`), undefined, 'past the cap: unnamed');
    assert.equal(names.size, MAX_NAMED_STATEMENTS, 'the map does not grow past the cap');
    const old = names.name('SELECT 1');
    names.forget('SELECT 1');
    const renamed = names.name('SELECT 1');
    assert.ok(renamed !== undefined && renamed !== old && !given.has(renamed), 'a stale text is prepared again under a name never used');
    assert.equal(names.name(`SELECT ${MAX_NAMED_STATEMENTS + 1}`), undefined, 'the freed place was taken again');
  });
});
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

  describe('postgres prepared statements', () => {
    const planSchema = `${schema}_plan`;
    after(() => dropSchema(planSchema));

    // A statement prepared on a connection keeps its plan; another node migrating a table under it
    // makes PostgreSQL refuse it ("cached plan must not change result type") — only a prepared
    // statement fails so: the store's count of statements prepared again shows it happened.
    it('a table changed by another node\'s migration is read again, not refused', async () => {
      const s = await openPostgresStore({ connectionString: POSTGRES_URL, schema: planSchema, maxConnections: 1 });
      const c = new pg.Client({ connectionString: POSTGRES_URL });
      await c.connect();
      try {
        const user = { id: 'u_plan', username: 'plan', passwordHash: 'x', role: 'user' as const, createdAt: new Date().toISOString() };
        await s.users.create(user);
        assert.equal((await s.users.byId(user.id))?.username, 'plan');
        const before = preparedStatements().preparedAgain;
        await c.query(`ALTER TABLE ${planSchema}.users ADD COLUMN added_later TEXT`);
        assert.equal((await s.users.byId(user.id))?.username, 'plan', 'read after the table changed');
        assert.equal(preparedStatements().preparedAgain, before + 1, 'PostgreSQL refused the prepared plan, and it was prepared again');
        assert.equal((await s.users.byId(user.id))?.username, 'plan', 'and again, under its new name');
        assert.equal(preparedStatements().preparedAgain, before + 1, 'once');
        // With prepared statements off, the same change never troubles it.
        const unprepared = await openPostgresStore({ connectionString: POSTGRES_URL, schema: planSchema, maxConnections: 1, preparedStatements: false });
        assert.equal((await unprepared.users.byId(user.id))?.username, 'plan');
        await c.query(`ALTER TABLE ${planSchema}.users DROP COLUMN added_later`);
        assert.equal((await unprepared.users.byId(user.id))?.username, 'plan');
        await unprepared.close();
      } finally {
        await c.end();
        await s.close();
      }
    });

    it('warns at open when the server runs without autovacuum, and only then', async () => {
      const c = new pg.Client({ connectionString: POSTGRES_URL });
      await c.connect();
      const on = (await c.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0]!.autovacuum;
      await c.end();
      const warnings: string[] = [];
      const s = await openPostgresStore({ connectionString: POSTGRES_URL, schema: planSchema, onWarning: (m) => warnings.push(m) });
      await s.close();
      if (on === 'off') assert.match(warnings.join('\n'), /autovacuum = off/);
      else assert.deepEqual(warnings, []);
    });

    it('through a prepared statement, an error other than a stale plan reaches the caller unchanged', async () => {
      const s = await openPostgresStore({ connectionString: POSTGRES_URL, schema: planSchema, maxConnections: 1 });
      try {
        const user = { id: 'u_dup', username: 'dup', passwordHash: 'x', role: 'user' as const, createdAt: new Date().toISOString() };
        await s.users.create(user);
        await assert.rejects(s.users.create(user), (e: { code?: string }) => e.code === '23505', 'a unique violation is the caller\'s to see');
      } finally {
        await s.close();
      }
    });
  });
}
