/**
 * Upstream sign-in end to end over real HTTP: Google (an oidc-provider stand-in) and GitHub (a
 * stand-in speaking its OAuth and API shapes) through `auth/upstream`, and every refusal: wrong
 * state, replayed code, wrong nonce, wrong callback, expired sign-in, unverified or disallowed
 * email, unknown provider, an upstream that is down or silent, bad config.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PalisadeError, type ErrorCode } from '@palisade/protocol';
import { createUpstreamLogin, parseUpstreamConfig, type UpstreamLogin, type UpstreamProviderConfig } from '../../src/auth/upstream.ts';
import { followToCallback, startGitHubStandIn, startOidcStandIn, type GitHubStandIn, type OidcStandIn } from '../support/upstream-fixtures.ts';

const PUBLIC = 'https://palisade.test';
const callback = (id: string) => `${PUBLIC}/interaction/callback/${id}`;

const ADA = { sub: 'g-1001', email: 'ada@example.com', email_verified: true, name: 'Ada Lovelace' };
const OCTO = { id: 583231, login: 'octocat', name: 'The Octocat', emails: [
  { email: 'octo@users.noreply.github.com', primary: false, verified: true },
  { email: 'octocat@example.com', primary: true, verified: true },
] };

/** Asserts that `promise` rejects with a PalisadeError of `code`; returns it. */
async function refused(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<PalisadeError> {
  let error: unknown;
  await promise.then(() => assert.fail(`expected ${code}, but it succeeded`), (e: unknown) => (error = e));
  assert.ok(error instanceof PalisadeError, `expected a PalisadeError, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  return error;
}

/** A server that accepts connections and never answers. */
async function silentServer(): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(() => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A URL on a port nothing listens on. */
async function closedPortUrl(): Promise<string> {
  const s = await silentServer();
  await s.close();
  return s.url;
}

describe('upstream sign-in', () => {
  let google: OidcStandIn;
  let corp: OidcStandIn;
  let github: GitHubStandIn;
  let configs: UpstreamProviderConfig[];
  let login: UpstreamLogin;

  before(async () => {
    google = await startOidcStandIn({ redirectUris: [callback('google'), callback('google-corp')] });
    corp = await startOidcStandIn({ redirectUris: [callback('corp')], claimsInIdToken: false });
    github = await startGitHubStandIn();
    configs = [
      { id: 'google', kind: 'oidc', name: 'Google', issuer: google.issuer, clientId: google.clientId, clientSecret: google.clientSecret },
      { id: 'google-corp', kind: 'oidc', name: 'Google (corp)', issuer: google.issuer, clientId: google.clientId, clientSecret: google.clientSecret, allowedEmailDomains: ['Corp.Example'] },
      { id: 'corp', kind: 'oidc', name: 'Corp SSO', issuer: corp.issuer, clientId: corp.clientId, clientSecret: corp.clientSecret },
      { id: 'github', kind: 'github', name: 'GitHub', clientId: github.clientId, clientSecret: github.clientSecret, ...github.endpoints },
    ];
    login = createUpstreamLogin(configs, { allowInsecureHttp: true, timeoutMs: 2000 });
  });
  after(async () => {
    await Promise.all([google?.close(), corp?.close(), github?.close()]);
  });

  /** Starts at `id`, signs in at the stand-in, returns the transaction and the callback URL. */
  async function signIn(id: string, l = login) {
    const { url, transaction } = await l.start(id, callback(id));
    return { url, transaction, callbackUrl: await followToCallback(url, callback(id)) };
  }

  it('lists the providers for the sign-in buttons', () => {
    assert.deepEqual(login.providers(), [
      { id: 'google', name: 'Google' }, { id: 'google-corp', name: 'Google (corp)' }, { id: 'corp', name: 'Corp SSO' }, { id: 'github', name: 'GitHub' },
    ]);
  });

  it('signs in with Google (OIDC): state, nonce and PKCE S256 on the request, identity from the ID token', async () => {
    google.signInAs(ADA);
    const { url, transaction, callbackUrl } = await signIn('google');
    const q = new URL(url).searchParams;
    assert.equal(new URL(url).origin, google.issuer);
    assert.equal(q.get('state'), transaction.state);
    assert.equal(q.get('nonce'), transaction.nonce);
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.equal(q.get('scope'), 'openid email profile');
    assert.equal(q.get('redirect_uri'), callback('google'));
    assert.equal(transaction.provider, 'google');

    const identity = await login.finish(transaction, callbackUrl);
    assert.deepEqual(identity, { provider: 'google', subject: 'g-1001', email: 'ada@example.com', emailVerified: true, name: 'Ada Lovelace' });
  });

  it('reads claims from UserInfo when the provider keeps them out of the ID token', async () => {
    corp.signInAs({ sub: 'c-7', email: 'grace@corp.example', email_verified: true, name: 'Grace Hopper', preferred_username: 'grace' });
    const { transaction, callbackUrl } = await signIn('corp');
    assert.deepEqual(await login.finish(transaction, callbackUrl), {
      provider: 'corp', subject: 'c-7', email: 'grace@corp.example', emailVerified: true, name: 'Grace Hopper', username: 'grace',
    });
  });

  it('signs in with GitHub: PKCE S256 sent, numeric id as subject, login as username, primary verified email', async () => {
    github.signInAs(OCTO);
    const { transaction, callbackUrl } = await signIn('github');
    const q = github.authorizations.at(-1)!;
    assert.equal(q.get('state'), transaction.state);
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.equal(q.get('scope'), 'read:user user:email');
    assert.equal(transaction.nonce, undefined);

    const identity = await login.finish(transaction, callbackUrl);
    assert.deepEqual(identity, { provider: 'github', subject: '583231', email: 'octocat@example.com', emailVerified: true, name: 'The Octocat', username: 'octocat' });
  });

  it('refuses a callback whose state is not the transaction\'s, before spending the code', async () => {
    github.signInAs(OCTO);
    const { transaction, callbackUrl } = await signIn('github');
    const forged = new URL(callbackUrl);
    forged.searchParams.set('state', 'attacker-state');
    const before = github.tokenRequests;
    await refused(login.finish(transaction, forged), 'PAL_ERR_UNAUTHENTICATED', /does not belong/);
    assert.equal(github.tokenRequests, before, 'no token request was made');
    // The genuine callback still works: the refusal came before the exchange.
    assert.equal((await login.finish(transaction, callbackUrl)).subject, '583231');
  });

  it('refuses a replayed code (GitHub and Google)', async () => {
    github.signInAs(OCTO);
    const gh = await signIn('github');
    await login.finish(gh.transaction, gh.callbackUrl);
    const e = await refused(login.finish(gh.transaction, gh.callbackUrl), 'PAL_ERR_UNAUTHENTICATED', /did not accept/);
    assert.doesNotMatch(e.message, /bad_verification_code|incorrect or expired/, 'the upstream\'s words stay internal');

    google.signInAs(ADA);
    const g = await signIn('google');
    await login.finish(g.transaction, g.callbackUrl);
    await refused(login.finish(g.transaction, g.callbackUrl), 'PAL_ERR_UNAUTHENTICATED', /did not accept/);
  });

  it('refuses an ID token whose nonce is not the transaction\'s', async () => {
    google.signInAs(ADA);
    const { transaction, callbackUrl } = await signIn('google');
    await refused(login.finish({ ...transaction, nonce: 'another-nonce' }, callbackUrl), 'PAL_ERR_UNAUTHENTICATED', /could not be verified/);
    const { nonce: _nonce, ...withoutNonce } = transaction;
    await refused(login.finish(withoutNonce, callbackUrl), 'PAL_ERR_UNAUTHENTICATED', /incomplete/);
  });

  it('refuses a wrong PKCE verifier', async () => {
    github.signInAs(OCTO);
    const gh = await signIn('github');
    await refused(login.finish({ ...gh.transaction, codeVerifier: 'x'.repeat(43) }, gh.callbackUrl), 'PAL_ERR_UNAUTHENTICATED');
    google.signInAs(ADA);
    const g = await signIn('google');
    await refused(login.finish({ ...g.transaction, codeVerifier: 'x'.repeat(43) }, g.callbackUrl), 'PAL_ERR_UNAUTHENTICATED');
  });

  it('refuses a response delivered to another provider\'s callback, and a sign-in older than its time limit', async () => {
    github.signInAs(OCTO);
    const { transaction, callbackUrl } = await signIn('github');
    const elsewhere = new URL(callbackUrl);
    elsewhere.pathname = '/interaction/callback/google';
    await refused(login.finish(transaction, elsewhere), 'PAL_ERR_UNAUTHENTICATED', /another provider/);

    const later = createUpstreamLogin(configs, { allowInsecureHttp: true, now: () => Date.now() + 11 * 60_000 });
    await refused(later.finish(transaction, callbackUrl), 'PAL_ERR_UNAUTHENTICATED', /too long/);
  });

  it('refuses an error from the provider (the person said no) without echoing its description', async () => {
    const { transaction } = await login.start('github', callback('github'));
    const denied = new URL(callback('github'));
    denied.search = new URLSearchParams({ error: 'access_denied', error_description: '<script>x</script>', state: transaction.state }).toString();
    const e = await refused(login.finish(transaction, denied), 'PAL_ERR_UNAUTHENTICATED', /cancelled/);
    assert.doesNotMatch(e.message, /script/);
  });

  it('refuses an unverified email (Google) and an account with no verified email (GitHub)', async () => {
    google.signInAs({ ...ADA, sub: 'g-2', email_verified: false });
    const g = await signIn('google');
    await refused(login.finish(g.transaction, g.callbackUrl), 'PAL_ERR_FORBIDDEN', /no verified email/);

    github.signInAs({ ...OCTO, id: 9, emails: [{ email: 'new@example.com', primary: true, verified: false }] });
    const gh = await signIn('github');
    await refused(login.finish(gh.transaction, gh.callbackUrl), 'PAL_ERR_FORBIDDEN', /no verified email/);
  });

  it('admits only allowedEmailDomains, whatever the case', async () => {
    google.signInAs(ADA);
    const out = await signIn('google-corp');
    await refused(login.finish(out.transaction, out.callbackUrl), 'PAL_ERR_FORBIDDEN', /example\.com may not sign in/);

    google.signInAs({ sub: 'g-3', email: 'Linus@CORP.example', email_verified: true, name: 'Linus' });
    const inside = await signIn('google-corp');
    assert.equal((await login.finish(inside.transaction, inside.callbackUrl)).email, 'Linus@CORP.example');
  });

  it('with allowedEmailDomains, picks a verified GitHub email in an allowed domain over a personal primary one', async () => {
    const gh = createUpstreamLogin([{ ...configs[3]!, allowedEmailDomains: ['corp.example'] }], { allowInsecureHttp: true });
    github.signInAs({ ...OCTO, emails: [
      { email: 'octo@gmail.example', primary: true, verified: true },
      { email: 'octo@corp.example', primary: false, verified: false },
    ] });
    let s = await signIn('github', gh);
    await refused(gh.finish(s.transaction, s.callbackUrl), 'PAL_ERR_FORBIDDEN', /gmail\.example may not sign in/);

    github.signInAs({ ...OCTO, emails: [
      { email: 'octo@gmail.example', primary: true, verified: true },
      { email: 'octo@corp.example', primary: false, verified: true },
    ] });
    s = await signIn('github', gh);
    assert.equal((await gh.finish(s.transaction, s.callbackUrl)).email, 'octo@corp.example');
  });

  it('refuses an unknown provider id', async () => {
    await refused(login.start('gitlab', callback('gitlab')), 'PAL_ERR_NOT_FOUND');
    github.signInAs(OCTO);
    const { transaction, callbackUrl } = await signIn('github');
    await refused(login.finish({ ...transaction, provider: 'gitlab' }, callbackUrl), 'PAL_ERR_NOT_FOUND');
  });

  it('refuses a redirect URI with a query or a fragment', async () => {
    await refused(login.start('google', `${callback('google')}?next=/admin`), 'PAL_ERR_VALIDATION', /redirect URI/);
    await refused(login.start('google', 'javascript:alert(1)'), 'PAL_ERR_VALIDATION', /redirect URI/);
  });

  it('reports an upstream that is down as PAL_ERR_UNAVAILABLE, and tries discovery again later', async () => {
    const down = createUpstreamLogin([{ ...configs[0]!, issuer: await closedPortUrl() }], { allowInsecureHttp: true });
    await refused(down.start('google', callback('google')), 'PAL_ERR_UNAVAILABLE', /unavailable right now/);

    let failing = true;
    const flaky = createUpstreamLogin([configs[0]!], {
      allowInsecureHttp: true,
      fetch: (url, init) => (failing ? Promise.reject(new TypeError('fetch failed')) : fetch(url, init)),
    });
    await refused(flaky.start('google', callback('google')), 'PAL_ERR_UNAVAILABLE');
    failing = false;
    assert.match((await flaky.start('google', callback('google'))).url, /^http:\/\/127\.0\.0\.1:\d+\/auth\?/);
  });

  it('reports GitHub down at the token exchange as PAL_ERR_UNAVAILABLE', async () => {
    const gone = await startGitHubStandIn();
    gone.signInAs(OCTO);
    const gh = createUpstreamLogin([{ ...configs[3]!, clientId: gone.clientId, clientSecret: gone.clientSecret, ...gone.endpoints }], { allowInsecureHttp: true });
    const { transaction, callbackUrl } = await signIn('github', gh);
    await gone.close();
    await refused(gh.finish(transaction, callbackUrl), 'PAL_ERR_UNAVAILABLE', /does not answer/);
  });

  it('times out an upstream that does not answer', async () => {
    const silent = await silentServer();
    try {
      const slow = createUpstreamLogin([{ ...configs[0]!, issuer: silent.url }], { allowInsecureHttp: true, timeoutMs: 300 });
      const started = Date.now();
      await refused(slow.start('google', callback('google')), 'PAL_ERR_UNAVAILABLE');
      assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms`);

      const gh = createUpstreamLogin([{ ...configs[3]!, tokenUrl: `${silent.url}/login/oauth/access_token` }], { allowInsecureHttp: true, timeoutMs: 300 });
      github.signInAs(OCTO);
      const s = await signIn('github', gh);
      await refused(gh.finish(s.transaction, s.callbackUrl), 'PAL_ERR_UNAVAILABLE', /does not answer/);
    } finally {
      await silent.close();
    }
  });

  it('refuses http:// upstreams unless allowed', () => {
    assert.throws(() => createUpstreamLogin([configs[0]!]), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_VALIDATION' && /\/providers\/0\/issuer must use https/.test(e.message));
  });
});

describe('parseUpstreamConfig', () => {
  const google = { id: 'google', kind: 'oidc', name: 'Google', issuer: 'https://accounts.google.com', clientId: 'id.apps.googleusercontent.com', clientSecret: 'GOCSPX-secret' };
  const github = { id: 'github', kind: 'github', name: 'GitHub', clientId: 'Ov23li', clientSecret: 'secret' };

  /** The JSON pointers of the issues of a refused config. */
  function paths(json: unknown): string[] {
    try {
      parseUpstreamConfig(json);
    } catch (e) {
      assert.ok(e instanceof PalisadeError);
      assert.equal(e.code, 'PAL_ERR_VALIDATION');
      return (e.errors ?? [{ path: '', message: e.message }]).map((i) => i.path);
    }
    assert.fail('expected the config to be refused');
  }

  it('accepts a valid file, as text or as a value', () => {
    const parsed = parseUpstreamConfig(JSON.stringify({ providers: [google, { ...github, allowedEmailDomains: ['corp.example'] }] }));
    assert.deepEqual(parsed, [google, { ...github, allowedEmailDomains: ['corp.example'] }]);
    assert.deepEqual(parseUpstreamConfig({ providers: [google] }), [google]);
  });

  it('names the bad field', () => {
    assert.deepEqual(paths({ providers: [{ ...google, clientSecret: undefined }] }), ['/providers/0/clientSecret']);
    assert.deepEqual(paths({ providers: [{ ...google, issuer: undefined }] }), ['/providers/0/issuer']);
    assert.deepEqual(paths({ providers: [github, { ...github, id: 'gh', tokenUrl: 'ftp://x' }] }), ['/providers/1/tokenUrl']);
    assert.deepEqual(paths({ providers: [{ ...google, tokenUrl: 'https://oauth2.googleapis.com/token' }] }), ['/providers/0/tokenUrl']);
    assert.deepEqual(paths({ providers: [{ ...github, issuer: 'https://github.com' }] }), ['/providers/0/issuer']);
    assert.deepEqual(paths({ providers: [google, google] }), ['/providers/1/id']);
    assert.deepEqual(paths({ providers: [{ ...google, id: 'Google/x' }] }), ['/providers/0/id']);
    assert.deepEqual(paths({ providers: [{ ...google, kind: 'saml' }] }), ['/providers/0/kind']);
    assert.deepEqual(paths({ providers: [{ ...google, allowedEmailDomains: ['@corp'] }] }), ['/providers/0/allowedEmailDomains/0']);
    assert.deepEqual(paths({ providers: [{ ...google, secret: 'typo' }] }), ['/providers/0/secret']);
  });

  it('says which field in the message, and refuses text that is not JSON', () => {
    assert.throws(() => parseUpstreamConfig({ providers: [{ ...google, clientId: '' }] }), /\/providers\/0\/clientId/);
    assert.throws(() => parseUpstreamConfig('{"providers": ['), /not valid JSON/);
  });
});
