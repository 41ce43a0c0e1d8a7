/** The whole server on the PostgreSQL store: sign-in, client, task — the same path as on SQLite. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import type { TaskView } from '@palisade/protocol';
import { SyntheticAgent } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer } from '../support/harness.ts';

const base = process.env.PALISADE_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `palisade_srv_${process.pid}`;
const SITE = 'http://127.0.0.1:9';

async function reachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: base, connectionTimeoutMillis: 2000 });
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
if (!up && process.env.CI === 'true') throw new Error(`PostgreSQL is not reachable at ${base}, and CI=true requires these tests to run`);
if (!up) process.stderr.write(`\n\n!!! SKIPPED: server-on-PostgreSQL test — nothing answers at ${base} (it runs in CI) !!!\n\n`);

describe('server on PostgreSQL', { skip: up ? false : 'PostgreSQL unreachable' }, () => {
  after(async () => {
    const c = new pg.Client({ connectionString: base });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });
  it('signs in, creates a client and runs a task', async () => {
    const t = await startTestServer({ databaseUrl: base, databaseSchema: schema });
    try {
      assert.equal(t.server.store.kind, 'postgres');
      await createAdmin(t);
      const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
      const agent = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE] });
      const { token } = await apiClient(t);
      const res = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json', prefer: 'wait=5' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }] }) });
      assert.equal(((await res.json()) as TaskView).state, 'succeeded');
      agent.close();
    } finally {
      await t.close();
    }
  });
});
