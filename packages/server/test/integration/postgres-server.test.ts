/** The whole server on the PostgreSQL store: sign-in, client, task — the same path as on SQLite. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { TaskView } from '@palisade/protocol';
import { SyntheticAgent } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer } from '../support/harness.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';

const schema = `palisade_srv_${process.pid}`;
const SITE = 'http://127.0.0.1:9';
const skip = await postgresSkip('server-on-PostgreSQL test');

describe('server on PostgreSQL', { skip }, () => {
  after(() => dropSchema(schema));
  it('signs in, creates a client and runs a task', async () => {
    const t = await startTestServer({ databaseUrl: POSTGRES_URL, databaseSchema: schema });
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
