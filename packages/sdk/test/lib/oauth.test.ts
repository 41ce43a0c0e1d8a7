import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError } from '@palisade/protocol';
import { Transport, normaliseServer, type FetchLike } from '../../src/lib/http.ts';
import { ClientCredentials, Discovery, basicAuth } from '../../src/lib/oauth.ts';
import { Palisade } from '../../src/client.ts';

const SERVER = 'https://palisade.test';

/** A fetch double for the OAuth endpoints: counts token requests, answers after `delayMs`. */
function oauthFetch(opts: { delayMs?: number; expiresIn?: number } = {}) {
  const calls = { discovery: 0, token: 0, api: [] as string[] };
  let n = 0;
  const fetch: FetchLike = async (input, init) => {
    const url = new URL(input);
    if (url.pathname === '/oauth2/.well-known/openid-configuration') {
      calls.discovery++;
      return Response.json({ issuer: `${SERVER}/oauth2`, token_endpoint: `${SERVER}/oauth2/token` });
    }
    if (url.pathname === '/oauth2/token') {
      calls.token++;
      assert.equal(new Headers(init.headers).get('authorization'), basicAuth('id', 'secret'));
      assert.equal(new URLSearchParams(String(init.body)).get('scope'), 'tasks');
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 5));
      return Response.json({ access_token: `tok-${++n}`, expires_in: opts.expiresIn ?? 900, token_type: 'Bearer' });
    }
    const auth = new Headers(init.headers).get('authorization') ?? '';
    calls.api.push(auth);
    // Only the newest token is accepted.
    if (auth !== `Bearer tok-${n}`) return Response.json({ code: 'PAL_ERR_TOKEN_INVALID', detail: 'expired' }, { status: 401 });
    return Response.json({ sub: 'id', clientId: 'id', scopes: ['tasks'] });
  };
  return { fetch, calls };
}

function source(fetch: FetchLike, now?: () => number) {
  const transport = new Transport({ server: SERVER, fetch });
  const options = { transport, discovery: new Discovery(transport), clientId: 'id', clientSecret: 'secret', ...(now ? { now } : {}) };
  return new ClientCredentials(options);
}

test('client_secret_basic form-urlencodes id and secret before base64', () => {
  assert.equal(basicAuth('a b', 'p:w+d'), `Basic ${btoa('a+b:p%3Aw%2Bd')}`);
});

test('concurrent callers share one token request, and the token is cached', async () => {
  const { fetch, calls } = oauthFetch({ delayMs: 20 });
  const cc = source(fetch);
  const tokens = await Promise.all(Array.from({ length: 10 }, () => cc.token({ forceRefresh: false })));
  assert.deepEqual(new Set(tokens), new Set(['tok-1']));
  assert.equal(calls.token, 1);
  assert.equal(calls.discovery, 1);
  assert.equal(await cc.token({ forceRefresh: false }), 'tok-1');
  assert.equal(calls.token, 1);
});

test('the token is replaced 60 s before it expires', async () => {
  const { fetch, calls } = oauthFetch({ expiresIn: 900 });
  let clock = 1_000_000;
  const cc = source(fetch, () => clock);
  assert.equal(await cc.token({ forceRefresh: false }), 'tok-1');
  clock += (900 - 61) * 1000;
  assert.equal(await cc.token({ forceRefresh: false }), 'tok-1');
  clock += 2000; // now 59 s before expiry
  assert.equal(await cc.token({ forceRefresh: false }), 'tok-2');
  assert.equal(calls.token, 2);
});

test('a forced refresh for a token already replaced by another caller does not fetch again', async () => {
  const { fetch, calls } = oauthFetch();
  const cc = source(fetch);
  await cc.token({ forceRefresh: false });
  const [a, b] = await Promise.all([cc.token({ forceRefresh: true, rejected: 'tok-1' }), cc.token({ forceRefresh: true, rejected: 'tok-1' })]);
  assert.equal(a, 'tok-2');
  assert.equal(b, 'tok-2');
  assert.equal(await cc.token({ forceRefresh: true, rejected: 'tok-1' }), 'tok-2');
  assert.equal(calls.token, 2);
});

test('a failed token request is not cached and reports the OAuth error', async () => {
  let fail = true;
  const fetch: FetchLike = async (input) => {
    if (input.endsWith('openid-configuration')) return Response.json({ issuer: 'x', token_endpoint: `${SERVER}/oauth2/token` });
    if (fail) return Response.json({ error: 'invalid_client', error_description: 'client authentication failed' }, { status: 401 });
    return Response.json({ access_token: 'good', expires_in: 900 });
  };
  const cc = source(fetch);
  await assert.rejects(cc.token({ forceRefresh: false }), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAUTHENTICATED');
  fail = false;
  assert.equal(await cc.token({ forceRefresh: false }), 'good');
});

test('Palisade retries once with a fresh token after a 401, concurrently sharing the refresh', async () => {
  const { fetch, calls } = oauthFetch();
  const palisade = new Palisade({ server: SERVER, clientId: 'id', clientSecret: 'secret', fetch });
  await palisade.me();
  assert.equal(calls.token, 1);
  // Another client takes a token: the double now accepts only tok-2, so the cached tok-1 is refused.
  const other = source(fetch);
  await other.token({ forceRefresh: false }); // tok-2 is now the only accepted one
  const results = await Promise.all([palisade.me(), palisade.me(), palisade.me()]);
  assert.equal(results.length, 3);
  assert.equal(calls.token, 3, 'one refresh for the three concurrent 401s');
  assert.deepEqual(calls.api.slice(-3), ['Bearer tok-3', 'Bearer tok-3', 'Bearer tok-3']);
});

test('a second 401 is not retried again and surfaces as PAL_ERR_TOKEN_INVALID', async () => {
  let tokenCalls = 0;
  const fetch: FetchLike = async (input) => {
    if (input.endsWith('openid-configuration')) return Response.json({ issuer: 'x', token_endpoint: `${SERVER}/oauth2/token` });
    if (input.endsWith('/oauth2/token')) return Response.json({ access_token: `t${++tokenCalls}`, expires_in: 900 });
    return Response.json({ code: 'PAL_ERR_TOKEN_INVALID', detail: 'wrong audience' }, { status: 401 });
  };
  const palisade = new Palisade({ server: SERVER, clientId: 'id', clientSecret: 'secret', fetch });
  await assert.rejects(palisade.agents(), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TOKEN_INVALID');
  assert.equal(tokenCalls, 2);
});

test('a static access token is sent as is and not retried', async () => {
  let apiCalls = 0;
  const fetch: FetchLike = async (_input, init) => {
    apiCalls++;
    assert.equal(new Headers(init.headers).get('authorization'), 'Bearer static');
    return Response.json({ code: 'PAL_ERR_TOKEN_INVALID' }, { status: 401 });
  };
  const palisade = new Palisade({ server: SERVER, accessToken: 'static', fetch });
  await assert.rejects(palisade.me(), PalisadeError);
  assert.equal(apiCalls, 1);
});

test('server URLs: https anywhere, http on loopback only, no credentials in the URL', () => {
  assert.equal(normaliseServer('https://palisade.example:8443/'), 'https://palisade.example:8443');
  assert.equal(normaliseServer('http://127.0.0.1:8080'), 'http://127.0.0.1:8080');
  assert.equal(normaliseServer('http://localhost:1'), 'http://localhost:1');
  assert.throws(() => normaliseServer('http://palisade.example'), /https/);
  assert.throws(() => normaliseServer('https://u:p@palisade.example'), PalisadeError);
  assert.throws(() => normaliseServer('not a url'), PalisadeError);
});

test('constructor refuses mixed or half credentials', () => {
  assert.throws(() => new Palisade({ server: SERVER, clientId: 'id' }), /go together/);
  assert.throws(() => new Palisade({ server: SERVER, clientId: 'id', clientSecret: 's', accessToken: 't' }), /one way/);
});
