/**
 * Nothing acknowledged is lost on restart (embedded store): accounts, API clients, refresh tokens,
 * access tokens and queued tasks survive a stop and start on the same data folder.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskView } from '@palisade/protocol';
import { SyntheticAgent } from '../support/agent.ts';
import { apiClient, clientToken, createAdmin, deviceLogin, startTestServer } from '../support/harness.ts';

const SITE = 'http://127.0.0.1:9';

describe('restart', () => {
  it('keeps users, clients, tokens and queued tasks', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'palisade-restart-'));
    try {
      let t = await startTestServer({ dataDir });
      await createAdmin(t);
      const agentTokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
      const client = await apiClient(t);
      const res = await t.fetch('/api/v1/tasks', {
        method: 'POST', token: client.token, headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }], waitForAgent: true }),
      });
      const queued = (await res.json()) as TaskView;
      assert.equal(queued.state, 'queued');
      // A copy of the database holds no usable refresh token: it is stored under its hash.
      const { DatabaseSync } = await import('node:sqlite');
      const db = new DatabaseSync(join(dataDir, 'palisade.db'), { readOnly: true });
      const rows = db.prepare("SELECT id, payload FROM oidc WHERE model = 'RefreshToken'").all() as { id: string; payload: string }[];
      db.close();
      assert.ok(rows.length > 0);
      for (const r of rows) {
        assert.match(r.id, /^sha256:/);
        assert.ok(!r.payload.includes(agentTokens.refresh_token!) && r.id !== agentTokens.refresh_token);
      }
      const caBefore = t.server.tls?.ca;
      const port = Number(new URL(t.url).port);
      await t.close();

      t = await startTestServer({ dataDir, port });
      try {
        assert.equal(t.server.setupUrl, undefined, 'no setup link once an admin exists');
        assert.equal(t.server.tls?.ca, caBefore, 'the development CA is reused');
        const me = await t.fetch('/api/v1/me', { token: client.token });
        assert.equal(me.status, 200, 'an access token issued before the restart still verifies');
        const refreshed = await t.fetch('/oauth2/token', {
          method: 'POST',
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: agentTokens.refresh_token!, client_id: 'palisade-extension' }),
        });
        const fresh = (await refreshed.json()) as { access_token: string; refresh_token: string };
        assert.equal(refreshed.status, 200, JSON.stringify(fresh));
        assert.notEqual(fresh.refresh_token, agentTokens.refresh_token, 'refresh tokens rotate');
        const token = await clientToken(t, client.clientId, client.clientSecret);
        const before = (await (await t.fetch(`/api/v1/tasks/${queued.id}`, { token })).json()) as TaskView;
        assert.equal(before.state, 'queued');
        const agent = await SyntheticAgent.connect({ url: t.url, token: fresh.access_token, ca: t.server.tls?.ca, grants: [SITE] });
        for (let i = 0; i < 100; i++) {
          const v = (await (await t.fetch(`/api/v1/tasks/${queued.id}`, { token })).json()) as TaskView;
          if (v.state === 'succeeded') break;
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.equal(((await (await t.fetch(`/api/v1/tasks/${queued.id}`, { token })).json()) as TaskView).state, 'succeeded');
        agent.close();
      } finally {
        await t.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
