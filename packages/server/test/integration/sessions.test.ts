/**
 * Sessions: a person lists and revokes their sign-ins; a revoked session's access tokens, refresh
 * tokens and open WebSockets stop working at once. Runs on the embedded hot state and on Redis.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { apiClient, createAdmin, deviceLogin, startTestServer, type DeviceTokens, type TestServer } from '../support/harness.ts';
import { SyntheticAgent } from '../support/agent.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../support/redis.ts';
import type { CreateOptions } from '../../src/app.ts';

const CLI = ['palisade-cli', 'openid offline_access tasks admin'] as const;
const EXT = ['palisade-extension', 'openid offline_access agent'] as const;

interface SessionJson { id: string; clientId: string; clientName: string; createdAt: string; current: boolean }

function sessionSuite(name: string, options: () => CreateOptions, skip: false | string = false): void {
  describe(`sessions (${name})`, { skip }, () => {
    let t: TestServer;
    let cli: DeviceTokens;
    before(async () => {
      t = await startTestServer(options());
      await createAdmin(t);
      cli = await deviceLogin(t, ...CLI);
    });
    after(async () => t?.close());

    const list = async (token: string) => {
      const res = await t.fetch('/api/v1/sessions', { token });
      assert.equal(res.status, 200);
      return ((await res.json()) as { sessions: SessionJson[] }).sessions;
    };
    const refresh = (tokens: DeviceTokens, clientId: string) => t.fetch('/oauth2/token', {
      method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: clientId }),
    });

    it('every access token names its session, and the person sees each sign-in once, the current one marked', async () => {
      const ext = await deviceLogin(t, ...EXT);
      const sessions = await list(cli.access_token);
      const gidCli = String(decodeJwt(cli.access_token).gid);
      const gidExt = String(decodeJwt(ext.access_token).gid);
      assert.notEqual(gidCli, gidExt);
      const mine = sessions.filter((s) => s.id === gidCli || s.id === gidExt);
      assert.equal(mine.length, 2);
      assert.deepEqual(mine.find((s) => s.id === gidCli)?.current, true);
      assert.equal(mine.find((s) => s.id === gidExt)?.clientName, 'Palisade browser extension');
      assert.ok(!Number.isNaN(Date.parse(mine[0]!.createdAt)));
    });

    it('revoking a session closes its WebSockets with 4410 and refuses its access and refresh tokens at once', async () => {
      const ext = await deviceLogin(t, ...EXT);
      const gid = String(decodeJwt(ext.access_token).gid);
      const agent = await SyntheticAgent.connect({ url: t.url, token: ext.access_token, ca: t.server.tls?.ca, grants: [] });
      const closed = agent.closed();
      const started = Date.now();
      const res = await t.fetch(`/api/v1/sessions/${gid}`, { method: 'DELETE', token: cli.access_token });
      assert.equal(res.status, 204);
      const { code, reason } = await closed;
      assert.equal(code, 4410);
      assert.match(reason, /revoked/);
      assert.ok(Date.now() - started < 2000, 'closed within seconds');
      const me = await t.fetch('/api/v1/me', { token: ext.access_token });
      assert.equal(me.status, 401);
      assert.equal(((await me.json()) as { code: string }).code, 'PAL_ERR_SESSION_REVOKED');
      const r = await refresh(ext, EXT[0]);
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as { error: string }).error, 'invalid_grant');
      assert.ok(!(await list(cli.access_token)).some((s) => s.id === gid), 'no longer listed');
      assert.ok(t.securityEvents.some((e) => e.activity_name === 'session.revoke'));
      const again = await t.fetch(`/api/v1/sessions/${gid}`, { method: 'DELETE', token: cli.access_token });
      assert.equal(again.status, 404, 'a revoked session is gone');
    });

    it("refuses to revoke a session that is not the caller's, and API clients cannot manage sessions", async () => {
      const res = await t.fetch('/api/v1/sessions/not-a-session', { method: 'DELETE', token: cli.access_token });
      assert.equal(res.status, 404);
      const client = await apiClient(t, 'sessions test');
      const forbidden = await t.fetch('/api/v1/sessions', { token: client.token });
      assert.equal(forbidden.status, 403);
      const adminGid = String(decodeJwt(client.adminToken).gid);
      const viaClient = await t.fetch(`/api/v1/sessions/${adminGid}`, { method: 'DELETE', token: client.token });
      assert.equal(viaClient.status, 403);
      assert.equal((await t.fetch('/api/v1/me', { token: client.adminToken })).status, 200, 'the session is untouched');
    });

    it("an agent-only token (the extension's) can neither list nor end the person's sessions", async () => {
      const ext = await deviceLogin(t, ...EXT);
      for (const [method, path] of [['GET', '/api/v1/sessions'], ['DELETE', '/api/v1/sessions'], ['DELETE', `/api/v1/sessions/${String(decodeJwt(cli.access_token).gid)}`]] as const) {
        const res = await t.fetch(path, { method, token: ext.access_token });
        assert.equal(res.status, 403, `${method} ${path}`);
        assert.match(((await res.json()) as { detail: string }).detail, /"tasks" scope/);
      }
      assert.equal((await t.fetch('/api/v1/me', { token: cli.access_token })).status, 200, 'the CLI session is untouched');
    });

    it('revoke all ends every session of the person, the current one too', async () => {
      const other = await deviceLogin(t, ...CLI);
      const res = await t.fetch('/api/v1/sessions', { method: 'DELETE', token: cli.access_token });
      assert.equal(res.status, 200);
      assert.ok(((await res.json()) as { revoked: number }).revoked >= 2);
      for (const tok of [cli, other]) {
        assert.equal((await t.fetch('/api/v1/me', { token: tok.access_token })).status, 401);
        assert.equal((await refresh(tok, CLI[0])).status, 400);
      }
      cli = await deviceLogin(t, ...CLI);
      assert.deepEqual((await list(cli.access_token)).map((s) => s.current), [true], 'only the new sign-in is left');
    });
  });
}

sessionSuite('embedded', () => ({}));

const redisSkipped = await redisSkip('session tests on Redis');
const prefix = testPrefix();
if (!redisSkipped) after(() => dropPrefix(prefix));
sessionSuite('Redis', () => ({ redisUrl: REDIS_URL, redisPrefix: prefix }), redisSkipped);

describe('sessions across a restart', () => {
  it('a session revoked before a restart stays revoked after it (its tokens are refused on first sight)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'palisade-sessions-'));
    try {
      let t = await startTestServer({ dataDir });
      await createAdmin(t);
      const keep = await deviceLogin(t, ...CLI);
      const gone = await deviceLogin(t, ...CLI);
      const gid = String(decodeJwt(gone.access_token).gid);
      assert.equal((await t.fetch(`/api/v1/sessions/${gid}`, { method: 'DELETE', token: keep.access_token })).status, 204);
      const port = Number(new URL(t.url).port);
      await t.close();
      t = await startTestServer({ dataDir, port });
      try {
        assert.equal((await t.fetch('/api/v1/me', { token: keep.access_token })).status, 200);
        const me = await t.fetch('/api/v1/me', { token: gone.access_token });
        assert.equal(me.status, 401);
        assert.equal(((await me.json()) as { code: string }).code, 'PAL_ERR_SESSION_REVOKED');
      } finally {
        await t.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
