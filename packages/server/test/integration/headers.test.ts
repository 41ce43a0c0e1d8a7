/**
 * Security headers on every kind of response — API JSON and problems, the HTML pages (setup,
 * device code, sign-in, consent), oidc-provider's answers under `/oauth2`, the stylesheet — each
 * scored with Mozilla HTTP Observatory's rules (test/support/observatory.ts) and required to reach
 * 120; the page policy's nonce is fresh on every response; oidc-provider's cookies are `__Host-`
 * (or `__Secure-`), `Secure`, `HttpOnly`, `SameSite=Lax`; no HSTS and no prefixes on plain HTTP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fetch as ufetch } from 'undici';
import { ADMIN, createAdmin, readForm, startTestServer, type TestServer } from '../support/harness.ts';
import { observatoryScore, type ObservedResponse } from '../support/observatory.ts';
import { API_CSP, HSTS, PERMISSIONS_POLICY } from '../../src/edge/headers.ts';

/** The Origin the real scanner sends in its CORS probe. */
const PROBE_ORIGIN = 'https://http-observatory.security.mozilla.org';
const MIN_SCORE = 120;

/** One response of a visit, as the scanner would see it. */
interface Seen { method: string; url: string; status: number; headers: Headers; body: string; cookies: string[] }

/**
 * A browser that records everything: follows redirects on the server, keeps cookies (and every
 * `Set-Cookie` line, the scanner's jar), and posts forms with their hidden fields.
 */
class RecordingBrowser {
  readonly seen: Seen[] = [];
  readonly setCookies: string[] = [];
  readonly #jar = new Map<string, string>();
  readonly #t: TestServer;
  constructor(t: TestServer) {
    this.#t = t;
  }
  async go(path: string, form?: Record<string, string>): Promise<Seen> {
    let url = new URL(path, this.#t.url).href;
    let method = form ? 'POST' : 'GET';
    let body: string | undefined = form ? new URLSearchParams(form).toString() : undefined;
    for (let hop = 0; hop < 10; hop++) {
      const headers: Record<string, string> = { cookie: [...this.#jar].map(([k, v]) => `${k}=${v}`).join('; ') };
      if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = (await ufetch(url, { method, headers, body, dispatcher: this.#t.dispatcher, redirect: 'manual' })) as unknown as Response;
      for (const c of res.headers.getSetCookie()) {
        this.setCookies.push(c);
        const [pair] = c.split(';');
        const i = pair!.indexOf('=');
        if (/expires=Thu, 01 Jan 1970/i.test(c) || pair!.slice(i + 1) === '') this.#jar.delete(pair!.slice(0, i));
        else this.#jar.set(pair!.slice(0, i), pair!.slice(i + 1));
      }
      const seen: Seen = { method, url, status: res.status, headers: res.headers, body: await res.text(), cookies: [...this.setCookies] };
      this.seen.push(seen);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location && new URL(location, url).origin === new URL(this.#t.url).origin) {
        url = new URL(location, url).href;
        method = 'GET';
        body = undefined;
        continue;
      }
      return seen;
    }
    throw new Error('too many redirects');
  }
}

/**
 * Scores `seen` with the scanner's CORS probe: the same URL requested from another site's Origin
 * (a GET, as the scanner does, unless `probe` says how: POST-only endpoints).
 */
async function score(t: TestServer, seen: { url: string; headers: Headers; body: string; cookies?: string[] }, probeInit: RequestInit = {}): Promise<ReturnType<typeof observatoryScore>> {
  const probe = await t.fetch(seen.url, { ...probeInit, headers: { ...(probeInit.headers as Record<string, string> | undefined), origin: PROBE_ORIGIN } });
  await probe.arrayBuffer();
  const observed: ObservedResponse = { url: seen.url, headers: seen.headers, body: seen.body, cookies: seen.cookies, corsProbe: { origin: PROBE_ORIGIN, headers: probe.headers } };
  return observatoryScore(observed);
}

/** Fetches `path`, requires the Observatory score, and returns the response. */
async function scored(t: TestServer, what: string, path: string, init: RequestInit = {}): Promise<Seen> {
  const res = await t.fetch(path, init);
  const seen: Seen = { method: init.method ?? 'GET', url: new URL(path, t.url).href, status: res.status, headers: res.headers, body: await res.text(), cookies: res.headers.getSetCookie() };
  await requireScore(t, what, seen, init);
  return seen;
}

/** Requires the score of `seen` (`probeInit` null: no CORS probe, see `score`). */
async function requireScore(t: TestServer, what: string, seen: Seen, probeInit?: RequestInit | null): Promise<void> {
  const s = probeInit === null ? observatoryScore(seen) : await score(t, seen, probeInit);
  const below = Object.entries(s.tests).filter(([, v]) => v.modifier < 0);
  assert.equal(s.tests['content-security-policy']!.result, 'csp-implemented-with-no-unsafe-default-src-none', `${what}: default-src 'none', nothing unsafe`);
  assert.ok(s.score >= MIN_SCORE, `${what} (${seen.status} ${seen.url}) scores ${s.score} (${s.grade}), below ${MIN_SCORE}: ${JSON.stringify(s.tests)}`);
  assert.deepEqual(below, [], `${what}: no Observatory penalty`);
  assertCommonHeaders(what, seen.headers);
}

/** What every response over TLS carries. */
function assertCommonHeaders(what: string, h: Headers): void {
  assert.equal(h.get('x-content-type-options'), 'nosniff', `${what}: nosniff`);
  assert.equal(h.get('referrer-policy'), 'no-referrer', `${what}: no referrer`);
  assert.equal(h.get('x-frame-options'), 'DENY', `${what}: X-Frame-Options`);
  assert.equal(h.get('cross-origin-opener-policy'), 'same-origin', `${what}: COOP`);
  assert.equal(h.get('cross-origin-resource-policy'), 'same-origin', `${what}: CORP`);
  assert.equal(h.get('permissions-policy'), PERMISSIONS_POLICY, `${what}: Permissions-Policy`);
  assert.equal(h.get('strict-transport-security'), HSTS, `${what}: HSTS`);
  assert.match(HSTS, /max-age=(\d+); includeSubDomains/);
  assert.ok(Number(/max-age=(\d+)/.exec(HSTS)![1]) >= 365 * 24 * 3600, 'HSTS lasts at least a year');
  const csp = h.get('content-security-policy') ?? '';
  assert.match(csp, /frame-ancestors 'none'/, `${what}: frame-ancestors`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${what}: nothing unsafe`);
}

/** The page policy: nonce-based scripts, no plugins, no base, the stylesheet and images from here. */
function assertPagePolicy(what: string, h: Headers, formAction: string | null = "'self'"): string {
  const csp = h.get('content-security-policy') ?? '';
  const nonce = /script-src 'nonce-([A-Za-z0-9+/=]{22,})' 'strict-dynamic'/.exec(csp)?.[1];
  assert.ok(nonce, `${what}: a nonce-based script-src in ${csp}`);
  for (const d of ["default-src 'none'", "object-src 'none'", "base-uri 'none'", "style-src 'self'", "img-src 'self'", "frame-ancestors 'none'"]) assert.ok(csp.includes(d), `${what}: ${d} in ${csp}`);
  if (formAction) assert.ok(csp.includes(`form-action ${formAction};`), `${what}: form-action ${formAction} in ${csp}`);
  else assert.ok(!csp.includes('form-action'), `${what}: no form-action in ${csp}`);
  assert.equal(h.get('cache-control'), 'no-store', `${what}: not cached`);
  return nonce;
}

describe('the Observatory scorer (test/support/observatory.ts) tells good headers from bad', () => {
  const base = { url: 'https://example.test/', body: '' };
  const good = () => new Headers({
    'content-security-policy': API_CSP, 'strict-transport-security': HSTS, 'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY', 'cross-origin-resource-policy': 'same-origin', 'content-type': 'application/json',
  });

  it('no headers at all: 100 − 25 (CSP) − 20 (HSTS) − 5 (nosniff) − 20 (XFO) = 30, grade D', () => {
    const s = observatoryScore({ ...base, headers: new Headers({ 'content-type': 'text/html' }) });
    assert.equal(s.score, 30);
    assert.equal(s.grade, 'D');
  });

  it("our API headers: 100 + 10 (default-src 'none') + 5 (referrer) + 5 (frame-ancestors) + 10 (CORP) = 130", () => {
    assert.equal(observatoryScore({ ...base, headers: good() }).score, 130);
  });

  it("bonuses count only while the penalties leave 90: an 'unsafe-inline' script policy drops to 80", () => {
    const h = good();
    h.set('content-security-policy', "default-src 'none'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
    const s = observatoryScore({ ...base, headers: h });
    assert.equal(s.tests['content-security-policy']!.result, 'csp-implemented-with-unsafe-inline');
    assert.equal(s.score, 80);
  });

  it("'strict-dynamic' without a nonce or hash is an invalid policy; with one, 'unsafe-inline' and 'self' are ignored", () => {
    const h = good();
    h.set('content-security-policy', "default-src 'none'; script-src 'strict-dynamic'");
    assert.equal(observatoryScore({ ...base, headers: h }).tests['content-security-policy']!.result, 'csp-header-invalid');
    h.set('content-security-policy', "default-src 'none'; script-src 'nonce-abc' 'strict-dynamic' 'unsafe-inline' 'self'");
    assert.equal(observatoryScore({ ...base, headers: h }).tests['content-security-policy']!.result, 'csp-implemented-with-no-unsafe-default-src-none');
  });

  it('an http: source on an https site, a duplicate directive, a short HSTS are penalised', () => {
    const h = good();
    h.set('content-security-policy', "default-src 'none'; form-action 'self' http://127.0.0.1:1234");
    assert.equal(observatoryScore({ ...base, headers: h }).tests['content-security-policy']!.modifier, -20);
    h.set('content-security-policy', "default-src 'none'; default-src 'self'");
    assert.equal(observatoryScore({ ...base, headers: h }).tests['content-security-policy']!.result, 'csp-header-invalid');
    const short = good();
    short.set('strict-transport-security', 'max-age=86400');
    assert.equal(observatoryScore({ ...base, headers: short }).tests['strict-transport-security']!.modifier, -10);
  });

  it('cookies: a session cookie without HttpOnly costs 30; Secure + HttpOnly + SameSite earns 5', () => {
    assert.equal(observatoryScore({ ...base, headers: good(), cookies: ['sessionid=1; Secure; SameSite=Lax'] }).tests['cookies']!.modifier, -30);
    assert.equal(observatoryScore({ ...base, headers: good(), cookies: ['__Host-sess=1; Path=/; Secure; HttpOnly; SameSite=Lax'] }).tests['cookies']!.modifier, 5);
    assert.equal(observatoryScore({ ...base, headers: good(), cookies: ['a=1; Secure; HttpOnly; SameSite=Loose'] }).tests['cookies']!.modifier, 0, 'SameSite=Loose is read as no SameSite by the jar');
    const loose = good();
    loose.append('set-cookie', 'a=1; Secure; HttpOnly; SameSite=Loose');
    assert.equal(observatoryScore({ ...base, headers: loose }).tests['cookies']!.modifier, -20, '…and as an invalid SameSite in the answer itself');
  });

  it('CORS: reflecting any Origin with credentials costs 50; an allow-listed Origin does not', () => {
    const reflect = new Headers({ 'access-control-allow-origin': PROBE_ORIGIN, 'access-control-allow-credentials': 'true' });
    assert.equal(observatoryScore({ ...base, headers: good(), corsProbe: { origin: PROBE_ORIGIN, headers: reflect } }).tests['cross-origin-resource-sharing']!.modifier, -50);
    const listed = new Headers({ 'access-control-allow-origin': 'https://app.example.test' });
    assert.equal(observatoryScore({ ...base, headers: good(), corsProbe: { origin: PROBE_ORIGIN, headers: listed } }).tests['cross-origin-resource-sharing']!.result, 'cross-origin-resource-sharing-implemented-with-restricted-access');
  });

  it('plain HTTP: no HSTS possible and no redirection to HTTPS (−40)', () => {
    const s = observatoryScore({ url: 'http://example.test/', body: '', headers: good() });
    assert.equal(s.tests['strict-transport-security']!.result, 'hsts-not-implemented-no-https');
    assert.equal(s.tests['redirection']!.result, 'redirection-missing');
  });

  it('scripts from another site without SRI cost 5 (over https) or 50 (over http)', () => {
    const h = good();
    h.set('content-type', 'text/html; charset=utf-8');
    assert.equal(observatoryScore({ ...base, headers: h, body: '<script src="https://cdn.other.test/x.js"></script>' }).tests['subresource-integrity']!.modifier, -5);
    assert.equal(observatoryScore({ ...base, headers: h, body: '<script src="http://cdn.other.test/x.js"></script>' }).tests['subresource-integrity']!.modifier, -50);
    assert.equal(observatoryScore({ ...base, headers: h, body: '<p>no script</p>' }).tests['subresource-integrity']!.result, 'sri-not-implemented-but-no-scripts-loaded');
  });
});

describe('security headers on every response (TLS)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => t?.close());

  it('the setup page (before the admin exists) and its refusal', async () => {
    const setup = new URL(t.server.setupUrl!);
    const page = await scored(t, 'setup page', setup.pathname + setup.search);
    assert.equal(page.status, 200);
    assertPagePolicy('setup page', page.headers);
    assert.doesNotMatch(page.body, /http-equiv/i, 'no policy in <meta> (the scorer reads headers only)');
    const wrong = await scored(t, 'setup link not valid', '/setup?token=wrong');
    assert.equal(wrong.status, 404);
    assertPagePolicy('setup link not valid', wrong.headers);
    await createAdmin(t);
  });

  it('API JSON: the service description, a 401 problem, 404 problems, health', async () => {
    const answers = [
      ['service description', '/', 200], ['401 problem', '/api/v1/tasks/x', 401], ['404 problem', '/nowhere', 404], ['API 404 problem', '/api/v1/nowhere', 404],
      ['health', '/healthz', 200], ['a malformed URL (answered by Fastify without hooks)', '/api/v1/%zz', 400],
    ] as const;
    for (const [what, path, status] of answers) {
      const res = await scored(t, what, path);
      assert.equal(res.status, status, what);
      assert.equal(res.headers.get('content-security-policy'), API_CSP, `${what}: the API policy`);
      assert.equal(res.headers.get('cache-control'), 'no-store', `${what}: not cached`);
    }
  });

  it('the stylesheet: cacheable, everything else the same', async () => {
    const css = await scored(t, 'stylesheet', '/assets/palisade.css');
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    assert.equal(css.headers.get('cache-control'), 'public, max-age=3600');
    assert.equal(css.headers.get('content-security-policy'), API_CSP);
  });

  it('oidc-provider under /oauth2: discovery, JWKS, a token error, the device-code endpoint', async () => {
    const discovery = await scored(t, 'discovery', '/oauth2/.well-known/openid-configuration');
    assert.equal(discovery.status, 200);
    assert.equal(discovery.headers.get('content-security-policy'), API_CSP);
    const jwks = await scored(t, 'JWKS', '/oauth2/jwks');
    assert.equal(jwks.status, 200);
    const token = await scored(t, 'token error', '/oauth2/token', { method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'nobody', client_secret: 'nothing' }) });
    assert.ok(token.status === 400 || token.status === 401, `token error: ${token.status}`);
    assert.equal(token.headers.get('cache-control'), 'no-store', 'oidc-provider keeps token answers out of caches');
    assert.equal(token.headers.get('content-security-policy'), API_CSP);
    const device = await scored(t, 'device authorization', '/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid' }) });
    assert.equal(device.status, 200);
  });

  it('the device-code pages, sign-in, consent and success pages, and every redirect between them', async () => {
    const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid offline_access tasks' }) });
    const device = (await start.json()) as { verification_uri: string; verification_uri_complete: string };
    const b = new RecordingBrowser(t);

    // The page to type a code into.
    const input = await b.go(new URL(device.verification_uri).pathname);
    assert.match(input.body, /op\.deviceInputForm/);
    const inputNonce = assertPagePolicy('device code page', input.headers);

    // The link with the code: oidc-provider's auto-submitting page, its inline script allowed by hash.
    let page = await b.go(new URL(device.verification_uri_complete).pathname + new URL(device.verification_uri_complete).search);
    if (page.body.includes('<title>Submitting Callback</title>')) {
      const csp = page.headers.get('content-security-policy')!;
      const nonce = assertPagePolicy('auto-submit page', page.headers);
      assert.notEqual(nonce, inputNonce, 'a fresh nonce on every page');
      assert.match(csp, /script-src 'nonce-[^']+' 'strict-dynamic' 'sha256-[A-Za-z0-9+/=]+'/, `oidc-provider added its script's hash: ${csp}`);
      const auto = readForm(page.body);
      page = await b.go(auto.action, auto.fields);
    }
    assert.match(page.body, /op\.deviceConfirmForm/);
    assertPagePolicy('device confirm page', page.headers);

    // Confirm → oidc-provider starts the interaction (cookies) → the sign-in page.
    const confirm = readForm(page.body, 'op.deviceConfirmForm');
    page = await b.go(confirm.action, confirm.fields);
    assert.match(page.body, /id="username"/);
    assertPagePolicy('sign-in page', page.headers);
    const login = readForm(page.body);
    page = await b.go(login.action, { ...login.fields, username: ADMIN.username, password: ADMIN.password });
    assert.match(page.body, /id="approve"/);
    assertPagePolicy('consent page', page.headers);
    const consent = readForm(page.body);
    page = await b.go(consent.action, consent.fields);
    assert.match(page.body, /device-success/);
    assertPagePolicy('success page', page.headers);

    // Every response of the visit, redirects included, with the cookies seen so far.
    assert.ok(b.seen.length >= 8, `the whole visit (${b.seen.length} responses)`);
    for (const seen of b.seen) {
      // oidc-provider answers a GET of a device resume link without its cookies with a 500 (a bug
      // of its own, reported): those one-time links get no CORS probe.
      const resume = /^\/oauth2\/device\/[^/]+$/.test(new URL(seen.url).pathname);
      await requireScore(t, `${seen.method} ${new URL(seen.url).pathname}`, seen, resume ? null : undefined);
      if (seen.headers.get('content-type')?.startsWith('text/html')) assert.doesNotMatch(seen.body, /http-equiv="?(content-security-policy|referrer-policy|cross-origin)/i);
    }
    assert.equal(observatoryScore(b.seen.at(-1)!).tests['cookies']!.result, 'cookies-secure-with-httponly-sessions-and-samesite', 'the cookies earn the bonus');

    // The cookies themselves.
    const names = new Set<string>();
    for (const line of b.setCookies) {
      const name = line.slice(0, line.indexOf('='));
      names.add(name.replace(/\.sig$/, ''));
      const attrs = line.toLowerCase();
      assert.match(attrs, /; secure/, `${name}: Secure`);
      assert.match(attrs, /; httponly/, `${name}: HttpOnly`);
      assert.match(attrs, /; samesite=lax/, `${name}: SameSite=Lax`);
      assert.doesNotMatch(attrs, /; domain=/, `${name}: no Domain`);
      if (name.startsWith('__Host-')) assert.match(attrs, /; path=\/(;|$)/, `${name}: Path=/`);
      else assert.ok(name.startsWith('__Secure-'), `${name}: a prefixed name`);
    }
    assert.deepEqual([...names].sort(), ['__Host-palisade-interaction', '__Host-palisade-session', '__Secure-palisade-resume']);
  });
});

describe("an interaction page's form-action follows where its forms lead", () => {
  const EXTENSION_ID = 'abcdefghijklmnopabcdefghijklmnop';
  let t: TestServer;
  let withUpstream: TestServer;
  before(async () => {
    t = await startTestServer({ extensionIds: [EXTENSION_ID] });
    await createAdmin(t);
    withUpstream = await startTestServer({
      upstreamInsecureHttp: true,
      upstream: [{ id: 'github', kind: 'github', name: 'GitHub', clientId: 'client', clientSecret: 'secret', authorizationUrl: 'https://github.example.test/login/oauth/authorize' }],
    });
    await createAdmin(withUpstream);
  });
  after(async () => {
    await t?.close();
    await withUpstream?.close();
  });

  /** Sign-in and consent pages of an authorization-code flow to `redirect` (PKCE S256). */
  async function codeFlowPages(client: string, redirect: string): Promise<[Seen, Seen]> {
    const challenge = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM';
    const b = new RecordingBrowser(t);
    const query = new URLSearchParams({ response_type: 'code', scope: 'openid offline_access', prompt: 'consent', client_id: client, redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 'st' });
    const signIn = await b.go(`/oauth2/auth?${query}`);
    assert.match(signIn.body, /id="username"/);
    const login = readForm(signIn.body);
    const consent = await b.go(login.action, { ...login.fields, username: ADMIN.username, password: ADMIN.password });
    assert.match(consent.body, /id="approve"/);
    return [signIn, consent];
  }

  it("the extension's launchWebAuthFlow: 'self' and its chromiumapp.org origin, which the last redirect goes to", async () => {
    for (const [what, page] of (await codeFlowPages('palisade-extension', `https://${EXTENSION_ID}.chromiumapp.org/`)).entries()) {
      assertPagePolicy(`extension page ${what}`, page.headers, `'self' https://${EXTENSION_ID}.chromiumapp.org`);
      await requireScore(t, `extension page ${what}`, page);
    }
  });

  it("the CLI's loopback redirect: no form-action (an http: source would cost the Observatory grade; see docs/SECURITY-HEADERS.md)", async () => {
    for (const [what, page] of (await codeFlowPages('palisade-cli', 'http://127.0.0.1:49152/callback')).entries()) {
      assertPagePolicy(`CLI page ${what}`, page.headers, null);
      await requireScore(t, `CLI page ${what}`, page);
    }
  });

  it("with upstream providers: no form-action on the sign-in page (their endpoints are known at run time), 'self' on consent", async () => {
    const start = await withUpstream.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid' }) });
    const device = (await start.json()) as { verification_uri_complete: string };
    const b = new RecordingBrowser(withUpstream);
    const url = new URL(device.verification_uri_complete);
    let page = await b.go(url.pathname + url.search);
    if (page.body.includes('<title>Submitting Callback</title>')) {
      const auto = readForm(page.body);
      page = await b.go(auto.action, auto.fields);
    }
    const confirm = readForm(page.body, 'op.deviceConfirmForm');
    page = await b.go(confirm.action, confirm.fields);
    assert.match(page.body, /Sign in with GitHub/);
    assertPagePolicy('sign-in page with upstream providers', page.headers, null);
    await requireScore(withUpstream, 'sign-in page with upstream providers', page);
    const login = readForm(page.body);
    page = await b.go(login.action, { ...login.fields, username: ADMIN.username, password: ADMIN.password });
    assert.match(page.body, /id="approve"/);
    assertPagePolicy('consent page with upstream providers', page.headers);
  });
});

describe('security headers on plain HTTP (development)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ insecureHttp: true });
  });
  after(async () => t?.close());

  it('no HSTS (browsers ignore it there), cookies without Secure and without prefixes; the rest the same', async () => {
    const res = await t.fetch('/');
    assert.equal(res.headers.get('strict-transport-security'), null);
    assert.equal(res.headers.get('content-security-policy'), API_CSP);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const oauth = await t.fetch('/oauth2/jwks');
    assert.equal(oauth.headers.get('strict-transport-security'), null);
    assert.equal(oauth.headers.get('x-frame-options'), 'DENY');
    const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid' }) });
    const device = (await start.json()) as { verification_uri: string };
    const page = await t.fetch(new URL(device.verification_uri).pathname);
    const cookies = page.headers.getSetCookie();
    assert.ok(cookies.length > 0 && cookies.every((c) => c.startsWith('palisade-session') && !/; secure/i.test(c)), cookies.join(' | '));
  });
});
