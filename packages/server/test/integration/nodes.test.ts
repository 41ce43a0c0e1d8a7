/**
 * Two nodes of one deployment (one public URL, PostgreSQL + Redis): an agent connected to node B is
 * seen as connected, on B, from node A; revoking its session on node A closes its connection on B.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { apiClient, clientToken, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';
import { SyntheticAgent } from '../support/agent.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../support/redis.ts';

const schema = `palisade_nodes_${process.pid}`;
const prefix = testPrefix();
const skip = (await postgresSkip('two-node tests')) || (await redisSkip('two-node tests'));

describe('two nodes sharing PostgreSQL and Redis', { skip }, () => {
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    const shared = { databaseUrl: POSTGRES_URL, databaseSchema: schema, redisUrl: REDIS_URL, redisPrefix: prefix };
    a = await startTestServer({ ...shared, nodeId: 'node-a' });
    await createAdmin(a);
    b = await startTestServer({ ...shared, nodeId: 'node-b', publicUrl: a.url });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    if (!skip) {
      await dropSchema(schema);
      await dropPrefix(prefix);
    }
  });

  const agentsOn = async (t: TestServer, token: string) => ((await (await t.fetch('/api/v1/agents', { token })).json()) as { agents: { id: string; connected: boolean; node?: string }[] }).agents;

  it('presence: an agent on node B is connected, on B, as node A sees it; and gone when it leaves', async () => {
    const client = await apiClient(a, 'presence');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [] });
    const seen = (await agentsOn(a, client.token)).find((x) => x.id === agent.agentId);
    assert.deepEqual({ connected: seen?.connected, node: seen?.node }, { connected: true, node: 'node-b' });
    const closed = agent.closed();
    agent.close();
    await closed;
    let still = true;
    for (let i = 0; i < 50 && still; i++) {
      still = (await agentsOn(a, client.token)).find((x) => x.id === agent.agentId)?.connected ?? false;
      if (still) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(still, false);
  });

  it("revoking a session on node A closes that session's WebSocket on node B within seconds", async () => {
    const cli = await deviceLogin(a, 'palisade-cli', 'openid offline_access tasks admin');
    const ext = await deviceLogin(a, 'palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: b.url, token: ext.access_token, ca: b.server.tls?.ca, grants: [] });
    const closed = agent.closed();
    const started = Date.now();
    const res = await a.fetch(`/api/v1/sessions/${String(decodeJwt(ext.access_token).gid)}`, { method: 'DELETE', token: cli.access_token });
    assert.equal(res.status, 204);
    const { code } = await closed;
    assert.equal(code, 4410);
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
    assert.equal((await b.fetch('/api/v1/me', { token: ext.access_token })).status, 401, 'refused on node B too');
  });

  it('an API client revoked on node A is refused on node B at once, though B had it cached', async () => {
    const client = await apiClient(a, 'revoked across nodes');
    const tokenB = await clientToken(b, client.clientId, client.clientSecret);
    assert.equal((await b.fetch('/api/v1/recipes', { token: tokenB })).status, 200, 'B has read (and cached) the client');
    assert.equal((await a.fetch(`/api/v1/clients/${client.clientId}`, { method: 'DELETE', token: client.adminToken })).status, 204);
    let status = 200;
    for (let i = 0; i < 40 && status === 200; i++) {
      status = (await b.fetch('/api/v1/recipes', { token: tokenB })).status;
      if (status === 200) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(status, 401, 'its tokens are refused on B');
    const res = await b.fetch('/oauth2/token', {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'tasks' }),
    });
    assert.equal(res.status, 401, 'and B issues it no new token');
  });
});
