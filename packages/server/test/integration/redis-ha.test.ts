/**
 * Hot state on real Redis processes: a Sentinel failover loses no acknowledged session; a restart
 * of Palisade and of Redis (AOF) with PostgreSQL keeps every session and refresh token; an
 * unreachable Redis is refused clearly (503, retry hint, security event) and recovered from without
 * restarting Palisade.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import {
  ADMIN, apiClient, createAdmin, deviceLogin, openSignIn, pollDeviceToken, readForm, startTestServer,
  type Browser, type DeviceTokens, type TestServer,
} from '../support/harness.ts';
import { testPrefix } from '../support/redis.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from '../support/postgres.ts';
import {
  clientList, disconnectTrackedClients, redisServerSkip, sentinelPrimary, startRedis, startSentinels, stopAllRedis,
  trackRedisClients, waitFor, type RedisProc, type Sentinels,
} from '../support/redis-procs.ts';

const CLI = ['palisade-cli', 'openid offline_access tasks admin'] as const;
const EXT = ['palisade-extension', 'openid offline_access agent'] as const;
const SENTINEL_NAME = 'palisade-ha';

interface SessionJson { id: string }
interface Problem { code?: string; error?: string }

const skip = redisServerSkip('Redis high-availability tests');
after(stopAllRedis);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const refresh = (t: TestServer, tokens: DeviceTokens, clientId: string) => t.fetch('/oauth2/token', {
  method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: clientId }),
});
const sessionIds = async (t: TestServer, token: string): Promise<string[]> => {
  const res = await t.fetch('/api/v1/sessions', { token });
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { sessions: SessionJson[] }).sessions.map((s) => s.id).sort();
};
const gid = (tokens: DeviceTokens) => String(decodeJwt(tokens.access_token).gid);

/** Refreshes `tokens` and checks the refresh token rotated and the new access token works. */
async function assertRefreshes(t: TestServer, tokens: DeviceTokens, clientId: string, label: string): Promise<DeviceTokens> {
  const res = await refresh(t, tokens, clientId);
  const fresh = (await res.json()) as DeviceTokens;
  assert.equal(res.status, 200, `${label}: refresh failed: ${JSON.stringify(fresh)}`);
  assert.ok(fresh.refresh_token && fresh.refresh_token !== tokens.refresh_token, `${label}: the refresh token rotates`);
  assert.equal((await t.fetch('/api/v1/me', { token: fresh.access_token })).status, 200, `${label}: the refreshed access token works`);
  return fresh;
}

describe('Redis Sentinel failover', { skip }, () => {
  let primary: RedisProc;
  let replica: RedisProc;
  let sentinels: Sentinels;
  let t: TestServer | undefined;
  const prefix = testPrefix();

  before(async () => {
    // The server's ioredis clients are recorded so that `after` can end any it leaves open.
    trackRedisClients();
    primary = await startRedis();
    replica = await startRedis({ replicaOf: primary });
    sentinels = await startSentinels(3, primary, SENTINEL_NAME);
    t = await startTestServer({ redisSentinels: sentinels.addresses, redisSentinelName: SENTINEL_NAME, redisPrefix: prefix });
  });
  after(async () => {
    await t?.close();
    // Ends connections a close() left behind, so they cannot keep this process alive.
    disconnectTrackedClients();
    await sentinels?.stop();
    await replica?.stop('SIGKILL');
    await primary?.stop('SIGKILL');
  });

  it('the primary is killed; after the failover every acknowledged session, refresh token and rotation survives, and sign-ins work', { timeout: 45_000 }, async (ctx) => {
    const s = t!;
    assert.equal(s.server.hot.kind, 'redis');
    await createAdmin(s);
    const cli = await deviceLogin(s, ...CLI);
    const ext1 = await deviceLogin(s, ...EXT);
    const ext2old = await deviceLogin(s, ...EXT);
    // A rotation before the failover: the old refresh token is marked used on the primary.
    const ext2 = await assertRefreshes(s, ext2old, EXT[0], 'ext2 before the failover');
    // The extensions' access tokens are not used before the kill, so their first check after it
    // must find their sessions on the new primary (the CLI's is now remembered by this node).
    const before = await sessionIds(s, cli.access_token);
    assert.deepEqual(before, [gid(cli), gid(ext1), gid(ext2)].sort());

    // Redis replication is asynchronous, but with Sentinel the server acknowledges a session,
    // refresh token or rotation only once the replica has confirmed it (WAIT; hot/redis.ts
    // replicaWaits). So no fence here: the primary dies right after the last answer, and nothing
    // acknowledged may be missing. No write fell short of its replica.
    assert.deepEqual(s.securityEvents.filter((e) => e.activity_name === 'store.replication.lag'), []);

    const killedAt = performance.now();
    await primary.stop('SIGKILL');
    const failover = waitFor(async () => {
      const now = await sentinelPrimary(sentinels.ports[0]!, SENTINEL_NAME);
      return now?.port === replica.port ? performance.now() - killedAt : undefined;
    }, 20_000, 'a Sentinel to name the replica as the new primary', 50);
    failover.catch(() => undefined);

    // Until the service is back, every answer is a refusal: 503 PAL_ERR_UNAVAILABLE with a retry
    // hint (fail closed), never a 500 and never a success with missing data.
    const refusals: number[] = [];
    let downtimeMs: number | undefined;
    while (downtimeMs === undefined) {
      const sent = performance.now();
      const res = await s.fetch('/api/v1/sessions', { token: cli.access_token });
      const body = (await res.json()) as Problem & { sessions?: SessionJson[] };
      if (res.status === 200) {
        assert.deepEqual(body.sessions!.map((x) => x.id).sort(), before, 'the first answer after the failover lists every session');
        downtimeMs = performance.now() - killedAt;
        break;
      }
      assert.equal(res.status, 503, `a refusal during the failover: ${res.status} ${JSON.stringify(body)}`);
      assert.equal(body.code, 'PAL_ERR_UNAVAILABLE');
      assert.equal(res.headers.get('retry-after'), '1');
      refusals.push(performance.now() - sent);
      assert.ok(performance.now() - killedAt < 25_000, 'the service is back within 25 s of the kill');
      await sleep(100);
    }
    const failoverMs = await failover;
    const msg = `Sentinel failover: new primary named ${failoverMs.toFixed(0)} ms after the kill; service unavailable for ${downtimeMs.toFixed(0)} ms ` +
      `(${refusals.length} requests refused with 503, slowest refusal ${Math.max(0, ...refusals).toFixed(0)} ms)`;
    ctx.diagnostic(msg);
    console.log(msg);
    if (refusals.length > 0) assert.ok(s.securityEvents.some((e) => e.activity_name === 'store.unavailable' && e.severity === 'high'));

    // Every access token issued before works (the extensions' are checked against the new primary).
    for (const [label, tokens] of [['cli', cli], ['ext1', ext1], ['ext2', ext2]] as const) {
      assert.equal((await s.fetch('/api/v1/me', { token: tokens.access_token })).status, 200, `${label}: access token after the failover`);
    }
    // Every refresh token issued before can be refreshed, and rotates.
    await assertRefreshes(s, cli, CLI[0], 'cli');
    await assertRefreshes(s, ext1, EXT[0], 'ext1');
    await assertRefreshes(s, ext2, EXT[0], 'ext2');
    // The rotation made before the failover survived it: the old token is refused as reused.
    const replay = await refresh(s, ext2old, EXT[0]);
    assert.equal(replay.status, 400, 'a refresh token rotated before the failover stays used');
    assert.equal(((await replay.json()) as Problem).error, 'invalid_grant');
    // New sign-ins work.
    const fresh = await deviceLogin(s, ...EXT);
    assert.equal((await s.fetch('/api/v1/me', { token: fresh.access_token })).status, 200);
    assert.ok((await sessionIds(s, cli.access_token)).includes(gid(fresh)));
  });

  it('closing Palisade releases its Sentinel connections', async () => {
    const s = t!;
    t = undefined;
    const subscribed = async () => {
      let n = 0;
      for (const port of sentinels.ports) n += (await clientList(port)).filter((c) => c.get('sub') !== '0').length;
      return n;
    };
    // Palisade subscribes to +switch-master on the Sentinels (ioredis' failover detector); no one else does.
    assert.ok((await subscribed()) > 0, 'Palisade watches the Sentinels while it runs');
    await s.close();
    // Left open, these connections keep the process alive, and reconnect (and log errors) forever
    // once the Sentinels go away.
    await waitFor(async () => (await subscribed()) === 0, 1000, 'the Sentinel subscriptions to close').catch(() => undefined);
    assert.equal(await subscribed(), 0, 'Sentinel connections still open after close()');
  });
});

const pgSkip = skip || (await postgresSkip('Redis + PostgreSQL restart test'));

describe('restart with Redis (AOF) and PostgreSQL', { skip: pgSkip }, () => {
  const schema = `palisade_ha_${process.pid}`;
  after(() => dropSchema(schema));

  it('Palisade stops and Redis crashes; after both start again every session, access token and refresh token works', { timeout: 30_000 }, async () => {
    const redis = await startRedis({ appendonly: true });
    const dataDir = mkdtempSync(join(tmpdir(), 'palisade-ha-restart-'));
    const options = { dataDir, databaseUrl: POSTGRES_URL, databaseSchema: schema, redisUrl: redis.url, redisPrefix: testPrefix() };
    try {
      let t = await startTestServer(options);
      let cli: DeviceTokens, ext: DeviceTokens, client: Awaited<ReturnType<typeof apiClient>>, sessions: string[];
      try {
        assert.equal(t.server.store.kind, 'postgres');
        assert.equal(t.server.hot.kind, 'redis');
        await createAdmin(t);
        cli = await deviceLogin(t, ...CLI);
        ext = await deviceLogin(t, ...EXT);
        client = await apiClient(t, 'restart test');
        sessions = await sessionIds(t, cli.access_token);
        assert.equal(sessions.length, 3, 'the CLI, the extension and the sign-in apiClient made');
      } finally {
        await t.close();
      }
      // A crash, not a clean shutdown: with `appendfsync always` every acknowledged write is on disk.
      await redis.stop('SIGKILL');
      await redis.restart();

      t = await startTestServer({ ...options, port: Number(new URL(t.url).port) });
      try {
        assert.equal(t.server.setupUrl, undefined, 'the admin is still there');
        // A new node checks every person's token against its session in Redis on first use.
        for (const [label, token] of [['cli', cli.access_token], ['ext', ext.access_token], ['admin', client.adminToken], ['api client', client.token]] as const) {
          assert.equal((await t.fetch('/api/v1/me', { token })).status, 200, `${label}: access token after the restart`);
        }
        assert.deepEqual(await sessionIds(t, cli.access_token), sessions, 'the same sessions are listed');
        await assertRefreshes(t, cli, CLI[0], 'cli');
        await assertRefreshes(t, ext, EXT[0], 'ext');
      } finally {
        await t.close();
      }
    } finally {
      await redis.stop('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('Redis unreachable', { skip }, () => {
  let redis: RedisProc;
  let t: TestServer;
  let cli: DeviceTokens;
  let ext: DeviceTokens;
  let pending: { deviceCode: string; browser: Browser; login: { action: string; fields: Record<string, string> } };

  /** The security events a request raised. */
  const during = async (fn: () => Promise<Response>) => {
    const from = t.securityEvents.length;
    const started = performance.now();
    const res = await fn();
    const text = await res.text();
    return { res, text, ms: performance.now() - started, events: t.securityEvents.slice(from) };
  };
  const highUnavailable = (events: TestServer['securityEvents']) => events.some((e) => e.severity === 'high' && e.status_code === 'PAL_ERR_UNAVAILABLE');

  before(async () => {
    // AOF on, so the data survives the outage and recovery can be checked on the same sessions.
    redis = await startRedis({ appendonly: true });
    t = await startTestServer({ redisUrl: redis.url, redisPrefix: testPrefix() });
    await createAdmin(t);
    cli = await deviceLogin(t, ...CLI);
    ext = await deviceLogin(t, ...EXT);
    assert.equal((await t.fetch('/api/v1/me', { token: cli.access_token })).status, 200);
    // A sign-in opened before the outage, to be submitted during it.
    const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: CLI[0], scope: CLI[1] }) });
    const device = (await start.json()) as { device_code: string; verification_uri_complete: string };
    pending = { deviceCode: device.device_code, ...(await openSignIn(t, device.verification_uri_complete)) };
    await redis.stop('SIGKILL');
  });
  after(async () => {
    await t?.close();
    await redis?.stop('SIGKILL');
  });

  it('the API refuses with 503 PAL_ERR_UNAVAILABLE, a retry hint and a high-severity event, within bounded time', async (ctx) => {
    const sessions = await during(() => t.fetch('/api/v1/sessions', { token: cli.access_token }));
    // A token never seen by this node needs its session looked up: refused as unavailable, not as revoked.
    const unseen = await during(() => t.fetch('/api/v1/me', { token: ext.access_token }));
    for (const [label, r] of [['GET /api/v1/sessions', sessions], ['GET /api/v1/me (unchecked session)', unseen]] as const) {
      assert.equal(r.res.status, 503, `${label}: ${r.res.status} ${r.text}`);
      assert.equal((JSON.parse(r.text) as Problem).code, 'PAL_ERR_UNAVAILABLE', label);
      assert.equal(r.res.headers.get('retry-after'), '1', label);
      assert.ok(r.events.some((e) => e.activity_name === 'store.unavailable' && e.severity === 'high'), `${label}: store.unavailable event`);
      assert.ok(r.ms < 5000, `${label}: answered in ${r.ms.toFixed(0)} ms`);
      ctx.diagnostic(`${label}: 503 in ${r.ms.toFixed(0)} ms`);
    }
  });

  it('the OAuth endpoints refuse with 503, a retry hint and a high-severity event (not a bare 500)', async (ctx) => {
    const results = {
      'POST /oauth2/device/auth': await during(() => t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: CLI[0], scope: CLI[1] }) })),
      'POST /oauth2/token (refresh_token)': await during(() => refresh(t, ext, EXT[0])),
      'POST /oauth2/token (device_code)': await during(() => t.fetch('/oauth2/token', {
        method: 'POST', body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: pending.deviceCode, client_id: CLI[0] }),
      })),
    };
    for (const [label, r] of Object.entries(results)) ctx.diagnostic(`${label}: ${r.res.status} in ${r.ms.toFixed(0)} ms, retry-after ${r.res.headers.get('retry-after')}, ${r.text.slice(0, 120)}, events ${r.events.map((e) => `${e.activity_name}/${e.severity}`).join(',')}`);
    for (const [label, r] of Object.entries(results)) {
      // What holds today: nothing is let through, the failure is bounded and raises an alarm.
      assert.ok(r.res.status >= 500, `${label}: refused (${r.res.status})`);
      assert.ok(r.ms < 5000, `${label}: answered in ${r.ms.toFixed(0)} ms`);
      assert.ok(highUnavailable(r.events), `${label}: a high-severity event naming PAL_ERR_UNAVAILABLE`);
    }
    for (const [label, r] of Object.entries(results)) {
      // What a client needs to tell an outage from a bug: 503, the OAuth error for it, and when to retry.
      assert.equal(r.res.status, 503, `${label}: ${r.res.status} ${r.text}`);
      assert.equal((JSON.parse(r.text) as Problem).error, 'temporarily_unavailable', label);
      assert.ok(r.res.headers.get('retry-after'), `${label}: a retry hint`);
    }
  });

  it('a password sign-in is refused with 503 and a retry hint (not "sign-in expired")', async (ctx) => {
    const from = t.securityEvents.length;
    const started = performance.now();
    const page = await pending.browser.request(pending.login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    const ms = performance.now() - started;
    ctx.diagnostic(`POST ${new URL(page.url).pathname}: ${page.status} in ${ms.toFixed(0)} ms: ${/<title>([^<]*)/.exec(page.body)?.[1] ?? page.body.slice(0, 120)}`);
    assert.ok(page.status >= 400 && !page.body.includes('id="approve"'), 'nothing is let through');
    assert.ok(ms < 5000, `answered in ${ms.toFixed(0)} ms`);
    assert.equal(page.status, 503, `the person is told to retry, not that the sign-in expired: ${page.status} ${page.body.slice(0, 300)}`);
    assert.ok(highUnavailable(t.securityEvents.slice(from)), 'a high-severity event naming PAL_ERR_UNAVAILABLE');
  });

  it('recovers within seconds when Redis returns, without restarting Palisade; nothing from before is lost', { timeout: 30_000 }, async (ctx) => {
    const restarting = performance.now();
    await redis.restart();
    const answering = performance.now();
    await waitFor(async () => (await t.fetch('/api/v1/sessions', { token: cli.access_token })).status === 200, 5000, 'the API to answer again', 100);
    const back = performance.now();
    ctx.diagnostic(`Redis restarted (AOF loaded) in ${(answering - restarting).toFixed(0)} ms; service back ${(back - answering).toFixed(0)} ms after it answered PING`);
    assert.equal((await t.fetch('/api/v1/me', { token: ext.access_token })).status, 200, 'the session checked during the outage is valid');
    await assertRefreshes(t, ext, EXT[0], 'ext');
    // The sign-in that was refused during the outage can simply be submitted again.
    let page = await pending.browser.request(pending.login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    assert.ok(page.body.includes('id="approve"'), `the consent page after retrying the sign-in: ${page.status} ${page.body.slice(0, 300)}`);
    page = await pending.browser.request(readForm(page.body).action, { method: 'POST', form: {} });
    assert.ok(page.body.includes('device-success'));
    const tokens = await pollDeviceToken(t, CLI[0], pending.deviceCode);
    assert.equal((await t.fetch('/api/v1/me', { token: tokens.access_token })).status, 200);
    const fresh = await deviceLogin(t, ...EXT);
    assert.equal((await t.fetch('/api/v1/me', { token: fresh.access_token })).status, 200, 'a new sign-in works');
  });
});
