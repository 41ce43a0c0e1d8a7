/**
 * Whether the PostgreSQL tests can run: they need the server on 127.0.0.1:5432 (database `test`).
 * In CI (`CI=true`) an unreachable server is an error; elsewhere the tests skip and say so loudly.
 */
import pg from 'pg';

export const POSTGRES_URL = process.env.PALISADE_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';

/** `false` when the tests may run, or the reason they are skipped. Throws in CI if PostgreSQL is down. */
export async function postgresSkip(what: string): Promise<false | string> {
  const c = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    return false;
  } catch {
    if (process.env.CI === 'true') throw new Error(`PostgreSQL is not reachable at ${POSTGRES_URL}, and CI=true requires the ${what} to run`);
    process.stderr.write(`\n\n!!! SKIPPED: ${what} — nothing answers at ${POSTGRES_URL} (they run in CI) !!!\n\n`);
    return `no PostgreSQL at ${POSTGRES_URL}`;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Drops a schema a test created. */
export async function dropSchema(schema: string, url = POSTGRES_URL): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}
