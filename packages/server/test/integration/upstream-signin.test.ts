/**
 * Signing in to Palisade with Google or GitHub, end to end over real HTTP: a device sign-in whose
 * person chooses "Sign in with Google" on Palisade's page, is sent to a second, local OpenID
 * provider standing in for Google (or a GitHub-shaped server), comes back, approves, and the device
 * gets tokens for a new `user` account linked to that identity — the same one next time.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, Browser, createAdmin, freePort, pollDeviceToken, readForm, startTestServer, type TestServer } from '../support/harness.ts';
import { followToCallback, startGitHubStandIn, startOidcStandIn, type GitHubStandIn, type OidcStandIn } from '../support/upstream-fixtures.ts';

describe('upstream sign-in through Palisade', () => {
  let t: TestServer;
  let google: OidcStandIn;
  let github: GitHubStandIn;
  let base: string;

  before(async () => {
    const port = await freePort();
    base = `https://127.0.0.1:${port}`;
    google = await startOidcStandIn({ redirectUris: [`${base}/interaction/callback/google`] });
    github = await startGitHubStandIn();
    t = await startTestServer({
      port,
      upstreamInsecureHttp: true,
      upstream: [
        { id: 'google', kind: 'oidc', name: 'Google', issuer: google.issuer, clientId: google.clientId, clientSecret: google.clientSecret, allowedEmailDomains: ['example.com'] },
        { id: 'github', kind: 'github', name: 'GitHub', clientId: github.clientId, clientSecret: github.clientSecret, ...github.endpoints },
      ],
    });
    await createAdmin(t);
  });
  after(async () => {
    await t?.close();
    await google?.close();
    await github?.close();
  });

  /** Starts a device sign-in and opens Palisade's sign-in page for it. */
  async function signInPage(): Promise<{ b: Browser; page: { body: string }; deviceCode: string }> {
    const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid offline_access tasks' }) });
    const device = (await start.json()) as { device_code: string; verification_uri_complete: string };
    const b = new Browser(t);
    let page = await b.request(device.verification_uri_complete);
    if (page.body.includes('<title>Submitting Callback</title>')) {
      const auto = readForm(page.body);
      page = await b.request(auto.action, { method: 'POST', form: auto.fields });
    }
    const confirm = readForm(page.body, 'op.deviceConfirmForm');
    page = await b.request(confirm.action, { method: 'POST', form: confirm.fields });
    return { b, page, deviceCode: device.device_code };
  }

  /** Clicks "Sign in with <provider>", goes through the provider, and returns Palisade's page after the callback. */
  async function viaProvider(b: Browser, page: { body: string }, id: string): Promise<{ status: number; body: string }> {
    const form = /<form method="post" action="([^"]+\/upstream\/[^"]+)">/g;
    const action = [...page.body.matchAll(form)].map((m) => m[1]!).find((a) => a.endsWith(`/${id}`));
    assert.ok(action, `a "Sign in with ${id}" button on the page`);
    const started = await b.request(action, { method: 'POST' });
    assert.equal(started.status, 303);
    const callback = await followToCallback(started.location!, `${base}/interaction/callback/${id}`);
    return b.request(callback.href);
  }

  async function approveAndGetTokens(b: Browser, page: { status: number; body: string }, deviceCode: string) {
    assert.ok(page.body.includes('id="approve"'), `expected the consent page, got ${page.status}: ${page.body.slice(0, 300)}`);
    const consent = readForm(page.body);
    const done = await b.request(consent.action, { method: 'POST', form: {} });
    assert.ok(done.body.includes('device-success'));
    return pollDeviceToken(t, 'palisade-cli', deviceCode);
  }

  it('the sign-in page offers each configured provider', async () => {
    const { page } = await signInPage();
    assert.match(page.body, /Sign in with Google/);
    assert.match(page.body, /Sign in with GitHub/);
  });

  it('Google (OpenID Connect): a first sign-in creates a `user` account linked to the identity; the next one finds it', async () => {
    google.signInAs({ sub: 'g-100', email: 'ada@example.com', email_verified: true, name: 'Ada' });
    const first = await signInPage();
    const tokens = await approveAndGetTokens(first.b, await viaProvider(first.b, first.page, 'google'), first.deviceCode);
    const me = (await (await t.fetch('/api/v1/me', { token: tokens.access_token })).json()) as { sub: string; scopes: string[] };
    assert.ok(me.sub.startsWith('u_'));
    const user = await t.server.store.users.byId(me.sub);
    assert.equal(user?.role, 'user', 'nobody becomes an admin by signing in upstream');
    assert.equal(user?.username, 'google:ada@example.com');
    assert.equal((await t.server.store.users.byIdentity('google', 'g-100'))?.id, me.sub);

    const second = await signInPage();
    const again = await approveAndGetTokens(second.b, await viaProvider(second.b, second.page, 'google'), second.deviceCode);
    const me2 = (await (await t.fetch('/api/v1/me', { token: again.access_token })).json()) as { sub: string };
    assert.equal(me2.sub, me.sub, 'the same account');
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'upstream.login' && e.status === 'Success'));
  });

  it('a Google identity outside the allowed domains is refused, and no account is created', async () => {
    google.signInAs({ sub: 'g-evil', email: 'mallory@evil.example', email_verified: true });
    const { b, page } = await signInPage();
    const res = await viaProvider(b, page, 'google');
    assert.equal(res.status, 403);
    assert.match(res.body, /accounts of evil\.example may not sign in/);
    assert.equal(await t.server.store.users.byIdentity('google', 'g-evil'), undefined);
  });

  it('GitHub without a sign-up policy: an identity that is not linked is refused with a clear message', async () => {
    github.signInAs({ id: 4242, login: 'octo', emails: [{ email: 'octo@example.com', primary: true, verified: true }] });
    const { b, page } = await signInPage();
    const res = await viaProvider(b, page, 'github');
    assert.equal(res.status, 403);
    assert.match(res.body, /no Palisade account is linked/);
    assert.ok(github.authorizations.at(-1)?.get('code_challenge_method') === 'S256', 'PKCE S256 sent to GitHub');
  });

  it('a callback whose state matches no sign-in in progress is refused (forged or replayed), with a high-severity event', async () => {
    const { b } = await signInPage();
    const res = await b.request(`${base}/interaction/callback/google?code=abc&state=forged`);
    assert.equal(res.status, 401);
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'upstream.login' && e.status === 'Failure' && e.severity === 'high'));
  });

  it('a callback replayed after it was used is refused', async () => {
    google.signInAs({ sub: 'g-100', email: 'ada@example.com', email_verified: true });
    const { b, page } = await signInPage();
    const started = await b.request(/<form method="post" action="([^"]+\/upstream\/google)">/.exec(page.body)![1]!, { method: 'POST' });
    const callback = await followToCallback(started.location!, `${base}/interaction/callback/google`);
    assert.ok((await b.request(callback.href)).body.includes('id="approve"'));
    const replay = await b.request(callback.href);
    assert.equal(replay.status, 401);
  });

  it('a callback carried to another browser is refused (bound to the browser that started it)', async () => {
    google.signInAs({ sub: 'g-100', email: 'ada@example.com', email_verified: true });
    const { b, page } = await signInPage();
    const started = await b.request(/<form method="post" action="([^"]+\/upstream\/google)">/.exec(page.body)![1]!, { method: 'POST' });
    const callback = await followToCallback(started.location!, `${base}/interaction/callback/google`);
    const other = new Browser(t);
    const res = await other.request(callback.href);
    assert.equal(res.status, 401);
    assert.ok(!res.body.includes('id="approve"'));
  });

  it('passwords still work beside upstream providers', async () => {
    const { b, page } = await signInPage();
    const login = readForm(page.body);
    const res = await b.request(login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    assert.ok(res.body.includes('id="approve"'));
  });
});
