import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Auth, CLIENT_ID, SCOPE, accountFromIdToken, agentSocketUrl, checkServerUrl } from '../../src/worker/auth.ts';
import { MemoryKeyValue } from '../../src/worker/storage.ts';

const SERVER = 'https://palisade.example';

test('server URL: https always, http only on loopback (flagged insecure), nothing else', () => {
  assert.deepEqual(checkServerUrl('https://palisade.example/ignored/path'), { server: SERVER, insecure: false });
  assert.deepEqual(checkServerUrl('http://127.0.0.1:8443'), { server: 'http://127.0.0.1:8443', insecure: true });
  assert.deepEqual(checkServerUrl('http://localhost:8443'), { server: 'http://localhost:8443', insecure: true });
  assert.throws(() => checkServerUrl('http://palisade.example'), { code: 'PAL_ERR_URL_REFUSED' });
  assert.throws(() => checkServerUrl('ws://127.0.0.1'), { code: 'PAL_ERR_URL_REFUSED' });
  assert.throws(() => checkServerUrl('https://user:pw@palisade.example'), { code: 'PAL_ERR_URL_REFUSED' });
  assert.throws(() => checkServerUrl('nonsense'), { code: 'PAL_ERR_VALIDATION' });
  assert.equal(agentSocketUrl(SERVER), 'wss://palisade.example/ws/agent');
  assert.equal(agentSocketUrl('http://127.0.0.1:9'), 'ws://127.0.0.1:9/ws/agent');
});

type Handler = (url: string, form: URLSearchParams) => { status: number; body: unknown };

function oauth(tokenAnswers: { status: number; body: unknown }[], discovery: Record<string, string> = {}) {
  const requests: { url: string; form: Record<string, string> }[] = [];
  const routes: Record<string, Handler> = {
    [`${SERVER}/oauth2/.well-known/openid-configuration`]: () => ({
      status: 200,
      body: { device_authorization_endpoint: `${SERVER}/oauth2/device/auth`, token_endpoint: `${SERVER}/oauth2/token`, ...discovery },
    }),
    [`${SERVER}/oauth2/device/auth`]: () => ({
      status: 200,
      body: { device_code: 'dc-1', user_code: 'ABCD-EFGH', verification_uri: `${SERVER}/oauth2/device`, verification_uri_complete: `${SERVER}/oauth2/device?user_code=ABCD-EFGH`, expires_in: 600, interval: 2 },
    }),
    [`${SERVER}/oauth2/token`]: () => tokenAnswers.shift() ?? { status: 400, body: { error: 'authorization_pending' } },
  };
  const fetchFake = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    const form = new URLSearchParams(init?.body instanceof URLSearchParams ? init.body : '');
    requests.push({ url, form: Object.fromEntries(form) });
    const route = routes[url];
    const r = route ? route(url, form) : { status: 404, body: {} };
    return new Response(JSON.stringify(r.body), { status: r.status });
  }) as typeof fetch;
  return { fetch: fetchFake, requests };
}

function makeAuth(f: typeof fetch) {
  const local = new MemoryKeyValue();
  const session = new MemoryKeyValue();
  const sleeps: number[] = [];
  let settled!: () => void;
  const changed = new Promise<void>((r) => (settled = r));
  const auth: Auth = new Auth({
    fetch: f,
    local,
    session,
    sleep: async (ms) => void sleeps.push(ms),
    onChange: () => {
      if (auth.state !== 'pending') settled();
    },
  });
  return { auth, local, session, sleeps, changed };
}

const jwt = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

test('device grant: polls at the interval, honours slow_down, stores the tokens where they belong', async () => {
  const o = oauth([
    { status: 400, body: { error: 'authorization_pending' } },
    { status: 400, body: { error: 'slow_down' } },
    { status: 400, body: { error: 'authorization_pending' } },
    { status: 200, body: { access_token: 'at-1', refresh_token: 'rt-1', expires_in: 900, id_token: jwt({ sub: 'u1', email: 'ada@example.com' }) } },
  ]);
  const { auth, local, session, sleeps, changed } = makeAuth(o.fetch);
  const flow = await auth.signIn(SERVER);
  assert.equal(flow.userCode, 'ABCD-EFGH');
  assert.equal(auth.state, 'pending');
  assert.deepEqual(o.requests[1]?.form, { client_id: CLIENT_ID, scope: SCOPE });
  await changed;
  assert.equal(auth.state, 'signed-in');
  assert.equal(auth.account, 'ada@example.com');
  assert.deepEqual(sleeps, [2000, 2000, 7000, 7000], 'slow_down adds 5 s to the interval from then on');
  const poll = o.requests.find((r) => r.url.endsWith('/token'));
  assert.deepEqual(poll?.form, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'dc-1', client_id: CLIENT_ID });
  assert.equal(local.data.get('refreshToken'), 'rt-1');
  assert.equal(local.data.has('accessToken'), false, 'the access token is never in local storage');
  assert.equal(session.data.get('accessToken'), 'at-1');
  assert.equal(session.data.has('deviceFlow'), false);
  assert.equal(await auth.accessToken(), 'at-1');
  await auth.signOut();
  assert.equal(local.data.has('refreshToken'), false);
  assert.equal(session.data.has('accessToken'), false);
});

test('device grant: access_denied stops polling and signs out with a reason', async () => {
  const o = oauth([{ status: 400, body: { error: 'access_denied' } }]);
  const { auth, local, changed } = makeAuth(o.fetch);
  await auth.signIn(SERVER);
  await changed;
  assert.equal(auth.state, 'signed-out');
  assert.match(auth.lastError ?? '', /denied/);
  assert.equal(local.data.has('refreshToken'), false);
  assert.equal(o.requests.filter((r) => r.url.endsWith('/token')).length, 1);
});

test('device grant: expired_token stops polling', async () => {
  const o = oauth([{ status: 400, body: { error: 'expired_token' } }]);
  const { auth, changed } = makeAuth(o.fetch);
  await auth.signIn(SERVER);
  await changed;
  assert.equal(auth.state, 'signed-out');
  assert.match(auth.lastError ?? '', /expired/);
});

test('endpoints on another origin than the server are refused', async () => {
  const o = oauth([], { token_endpoint: 'https://evil.example/token' });
  const { auth } = makeAuth(o.fetch);
  await assert.rejects(auth.signIn(SERVER), { code: 'PAL_ERR_URL_REFUSED' });
  assert.equal(o.requests.length, 1, 'the device code was never requested');
});

test('refresh tokens rotate: the newest one is always kept and used', async () => {
  const o = oauth([
    { status: 200, body: { access_token: 'at-2', refresh_token: 'rt-2', expires_in: 900 } },
    { status: 200, body: { access_token: 'at-3', refresh_token: 'rt-3', expires_in: 900 } },
  ]);
  const { auth, local, session } = makeAuth(o.fetch);
  await local.set({ server: SERVER, refreshToken: 'rt-1' });
  await session.set({ accessToken: 'old', accessTokenExpiresAt: Date.now() + 30_000 }); // within the refresh margin
  await auth.load();
  assert.equal(await auth.accessToken(), 'at-2');
  assert.equal(local.data.get('refreshToken'), 'rt-2');
  assert.equal(await auth.refresh(), 'at-3');
  const used = o.requests.filter((r) => r.form.grant_type === 'refresh_token').map((r) => r.form.refresh_token);
  assert.deepEqual(used, ['rt-1', 'rt-2']);
  assert.equal(local.data.get('refreshToken'), 'rt-3');
  await auth.signOut();
});

test('concurrent refreshes share one request', async () => {
  const o = oauth([{ status: 200, body: { access_token: 'at-2', refresh_token: 'rt-2', expires_in: 900 } }]);
  const { auth, local } = makeAuth(o.fetch);
  await local.set({ server: SERVER, refreshToken: 'rt-1' });
  const [a, b] = await Promise.all([auth.refresh(), auth.refresh()]);
  assert.equal(a, 'at-2');
  assert.equal(b, 'at-2');
  assert.equal(o.requests.filter((r) => r.form.grant_type === 'refresh_token').length, 1);
  await auth.signOut();
});

test('invalid_grant on refresh signs out; sign-out clears every token', async () => {
  const o = oauth([{ status: 400, body: { error: 'invalid_grant' } }]);
  const { auth, local, session } = makeAuth(o.fetch);
  await local.set({ server: SERVER, refreshToken: 'rt-1', account: 'ada' });
  await session.set({ accessToken: 'x', accessTokenExpiresAt: 0 });
  await auth.load();
  assert.equal(await auth.accessToken(), undefined);
  assert.equal(auth.state, 'signed-out');
  assert.equal(local.data.has('refreshToken'), false);
  assert.equal(session.data.has('accessToken'), false);
  assert.equal(local.data.get('server'), SERVER, 'the server URL is kept');
});

test('accountFromIdToken reads a display label and tolerates garbage', () => {
  assert.equal(accountFromIdToken(jwt({ sub: 's', preferred_username: 'ada' })), 'ada');
  assert.equal(accountFromIdToken(jwt({ sub: 's' })), 's');
  assert.equal(accountFromIdToken('garbage'), undefined);
  assert.equal(accountFromIdToken('a.!!!.c'), undefined);
});
