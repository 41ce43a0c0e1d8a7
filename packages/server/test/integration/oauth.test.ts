/**
 * The authorization server as clients see it: JWT access tokens (RFC 9068, ES256, our audience),
 * CORS only for extension origins, wrong client secrets refused and logged, device codes pending
 * until approved and denied when the user says no, refresh tokens rotating.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { ADMIN, apiClient, createAdmin, deviceLogin, openSignIn, startTestServer, type TestServer } from '../support/harness.ts';

const EXT_ORIGIN = 'chrome-extension://abcdefghijklmnopabcdefghijklmnop';

describe('OAuth 2.1 authorization server', () => {
  let t: TestServer;
  let client: Awaited<ReturnType<typeof apiClient>>;

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    client = await apiClient(t);
  });
  after(async () => t?.close());

  const form = (body: Record<string, string>, headers: Record<string, string> = {}) => ({ method: 'POST', body: new URLSearchParams(body), headers });

  it('issues ES256 JWT access tokens for our issuer and audience, 15 minutes by default', () => {
    const header = decodeProtectedHeader(client.token);
    const claims = decodeJwt(client.token);
    assert.equal(header.alg, 'ES256');
    assert.equal(header.typ, 'at+jwt');
    assert.equal(claims.iss, t.server.issuer);
    assert.equal(claims.aud, 'urn:palisade:api');
    assert.equal(claims.client_id, client.clientId);
    assert.equal(claims.scope, 'tasks');
    assert.equal(Number(claims.exp) - Number(claims.iat), 900);
  });

  it('answers CORS for extension origins only', async () => {
    for (const [path, init] of [
      ['/oauth2/.well-known/openid-configuration', {}],
      ['/oauth2/device/auth', form({ client_id: 'palisade-extension', scope: 'openid offline_access agent' })],
    ] as const) {
      const ext = await t.fetch(path, { ...init, headers: { origin: EXT_ORIGIN } });
      assert.equal(ext.headers.get('access-control-allow-origin'), EXT_ORIGIN, path);
    }
    const evil = await t.fetch('/oauth2/device/auth', { ...form({ client_id: 'palisade-extension', scope: 'openid offline_access agent' }), headers: { origin: 'https://evil.example' } });
    assert.notEqual(evil.headers.get('access-control-allow-origin'), 'https://evil.example');
    assert.notEqual(evil.headers.get('access-control-allow-origin'), '*');
  });

  it('refuses a wrong client secret and emits a security event', async () => {
    const basic = Buffer.from(`${client.clientId}:pal_sk_not-the-secret`).toString('base64');
    const res = await t.fetch('/oauth2/token', form({ grant_type: 'client_credentials', scope: 'tasks' }, { authorization: `Basic ${basic}` }));
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'oauth.token' && e.status === 'Failure' && e.status_code === 'invalid_client'));
  });

  it('an API client cannot ask for scopes it was not given', async () => {
    const basic = Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64');
    const res = await t.fetch('/oauth2/token', form({ grant_type: 'client_credentials', scope: 'tasks admin' }, { authorization: `Basic ${basic}` }));
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope');
  });

  it('a revoked API client can no longer get or use tokens', async () => {
    const victim = await apiClient(t, 'to revoke');
    const basic = Buffer.from(`${victim.clientId}:${victim.clientSecret}`).toString('base64');
    // Issued once more first: the provider's Client for it is then cached (reuseApiClients).
    const before = await t.fetch('/oauth2/token', form({ grant_type: 'client_credentials', scope: 'tasks' }, { authorization: `Basic ${basic}` }));
    assert.equal(before.status, 200);
    const del = await t.fetch(`/api/v1/clients/${victim.clientId}`, { method: 'DELETE', token: victim.adminToken });
    assert.equal(del.status, 204);
    const use = await t.fetch('/api/v1/me', { token: victim.token });
    assert.equal(use.status, 401);
    const again = await t.fetch('/oauth2/token', form({ grant_type: 'client_credentials', scope: 'tasks' }, { authorization: `Basic ${basic}` }));
    assert.equal(again.status, 401);
  });

  it('device codes are pending until approved, and denied when the user says no', async () => {
    const start = await t.fetch('/oauth2/device/auth', form({ client_id: 'palisade-extension', scope: 'openid offline_access agent' }));
    const device = (await start.json()) as { device_code: string; verification_uri_complete: string };
    const poll = () => t.fetch('/oauth2/token', form({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code, client_id: 'palisade-extension' }));
    assert.equal(((await (await poll()).json()) as { error: string }).error, 'authorization_pending');
    // The user signs in and presses Deny.
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    const page = await b.request(login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    const deny = /<form method="post" action="([^"]+\/abort)">/.exec(page.body)![1]!;
    await b.request(deny, { method: 'POST', form: {} });
    const denied = (await (await poll()).json()) as { error: string };
    assert.equal(denied.error, 'access_denied');
  });

  it('a wrong password shows the sign-in form again and is logged, without saying which part was wrong', async () => {
    const start = await t.fetch('/oauth2/device/auth', form({ client_id: 'palisade-cli', scope: 'openid offline_access tasks admin' }));
    const device = (await start.json()) as { verification_uri_complete: string };
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    const wrongPassword = await b.request(login.action, { method: 'POST', form: { username: 'admin', password: 'nope-nope-nope' } });
    const noSuchUser = await b.request(login.action, { method: 'POST', form: { username: 'nobody', password: 'nope-nope-nope' } });
    // 200 with the form again (a launchWebAuthFlow window would close on an error status).
    assert.equal(wrongPassword.status, 200);
    assert.equal(noSuchUser.status, 200);
    assert.match(wrongPassword.body, /Wrong username or password\./);
    assert.equal(wrongPassword.body, noSuchUser.body, 'the same page whether or not the account exists');
    assert.ok(t.securityEvents.filter((e) => e.activity_name === 'password.login' && e.status === 'Failure').length >= 2);
  });

  it('password guessing is locked after 5 failures: even the right password is refused, and the lock is logged', async () => {
    const start = await t.fetch('/oauth2/device/auth', form({ client_id: 'palisade-cli', scope: 'openid offline_access tasks admin' }));
    const device = (await start.json()) as { verification_uri_complete: string };
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    const pages: string[] = [];
    for (let i = 0; i < 5; i++) pages.push((await b.request(login.action, { method: 'POST', form: { username: 'guessme', password: `wrong-${i}-password` } })).body);
    assert.ok(pages.every((p) => p.includes('Wrong username or password.')));
    const locked = await b.request(login.action, { method: 'POST', form: { username: 'guessme', password: 'anything-at-all' } });
    assert.match(locked.body, /Too many failed sign-ins/);
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'password.lock' && e.severity === 'high'));
  });

  it('refresh tokens rotate; the old one stops working', async () => {
    const tokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
    const refresh = (rt: string) => t.fetch('/oauth2/token', form({ grant_type: 'refresh_token', refresh_token: rt, client_id: 'palisade-extension' }));
    const first = await refresh(tokens.refresh_token!);
    const next = (await first.json()) as { refresh_token: string; access_token: string };
    assert.equal(first.status, 200);
    assert.notEqual(next.refresh_token, tokens.refresh_token);
    const replay = await refresh(tokens.refresh_token!);
    assert.equal(replay.status, 400);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_grant');
  });
});

describe('refresh token families', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
  });
  after(async () => t?.close());
  const refresh = (rt: string, clientId = 'palisade-extension') =>
    t.fetch('/oauth2/token', { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, client_id: clientId }) });

  it('reusing a rotated refresh token revokes the whole family and raises a high-severity event', async () => {
    const first = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
    const rotated = (await (await refresh(first.refresh_token!)).json()) as { refresh_token: string; access_token: string };
    const replay = await refresh(first.refresh_token!);
    assert.equal(replay.status, 400);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_grant');
    const afterReplay = await refresh(rotated.refresh_token);
    assert.equal(afterReplay.status, 400, 'the newest token of the family is revoked too');
    assert.equal(((await afterReplay.json()) as { error: string }).error, 'invalid_grant');
    const alarm = t.securityEvents.find((e) => e.activity_name === 'oauth.refresh.reuse');
    assert.ok(alarm, 'a reuse event');
    assert.equal(alarm.severity, 'high');
  });

  it('RFC 7662: a client introspects its own tokens only; another client learns nothing', async () => {
    const tokens = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
    const own = await t.fetch('/oauth2/token/introspection', { method: 'POST', body: new URLSearchParams({ token: tokens.refresh_token!, client_id: 'palisade-extension' }) });
    const mine = (await own.json()) as { active: boolean; client_id?: string; scope?: string };
    assert.equal(mine.active, true);
    assert.equal(mine.client_id, 'palisade-extension');
    const other = await apiClient(t, 'nosy');
    const basic = Buffer.from(`${other.clientId}:${other.clientSecret}`).toString('base64');
    const nosy = await t.fetch('/oauth2/token/introspection', { method: 'POST', headers: { authorization: `Basic ${basic}` }, body: new URLSearchParams({ token: tokens.refresh_token! }) });
    assert.deepEqual(await nosy.json(), { active: false });
    const cli = await t.fetch('/oauth2/token/introspection', { method: 'POST', body: new URLSearchParams({ token: tokens.refresh_token!, client_id: 'palisade-cli' }) });
    assert.deepEqual(await cli.json(), { active: false });
  });

  it('RFC 7009: a client revokes its refresh token, which then stops working', async () => {
    const tokens = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
    const res = await t.fetch('/oauth2/token/revocation', {
      method: 'POST', body: new URLSearchParams({ token: tokens.refresh_token!, token_type_hint: 'refresh_token', client_id: 'palisade-cli' }),
    });
    assert.equal(res.status, 200);
    const use = await refresh(tokens.refresh_token!, 'palisade-cli');
    assert.equal(use.status, 400);
    assert.equal(((await use.json()) as { error: string }).error, 'invalid_grant');
  });
});

describe('token lifetimes', () => {
  it('refresh tokens last 30 days by default, and the lifetime is configurable (RFC 7662 says when one ends)', async () => {
    for (const [options, expected] of [[{}, 30 * 24 * 3600], [{ refreshTokenTtl: 3600 }, 3600]] as const) {
      const t = await startTestServer(options);
      try {
        await createAdmin(t);
        const tokens = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks');
        const res = await t.fetch('/oauth2/token/introspection', { method: 'POST', body: new URLSearchParams({ token: tokens.refresh_token!, client_id: 'palisade-cli' }) });
        const r = (await res.json()) as { active: boolean; iat?: number; exp?: number };
        assert.equal(r.active, true);
        assert.equal(r.exp! - r.iat!, expected, JSON.stringify(options));
      } finally {
        await t.close();
      }
    }
  });

  it('the access-token lifetime is configurable', async () => {
    const t = await startTestServer({ accessTokenTtl: 300 });
    try {
      await createAdmin(t);
      const { token } = await apiClient(t);
      const claims = decodeJwt(token);
      assert.equal(Number(claims.exp) - Number(claims.iat), 300);
    } finally {
      await t.close();
    }
  });
});

describe('admin setup page', () => {
  it('enforces the password and username rules, creates one admin, and the link works once', async () => {
    const t = await startTestServer();
    try {
      const token = new URL(t.server.setupUrl!).searchParams.get('token')!;
      const post = (form: Record<string, string>) => t.fetch('/setup', { method: 'POST', body: new URLSearchParams(form), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      const short = await post({ token, username: 'admin', password: 'seven77' });
      assert.equal(short.status, 400);
      assert.match(await short.text(), /at least 8 characters/);
      const long = await post({ token, username: 'admin', password: 'x'.repeat(129) });
      assert.equal(long.status, 400);
      assert.match(await long.text(), /at most 128 characters/);
      const badName = await post({ token, username: 'a b', password: 'long enough pass' });
      assert.equal(badName.status, 400);
      assert.equal(await t.server.store.users.count(), 0, 'nothing created by refused submissions');
      const wrongToken = await post({ token: 'not-the-token', username: 'admin', password: 'long enough pass' });
      assert.equal(wrongToken.status, 403);
      assert.equal((await post({ token, username: 'admin', password: 'long enough pass' })).status, 201);
      assert.equal((await post({ token, username: 'second', password: 'long enough pass' })).status, 403, 'the link works once');
      assert.equal(await t.server.store.users.count(), 1);
      assert.equal((await t.fetch(`/setup?token=${token}`)).status, 404);
    } finally {
      await t.close();
    }
  });
});
