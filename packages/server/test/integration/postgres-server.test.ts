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

describe('PostgreSQL unreachable', { skip }, () => {
  const schema2 = `palisade_down_${process.pid}`;
  after(() => dropSchema(schema2));

  it('requests are refused with PAL_ERR_UNAVAILABLE (503) and a security event, and work again when it returns', async () => {
    const { createServer, connect } = await import('node:net');
    const target = new URL(POSTGRES_URL);
    // A TCP proxy in front of PostgreSQL that the test can cut and restore.
    const sockets = new Set<import('node:net').Socket>();
    const proxy = createServer((client) => {
      const upstream = connect(Number(target.port || 5432), target.hostname);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => { client.destroy(); upstream.destroy(); };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    const listen = (port: number) => new Promise<void>((r) => proxy.listen(port, '127.0.0.1', () => r()));
    await listen(0);
    const port = (proxy.address() as import('node:net').AddressInfo).port;
    const viaProxy = new URL(POSTGRES_URL);
    viaProxy.port = String(port);
    const t = await startTestServer({ databaseUrl: viaProxy.href, databaseSchema: schema2 });
    try {
      await createAdmin(t);
      const { token } = await apiClient(t);
      assert.equal((await t.fetch('/api/v1/recipes', { token })).status, 200);

      const closed = new Promise<void>((r) => proxy.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
      const down = await t.fetch('/api/v1/agents', { token });
      assert.equal(down.status, 503);
      assert.equal(down.headers.get('retry-after'), '1');
      assert.equal(((await down.json()) as { code: string }).code, 'PAL_ERR_UNAVAILABLE');
      assert.ok(t.securityEvents.some((e) => e.status_code === 'PAL_ERR_UNAVAILABLE' && e.severity === 'high'));
      // (The API client itself may be served from the node's short-lived client cache; a task that
      // must be stored cannot be.)
      const refused = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }], waitForAgent: true }) });
      assert.equal(refused.status, 503, 'nothing is let through while the store is down');

      await listen(port);
      let back = 0;
      for (let i = 0; i < 50 && back !== 200; i++) {
        back = (await t.fetch('/api/v1/agents', { token })).status;
        if (back !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(back, 200, 'service resumes when the database returns');
    } finally {
      await t.close();
      proxy.close();
      for (const s of sockets) s.destroy();
    }
  });
});
