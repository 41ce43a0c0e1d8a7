/**
 * Cross-site request forgery on the server's forms: a form POST another site sent (Fetch Metadata
 * `Sec-Fetch-Site`, or an `Origin` that is not the server's) is refused on every form — setup,
 * sign-in, upstream sign-in, consent, deny, and oidc-provider's device-code form — and the forms of
 * an interaction (whose session is a cookie) must carry their own anti-forgery token. Every refusal
 * is a 403 page, a high-severity security event, and changes nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, Browser, createAdmin, openSignIn, readForm, startTestServer, type TestServer } from '../support/harness.ts';

const EVIL = 'https://evil.example.test';

/** Starts a device grant for the CLI; returns its codes. */
async function deviceStart(t: TestServer): Promise<{ device_code: string; verification_uri: string; verification_uri_complete: string }> {
  const res = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid offline_access tasks' }) });
  assert.equal(res.status, 200);
  return (await res.json()) as { device_code: string; verification_uri: string; verification_uri_complete: string };
}

/** The device grant's state at the token endpoint: `authorization_pending` until approved. */
async function poll(t: TestServer, deviceCode: string): Promise<string> {
  const res = await t.fetch('/oauth2/token', { method: 'POST', body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: deviceCode, client_id: 'palisade-cli' }) });
  const body = (await res.json()) as { error?: string; access_token?: string };
  return body.error ?? (body.access_token ? 'tokens' : 'nothing');
}

describe('forged form submissions are refused', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      upstreamInsecureHttp: true,
      upstream: [{ id: 'github', kind: 'github', name: 'GitHub', clientId: 'client', clientSecret: 'secret', authorizationUrl: 'http://127.0.0.1:9/login/oauth/authorize', tokenUrl: 'http://127.0.0.1:9/token', apiUrl: 'http://127.0.0.1:9/api' }],
    });
  });
  after(async () => t?.close());

  /** The last refusal's event: `form.refused`, high severity, with `code`. */
  function assertRefusalEvent(code: string, what: string, since: number): void {
    const events = t.securityEvents.slice(since).filter((e) => e.activity_name === 'form.refused');
    assert.equal(events.length, 1, `${what}: one form.refused event`);
    assert.equal(events[0]!.status_code, code, what);
    assert.equal(events[0]!.severity, 'high', what);
  }

  /** Posts through `b` and requires the refusal page and its event. */
  async function refused(b: Browser, action: string, init: { form?: Record<string, string>; hidden?: boolean; headers?: Record<string, string> }, code: string, what: string): Promise<void> {
    const since = t.securityEvents.length;
    const page = await b.request(action, { method: 'POST', ...init });
    assert.equal(page.status, 403, `${what}: ${page.body.slice(0, 200)}`);
    assert.match(page.body, /<title>Request refused · Palisade<\/title>/, what);
    assert.match(page.body, /nothing was done/, what);
    assertRefusalEvent(code, what, since);
  }

  /** Request headers of a POST that another site sent (or that claims an origin not ours). */
  const CROSS_SITE: Record<string, string>[] = [
    { 'sec-fetch-site': 'cross-site' },
    { 'sec-fetch-site': 'same-site' },
    { origin: EVIL },
    { origin: EVIL, 'sec-fetch-site': 'same-origin' },
    { origin: 'https://127.0.0.1', 'sec-fetch-site': 'same-origin' },
  ];

  it('the setup form: another site cannot create the admin, even with the link', async () => {
    const token = new URL(t.server.setupUrl!).searchParams.get('token')!;
    const b = new Browser(t);
    await b.request(`/setup?token=${token}`);
    for (const headers of CROSS_SITE) await refused(b, '/setup', { form: { username: 'mallory', password: 'a long enough password' }, headers }, 'PAL_ERR_ORIGIN_REFUSED', `setup ${JSON.stringify(headers)}`);
    assert.equal(await t.server.store.users.count(), 0, 'no account created');
    await createAdmin(t); // the link still works
  });

  it('the sign-in form: refused when another site sent it, even with the right password; no password is checked', async () => {
    const device = await deviceStart(t);
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    const before = t.securityEvents.filter((e) => e.activity_name === 'password.login').length;
    for (const headers of CROSS_SITE) await refused(b, login.action, { form: ADMIN, headers }, 'PAL_ERR_ORIGIN_REFUSED', `sign-in ${JSON.stringify(headers)}`);
    assert.equal(t.securityEvents.filter((e) => e.activity_name === 'password.login').length, before, 'no sign-in attempted');
    // Our own page, as Chromium sends it under Referrer-Policy: no-referrer: accepted.
    const page = await b.request(login.action, { method: 'POST', form: ADMIN, headers: { origin: 'null', 'sec-fetch-site': 'same-origin' } });
    assert.match(page.body, /id="approve"/, `the consent page: ${page.status} ${page.body.slice(0, 200)}`);
    // And with this server's own Origin.
    const other = await openSignIn(t, (await deviceStart(t)).verification_uri_complete);
    const own = await other.browser.request(other.login.action, { method: 'POST', form: ADMIN, headers: { origin: new URL(t.url).origin, 'sec-fetch-site': 'same-origin' } });
    assert.match(own.body, /id="approve"/);
  });

  it('an interaction form without its own anti-forgery token is refused: missing, wrong, or another interaction’s', async () => {
    const device = await deviceStart(t);
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    assert.match(login.fields.csrf ?? '', /^[A-Za-z0-9_-]{43}$/, 'the form carries a token');
    const elsewhere = await openSignIn(t, (await deviceStart(t)).verification_uri_complete);
    assert.notEqual(elsewhere.login.fields.csrf, login.fields.csrf, 'one token per interaction');
    const before = t.securityEvents.filter((e) => e.activity_name === 'password.login').length;
    await refused(b, login.action, { form: ADMIN, hidden: false }, 'PAL_ERR_FORBIDDEN', 'no token');
    await refused(b, login.action, { form: { ...ADMIN, csrf: 'A'.repeat(43) }, hidden: false }, 'PAL_ERR_FORBIDDEN', 'a wrong token');
    await refused(b, login.action, { form: { ...ADMIN, csrf: elsewhere.login.fields.csrf! }, hidden: false }, 'PAL_ERR_FORBIDDEN', 'another interaction’s token');
    await refused(b, login.action, { form: { ...ADMIN, csrf: 'x'.repeat(5000) }, hidden: false }, 'PAL_ERR_FORBIDDEN', 'a huge token');
    assert.equal(t.securityEvents.filter((e) => e.activity_name === 'password.login').length, before, 'no sign-in attempted');

    // Signed in (with the token): the consent forms need it too.
    let page = await b.request(login.action, { method: 'POST', form: ADMIN });
    assert.match(page.body, /id="approve"/);
    const confirm = readForm(page.body);
    const deny = /<form method="post" action="([^"]+\/abort)">/.exec(page.body)![1]!;
    await refused(b, confirm.action, { form: {}, hidden: false }, 'PAL_ERR_FORBIDDEN', 'approve without the token');
    await refused(b, deny, { form: {}, hidden: false }, 'PAL_ERR_FORBIDDEN', 'deny without the token');
    for (const headers of CROSS_SITE) {
      await refused(b, confirm.action, { form: {}, headers }, 'PAL_ERR_ORIGIN_REFUSED', `approve ${JSON.stringify(headers)}`);
      await refused(b, deny, { form: {}, headers }, 'PAL_ERR_ORIGIN_REFUSED', `deny ${JSON.stringify(headers)}`);
    }
    assert.equal(await poll(t, device.device_code), 'authorization_pending', 'nothing approved or denied');
    assert.ok(!t.securityEvents.some((e) => e.activity_name === 'oauth.consent'), 'no consent decision recorded');

    page = await b.request(confirm.action, { method: 'POST', form: {} });
    assert.match(page.body, /device-success/, 'with the token, approval works');
    assert.equal(await poll(t, device.device_code), 'tokens');
  });

  it('the upstream sign-in button: no token or another site → refused, and the browser is never sent upstream', async () => {
    const device = await deviceStart(t);
    const { browser: b, login } = await openSignIn(t, device.verification_uri_complete);
    const action = login.action.replace(/\/login$/, '/upstream/github');
    await refused(b, action, { form: {}, hidden: false }, 'PAL_ERR_FORBIDDEN', 'upstream without the token');
    await refused(b, action, { form: {}, headers: { 'sec-fetch-site': 'cross-site' } }, 'PAL_ERR_ORIGIN_REFUSED', 'upstream from another site');
    const started = await b.request(action, { method: 'POST', form: {} });
    assert.equal(started.status, 303);
    assert.match(started.location ?? '', /^http:\/\/127\.0\.0\.1:9\/login\/oauth\/authorize\?/, 'with the token, off to the provider');
  });

  it('the device-code form (oidc-provider’s, with its own xsrf token): another site’s POST is refused before it', async () => {
    const device = await deviceStart(t);
    const b = new Browser(t);
    const input = await b.request(new URL(device.verification_uri).pathname);
    const form = readForm(input.body, 'op.deviceInputForm');
    const userCode = new URL(device.verification_uri_complete).searchParams.get('user_code')!;
    for (const headers of CROSS_SITE) await refused(b, form.action, { form: { ...form.fields, user_code: userCode }, headers }, 'PAL_ERR_ORIGIN_REFUSED', `device form ${JSON.stringify(headers)}`);
    const ok = await b.request(form.action, { method: 'POST', form: { ...form.fields, user_code: userCode }, headers: { origin: 'null', 'sec-fetch-site': 'same-origin' } });
    assert.match(ok.body, /op\.deviceConfirmForm/, `our own page's POST goes on: ${ok.status} ${ok.body.slice(0, 200)}`);
  });
});
