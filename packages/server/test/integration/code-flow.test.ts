/**
 * Authorization code + PKCE (RFC 7636, S256 only) for the CLI on a loopback redirect (RFC 8252) and
 * the extension through launchWebAuthFlow, and the attacks it must stop: a code used twice, PKCE
 * missing or `plain`, a wrong verifier, a redirect URI that does not match exactly.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { ADMIN, Browser, createAdmin, readForm, startTestServer, type TestServer } from '../support/harness.ts';

const EXTENSION_ID = 'abcdefghijklmnopabcdefghijklmnop';
const b64u = (b: Buffer) => b.toString('base64url');

describe('authorization code + PKCE', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ extensionIds: [EXTENSION_ID] });
    await createAdmin(t);
  });
  after(async () => t?.close());

  const pkce = () => {
    const verifier = b64u(randomBytes(32));
    return { verifier, challenge: b64u(createHash('sha256').update(verifier).digest()) };
  };
  // `offline_access` (a refresh token) needs `prompt=consent` (OpenID Connect Core §11).
  const authorizeUrl = (params: Record<string, string>) => `/oauth2/auth?${new URLSearchParams({ response_type: 'code', scope: 'openid offline_access tasks', prompt: 'consent', ...params })}`;

  /** Opens the authorization URL, signs in and approves; returns where the browser is sent. */
  async function approve(url: string): Promise<URL> {
    const b = new Browser(t);
    let page = await b.request(url);
    const login = readForm(page.body);
    page = await b.request(login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    assert.ok(page.body.includes('id="approve"'), `consent page expected: ${page.status} ${page.body.slice(0, 300)}`);
    const consent = readForm(page.body);
    page = await b.request(consent.action, { method: 'POST', form: {} });
    assert.ok(page.location, `redirected to the client: ${page.status} ${page.body.slice(0, 300)}`);
    return new URL(page.location);
  }
  const token = (body: Record<string, string>) => t.fetch('/oauth2/token', { method: 'POST', body: new URLSearchParams(body) });

  it('the CLI signs in on a loopback redirect with any port; the code gives rotating tokens for a session', async () => {
    const { verifier, challenge } = pkce();
    const redirect = 'http://127.0.0.1:49152/callback';
    const state = b64u(randomBytes(16));
    const back = await approve(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state }));
    assert.equal(`${back.origin}${back.pathname}`, redirect);
    assert.equal(back.searchParams.get('state'), state);
    const res = await token({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: redirect, client_id: 'palisade-cli', code_verifier: verifier });
    const tokens = (await res.json()) as { access_token: string; refresh_token: string };
    assert.equal(res.status, 200, JSON.stringify(tokens));
    assert.ok(tokens.refresh_token);
    assert.equal(typeof decodeJwt(tokens.access_token).gid, 'string', 'the token names its session');
    assert.equal((await t.fetch('/api/v1/me', { token: tokens.access_token })).status, 200);
  });

  it('a second sign-in in the same browser (an existing session and grant) is approved again', async () => {
    const b = new Browser(t);
    for (let i = 0; i < 2; i++) {
      const { verifier, challenge } = pkce();
      const redirect = 'http://127.0.0.1:50010/callback';
      let page = await b.request(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: `s${i}` }));
      if (page.body.includes('name="password"')) {
        const login = readForm(page.body);
        page = await b.request(login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
      } else {
        assert.equal(i, 1, 'the second time the browser is already signed in');
      }
      assert.ok(page.body.includes('id="approve"'), `consent ${i}: ${page.status} ${page.body.slice(0, 200)}`);
      const consent = readForm(page.body);
      page = await b.request(consent.action, { method: 'POST', form: {} });
      const back = new URL(page.location!);
      assert.equal(back.searchParams.get('state'), `s${i}`);
      const res = await token({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: redirect, client_id: 'palisade-cli', code_verifier: verifier });
      assert.equal(res.status, 200, `token ${i}`);
    }
  });

  it('a code used twice is refused, and the tokens it already gave are revoked', async () => {
    const { verifier, challenge } = pkce();
    const redirect = 'http://127.0.0.1:50000/callback';
    const back = await approve(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 's' }));
    const body = { grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: redirect, client_id: 'palisade-cli', code_verifier: verifier };
    const first = (await (await token(body)).json()) as { access_token: string; refresh_token: string };
    assert.ok(first.refresh_token);
    const second = await token(body);
    assert.equal(second.status, 400);
    assert.equal(((await second.json()) as { error: string }).error, 'invalid_grant');
    const me = await t.fetch('/api/v1/me', { token: first.access_token });
    assert.equal(me.status, 401, 'the access token from the stolen code no longer works');
    assert.equal(((await me.json()) as { code: string }).code, 'PAL_ERR_SESSION_REVOKED');
    assert.equal((await token({ grant_type: 'refresh_token', refresh_token: first.refresh_token, client_id: 'palisade-cli' })).status, 400, 'nor its refresh token');
  });

  it('PKCE is required, S256 only, and the verifier must match', async () => {
    const redirect = 'http://127.0.0.1:50001/callback';
    const b = new Browser(t);
    const missing = await b.request(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, state: 's' }));
    assert.equal(new URL(missing.location!).searchParams.get('error'), 'invalid_request', 'no code_challenge');
    assert.match(new URL(missing.location!).searchParams.get('error_description')!, /PKCE/);
    const { verifier, challenge } = pkce();
    const plain = await b.request(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: verifier, code_challenge_method: 'plain', state: 's' }));
    assert.equal(new URL(plain.location!).searchParams.get('error'), 'invalid_request', 'plain is refused');
    const back = await approve(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 's' }));
    const wrong = await token({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: redirect, client_id: 'palisade-cli', code_verifier: pkce().verifier });
    assert.equal(wrong.status, 400);
    assert.equal(((await wrong.json()) as { error: string }).error, 'invalid_grant');
  });

  it('the redirect URI must match exactly (only the loopback port may vary), and a mismatch never redirects', async () => {
    const { challenge } = pkce();
    for (const redirect of ['http://127.0.0.1:50002/other', 'http://localhost:50002/callback', 'https://127.0.0.1:50002/callback', 'http://127.0.0.1.evil.example/callback', 'https://evil.example/callback']) {
      const b = new Browser(t);
      const res = await b.request(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 's' }));
      assert.equal(res.location, undefined, `${redirect}: no redirect`);
      assert.equal(res.status, 400, redirect);
      assert.match(res.body, /redirect_uri/, redirect);
    }
    // The code is bound to the redirect it was issued for.
    const { verifier, challenge: c2 } = pkce();
    const back = await approve(authorizeUrl({ client_id: 'palisade-cli', redirect_uri: 'http://127.0.0.1:50003/callback', code_challenge: c2, code_challenge_method: 'S256', state: 's' }));
    const res = await token({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: 'http://127.0.0.1:50004/callback', client_id: 'palisade-cli', code_verifier: verifier });
    assert.equal(res.status, 400);
  });

  it('the extension signs in through its chromiumapp.org redirect, for the configured extension ids only', async () => {
    const { verifier, challenge } = pkce();
    const redirect = `https://${EXTENSION_ID}.chromiumapp.org/`;
    const back = await approve(`/oauth2/auth?${new URLSearchParams({ response_type: 'code', client_id: 'palisade-extension', scope: 'openid offline_access agent', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 'x' })}`);
    assert.equal(`${back.origin}${back.pathname}`, redirect);
    const res = await token({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: redirect, client_id: 'palisade-extension', code_verifier: verifier });
    assert.equal(res.status, 200);
    const other = await new Browser(t).request(`/oauth2/auth?${new URLSearchParams({ response_type: 'code', client_id: 'palisade-extension', scope: 'openid offline_access agent', redirect_uri: 'https://ponmlkjihgfedcbaponmlkjihgfedcba.chromiumapp.org/', code_challenge: challenge, code_challenge_method: 'S256' })}`);
    assert.equal(other.status, 400, 'another extension id is refused');
  });

  it('no implicit or hybrid flow: only response_type=code', async () => {
    const { challenge } = pkce();
    const res = await new Browser(t).request(`/oauth2/auth?${new URLSearchParams({ response_type: 'id_token token', client_id: 'palisade-cli', scope: 'openid', redirect_uri: 'http://127.0.0.1:50005/callback', code_challenge: challenge, code_challenge_method: 'S256', nonce: 'n' })}`);
    const error = res.location ? new URL(res.location).searchParams.get('error') ?? new URLSearchParams(new URL(res.location).hash.slice(1)).get('error') : undefined;
    assert.ok(res.status === 400 || error === 'unsupported_response_type', `refused: ${res.status} ${res.location ?? res.body.slice(0, 200)}`);
  });
});
