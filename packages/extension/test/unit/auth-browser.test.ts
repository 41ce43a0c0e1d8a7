/**
 * Sign-in in a browser window (`Auth.signInWithBrowser`, `src/worker/auth.ts`) against a fake
 * `chrome.identity` and a fake server: what is pushed, launched and exchanged, every refusal, and
 * that the tokens land exactly where a device sign-in puts them.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Auth, CLIENT_ID, KEEP_ALIVE_MS, SCOPE, type Identity } from '../../src/worker/auth.ts';
import { MemoryKeyValue } from '../../src/worker/storage.ts';

const SERVER = 'https://palisade.example';
const ISSUER = `${SERVER}/oauth2`;
const EXTENSION_ID = 'abcdefghijklmnopabcdefghijklmnop';
const REDIRECT = `https://${EXTENSION_ID}.chromiumapp.org/`;
const REQUEST_URI = 'urn:ietf:params:oauth:request_uri:r-1';

const jwt = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
const S256 = (verifier: string) => createHash('sha256').update(verifier, 'ascii').digest('base64url');
const TOKENS = { access_token: 'at-1', refresh_token: 'rt-1', token_type: 'Bearer', expires_in: 900, id_token: jwt({ sub: 'u1', preferred_username: 'ada' }) };

type Answer = { status: number; body: unknown };
interface Request { url: string; method: string; form: [string, string][] }

/** A fake Palisade server: discovery, PAR, device authorization and token endpoints. */
function fakeServer(o: { discovery?: Record<string, unknown>; par?: (form: Record<string, string>) => Answer; token?: (form: Record<string, string>) => Answer } = {}) {
  const requests: Request[] = [];
  const routes: Record<string, (form: Record<string, string>) => Answer> = {
    [`${SERVER}/oauth2/.well-known/openid-configuration`]: () => ({
      status: 200,
      body: {
        issuer: ISSUER,
        authorization_endpoint: `${SERVER}/oauth2/auth`,
        pushed_authorization_request_endpoint: `${SERVER}/oauth2/request`,
        device_authorization_endpoint: `${SERVER}/oauth2/device/auth`,
        token_endpoint: `${SERVER}/oauth2/token`,
        code_challenge_methods_supported: ['S256'],
        authorization_response_iss_parameter_supported: true,
        ...o.discovery,
      },
    }),
    [`${SERVER}/oauth2/request`]: o.par ?? (() => ({ status: 201, body: { request_uri: REQUEST_URI, expires_in: 60 } })),
    [`${SERVER}/oauth2/device/auth`]: () => ({ status: 200, body: { device_code: 'dc-1', user_code: 'WDJB-MJHT', verification_uri: `${SERVER}/oauth2/device`, expires_in: 600, interval: 5 } }),
    [`${SERVER}/oauth2/token`]: o.token ?? (() => ({ status: 200, body: TOKENS })),
  };
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    const form = init?.body instanceof URLSearchParams ? [...init.body] : [];
    requests.push({ url, method: init?.method ?? 'GET', form });
    const route = routes[url];
    const r = route ? route(Object.fromEntries(form)) : { status: 404, body: {} };
    return new Response(JSON.stringify(r.body), { status: r.status });
  }) as typeof globalThis.fetch;
  const to = (path: string) => requests.filter((r) => r.url === `${SERVER}${path}`);
  return { fetch, requests, to };
}

/**
 * A fake `chrome.identity`: records each launch; `answer` decides what the window returns — from
 * the pushed request (what a server would redirect with) or by throwing what Chrome throws.
 */
function fakeIdentity(answer: (launched: URL) => string | Promise<string>) {
  const launched: { url: URL; interactive: boolean }[] = [];
  let onLaunch: () => void = () => {};
  const started = new Promise<void>((r) => (onLaunch = r));
  const identity: Identity = {
    getRedirectURL: () => REDIRECT,
    launchWebAuthFlow: async ({ url, interactive }) => {
      launched.push({ url: new URL(url), interactive });
      onLaunch();
      return answer(new URL(url));
    },
  };
  return { identity, launched, started };
}

/** What the server would redirect to once the user approves: the pushed `state`, a code, its issuer. */
const approve = (state: () => string | undefined, extra: Record<string, string> = {}) => () =>
  `${REDIRECT}?${new URLSearchParams({ code: 'code-1', state: state() ?? '', iss: ISSUER, ...extra })}`;

function setup(server: ReturnType<typeof fakeServer>, identity: Identity | undefined, o: { keepAlive?: () => void; timeoutMs?: number } = {}) {
  const local = new MemoryKeyValue();
  const session = new MemoryKeyValue();
  let changes = 0;
  const auth = new Auth({
    fetch: server.fetch,
    local,
    session,
    ...(identity ? { identity } : {}),
    sleep: () => new Promise(() => {}), // device polling never runs in these tests
    onChange: () => void changes++,
    ...(o.keepAlive ? { keepAlive: o.keepAlive } : {}),
    ...(o.timeoutMs ? { browserSignInTimeoutMs: o.timeoutMs } : {}),
  });
  return { auth, local, session, changes: () => changes };
}

/** The pushed request's form, as the server received it. */
const pushed = (server: ReturnType<typeof fakeServer>) => Object.fromEntries(server.to('/oauth2/request')[0]?.form ?? []);

async function refused(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error & { code?: string }) => {
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

/** Nothing of a sign-in was kept. */
function nothingStored(local: MemoryKeyValue, session: MemoryKeyValue): void {
  assert.equal(local.data.has('refreshToken'), false);
  assert.equal(local.data.has('account'), false);
  assert.equal(session.data.has('accessToken'), false);
  assert.equal(session.data.has('accessTokenExpiresAt'), false);
}

test('signs in: request pushed, window launched with its request_uri, code + verifier exchanged, tokens stored', async () => {
  const server = fakeServer();
  const { identity, launched } = fakeIdentity(approve(() => pushed(server).state));
  const { auth, local, session } = setup(server, identity);
  await auth.signInWithBrowser(`${SERVER}/anything`);

  // 1. The authorization request, pushed (RFC 9126) with exactly the parameters of the code flow.
  const par = server.to('/oauth2/request');
  assert.equal(par.length, 1);
  assert.equal(par[0]!.method, 'POST');
  assert.deepEqual(par[0]!.form.map(([k]) => k), ['response_type', 'client_id', 'scope', 'prompt', 'redirect_uri', 'state', 'code_challenge', 'code_challenge_method']);
  const p = pushed(server);
  assert.deepEqual({ ...p, state: '·', code_challenge: '·' }, {
    response_type: 'code', client_id: CLIENT_ID, scope: SCOPE, prompt: 'consent', redirect_uri: REDIRECT, state: '·', code_challenge: '·', code_challenge_method: 'S256',
  });
  assert.match(p.state!, /^[A-Za-z0-9_-]{43}$/, 'state: 32 random bytes');

  // 2. The window opens the authorization endpoint with only the client and the pushed request.
  assert.equal(launched.length, 1);
  assert.equal(launched[0]!.interactive, true);
  assert.equal(launched[0]!.url.href, `${SERVER}/oauth2/auth?${new URLSearchParams({ client_id: CLIENT_ID, request_uri: REQUEST_URI })}`);

  // 3. The exchange: exactly these fields, in this order; the verifier is the one behind the challenge.
  const exchange = server.to('/oauth2/token');
  assert.equal(exchange.length, 1);
  const form = exchange[0]!.form;
  assert.deepEqual(form.map(([k]) => k), ['grant_type', 'code', 'redirect_uri', 'client_id', 'code_verifier']);
  const body = Object.fromEntries(form);
  assert.deepEqual({ ...body, code_verifier: '·' }, { grant_type: 'authorization_code', code: 'code-1', redirect_uri: REDIRECT, client_id: CLIENT_ID, code_verifier: '·' });
  assert.match(body.code_verifier!, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(p.code_challenge, S256(body.code_verifier!), 'code_challenge = BASE64URL(SHA-256(code_verifier))');
  assert.notEqual(p.code_challenge, body.code_verifier);
  assert.ok(!JSON.stringify(launched[0]!.url.href).includes(body.code_verifier!), 'the verifier never travels through the browser');

  // 4. Stored like a device sign-in.
  assert.equal(auth.state, 'signed-in');
  assert.equal(auth.browserSignIn, false);
  assert.equal(auth.account, 'ada');
  assert.equal(auth.server, SERVER);
  assert.equal(local.data.get('server'), SERVER);
  assert.equal(local.data.get('insecure'), false);
  assert.equal(local.data.get('refreshToken'), 'rt-1');
  assert.equal(local.data.get('account'), 'ada');
  assert.equal(local.data.has('accessToken'), false, 'the access token is never in local storage');
  assert.equal(session.data.get('accessToken'), 'at-1');
  assert.ok(Number(session.data.get('accessTokenExpiresAt')) > Date.now() + 800_000);
  assert.equal(await auth.accessToken(), 'at-1');
  await auth.signOut();
  nothingStored(local, session);
});

test('the storage layout is exactly that of a device sign-in', async () => {
  const viaBrowser = fakeServer();
  const b = setup(viaBrowser, fakeIdentity(approve(() => pushed(viaBrowser).state)).identity);
  await b.auth.signInWithBrowser(SERVER);

  const device = fakeServer({ token: () => ({ status: 200, body: TOKENS }) });
  const local = new MemoryKeyValue();
  const session = new MemoryKeyValue();
  let done!: () => void;
  const signedIn = new Promise<void>((r) => (done = r));
  const d: Auth = new Auth({ fetch: device.fetch, local, session, sleep: async () => {}, onChange: () => d.state === 'signed-in' && done() });
  await d.signIn(SERVER);
  await signedIn;

  assert.deepEqual([...b.local.data.keys()].sort(), [...local.data.keys()].sort());
  assert.deepEqual([...b.session.data.keys()].sort(), [...session.data.keys()].sort());
  for (const k of ['server', 'insecure', 'refreshToken', 'account']) assert.deepEqual(b.local.data.get(k), local.data.get(k), k);
  assert.equal(b.session.data.get('accessToken'), session.data.get('accessToken'));
  await b.auth.signOut();
  await d.signOut();
});

test('without PAR the window opens the authorization endpoint with every parameter in its URL', async () => {
  const server = fakeServer({ discovery: { pushed_authorization_request_endpoint: undefined } });
  let state: string | undefined;
  const { identity, launched } = fakeIdentity(approve(() => state));
  const originalLaunch = identity.launchWebAuthFlow;
  identity.launchWebAuthFlow = (d) => {
    state = new URL(d.url).searchParams.get('state') ?? undefined;
    return originalLaunch(d);
  };
  const { auth } = setup(server, identity);
  await auth.signInWithBrowser(SERVER);
  assert.equal(server.to('/oauth2/request').length, 0);
  const url = launched[0]!.url;
  assert.equal(`${url.origin}${url.pathname}`, `${SERVER}/oauth2/auth`);
  assert.deepEqual([...url.searchParams.keys()], ['response_type', 'client_id', 'scope', 'prompt', 'redirect_uri', 'state', 'code_challenge', 'code_challenge_method']);
  assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(url.searchParams.get('redirect_uri'), REDIRECT);
  assert.equal(url.searchParams.get('prompt'), 'consent');
  const verifier = Object.fromEntries(server.to('/oauth2/token')[0]!.form).code_verifier!;
  assert.equal(url.searchParams.get('code_challenge'), S256(verifier));
  assert.equal(auth.state, 'signed-in');
  await auth.signOut();
});

test('every sign-in has its own state and verifier', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(approve(() => server.to('/oauth2/request').map((r) => Object.fromEntries(r.form)).at(-1)?.state));
  const { auth } = setup(server, identity);
  await auth.signInWithBrowser(SERVER);
  await auth.signOut();
  await auth.signInWithBrowser(SERVER);
  const states = server.to('/oauth2/request').map((r) => Object.fromEntries(r.form).state);
  const verifiers = server.to('/oauth2/token').map((r) => Object.fromEntries(r.form).code_verifier);
  assert.equal(new Set(states).size, 2);
  assert.equal(new Set(verifiers).size, 2);
  await auth.signOut();
});

test('state mismatch: refused, the code is never exchanged, nothing stored', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(approve(() => 'someone-elses-state'));
  const { auth, local, session } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_VALIDATION', /state mismatch/);
  assert.equal(server.to('/oauth2/token').length, 0);
  nothingStored(local, session);
  assert.equal(auth.state, 'signed-out');
  assert.equal(auth.browserSignIn, false);
  assert.match(auth.lastError ?? '', /state mismatch/, 'shown in the popup');
});

test('an answer from another issuer (RFC 9207) is refused', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(approve(() => pushed(server).state, { iss: 'https://evil.example/oauth2' }));
  const { auth, local, session } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_VALIDATION', /another issuer/);
  assert.equal(server.to('/oauth2/token').length, 0);
  nothingStored(local, session);
});

test('an error in the redirect is surfaced with its description (the user pressed Deny)', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(() => `${REDIRECT}?${new URLSearchParams({ error: 'access_denied', error_description: 'End-User aborted interaction', state: pushed(server).state!, iss: ISSUER })}`);
  const { auth, local, session } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAUTHENTICATED', /^sign-in was denied: End-User aborted interaction$/);
  assert.equal(auth.lastError, 'sign-in was denied: End-User aborted interaction');
  assert.equal(server.to('/oauth2/token').length, 0);
  nothingStored(local, session);
});

test('cancellation: the user closes the window', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(() => {
    throw new Error('The user did not approve access.'); // what Chromium rejects with when the window is closed
  });
  const { auth, local, session } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAUTHENTICATED', /cancelled: the window was closed/);
  assert.equal(server.to('/oauth2/token').length, 0);
  assert.equal(auth.state, 'signed-out');
  assert.equal(auth.browserSignIn, false);
  nothingStored(local, session);
});

test('cancellation from the popup: the window\'s late answer is ignored', async () => {
  const server = fakeServer();
  let release!: (url: string) => void;
  const { identity, started } = fakeIdentity(() => new Promise<string>((r) => (release = r)));
  const { auth, local, session } = setup(server, identity);
  const signIn = auth.signInWithBrowser(SERVER);
  await started;
  assert.equal(auth.browserSignIn, true, 'the popup shows that a window is open');
  auth.cancelSignIn();
  assert.equal(auth.browserSignIn, false);
  await refused(signIn, 'PAL_ERR_UNAUTHENTICATED', /cancelled/);
  release(approve(() => pushed(server).state)());
  await new Promise((r) => setImmediate(r));
  assert.equal(server.to('/oauth2/token').length, 0, 'the code the user approved afterwards is never exchanged');
  nothingStored(local, session);
  assert.equal(auth.state, 'signed-out');
});

test('cancelled while the code is being exchanged: the tokens that come back are not kept', async () => {
  let auth!: Auth;
  const server = fakeServer({
    token: () => {
      auth.cancelSignIn(); // the user pressed Cancel just as the window answered
      return { status: 200, body: TOKENS };
    },
  });
  const { identity } = fakeIdentity(approve(() => pushed(server).state));
  const s = setup(server, identity);
  auth = s.auth;
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAUTHENTICATED', /cancelled/);
  assert.equal(server.to('/oauth2/token').length, 1);
  nothingStored(s.local, s.session);
  assert.equal(auth.state, 'signed-out');
});

test('sign-out while the window is open abandons it too', async () => {
  const server = fakeServer();
  let release!: (url: string) => void;
  const { identity, started } = fakeIdentity(() => new Promise<string>((r) => (release = r)));
  const { auth, local, session } = setup(server, identity);
  const signIn = auth.signInWithBrowser(SERVER);
  await started;
  await auth.signOut();
  await refused(signIn, 'PAL_ERR_UNAUTHENTICATED', /cancelled/);
  release(approve(() => pushed(server).state)());
  await new Promise((r) => setImmediate(r));
  assert.equal(server.to('/oauth2/token').length, 0);
  nothingStored(local, session);
});

// What the real server answers: configured with other extension ids, and with none.
for (const description of ["redirect_uri did not match any of the client's registered redirect_uris", 'requested response_type is not allowed for this client']) {
  test(`an extension id the server is not configured with ("${description}"): a clear error before any window opens; the device flow still works`, async () => {
    const server = fakeServer({ par: () => ({ status: 400, body: { error: 'invalid_request', error_description: description } }) });
    const { identity, launched } = fakeIdentity(() => assert.fail('no window'));
    const { auth, local, session } = setup(server, identity);
    await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_ORIGIN_REFUSED', new RegExp(`does not allow sign-in in a browser window for this extension \\(id ${EXTENSION_ID}\\).*--extension-id ${EXTENSION_ID}.*Sign in with a code`));
    assert.equal(launched.length, 0);
    assert.match(auth.lastError ?? '', /--extension-id/);
    assert.ok(auth.lastError?.includes(description), 'with what the server said');
    nothingStored(local, session);
    const flow = await auth.signIn(SERVER);
    assert.equal(flow.userCode, 'WDJB-MJHT');
    assert.equal(auth.state, 'pending');
    assert.equal(auth.lastError, undefined);
    auth.cancelSignIn();
  });
}

test('other refusals of the pushed request are surfaced as the server said them', async () => {
  const server = fakeServer({ par: () => ({ status: 400, body: { error: 'invalid_scope', error_description: 'requested scope is not allowed' } }) });
  const { identity, launched } = fakeIdentity(() => assert.fail('no window'));
  const { auth } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAUTHENTICATED', /refused the sign-in \(invalid_scope\): requested scope is not allowed/);
  assert.equal(launched.length, 0);
  const garbage = fakeServer({ par: () => ({ status: 201, body: { request_uri: 42 } }) });
  await refused(setup(garbage, identity).auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAVAILABLE', /not valid \(HTTP 201\)/);
  assert.equal(launched.length, 0);
});

test('endpoints on another origin than the server are refused before anything is sent there', async () => {
  for (const [key, value] of [
    ['authorization_endpoint', 'https://evil.example/auth'],
    ['pushed_authorization_request_endpoint', 'https://evil.example/request'],
    ['token_endpoint', 'https://evil.example/token'],
    ['authorization_endpoint', 'http://palisade.example/oauth2/auth'],
  ] as const) {
    const server = fakeServer({ discovery: { [key]: value } });
    const { identity, launched } = fakeIdentity(() => assert.fail('no window'));
    await refused(setup(server, identity).auth.signInWithBrowser(SERVER), 'PAL_ERR_URL_REFUSED', /another origin/);
    assert.deepEqual(server.requests.map((r) => r.url), [`${SERVER}/oauth2/.well-known/openid-configuration`], key);
    assert.equal(launched.length, 0);
  }
});

test('a server without an authorization endpoint, or without S256, is refused before any window opens', async () => {
  const { identity, launched } = fakeIdentity(() => assert.fail('no window'));
  await refused(setup(fakeServer({ discovery: { authorization_endpoint: undefined } }), identity).auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAVAILABLE', /sign in with a code/);
  await refused(setup(fakeServer({ discovery: { code_challenge_methods_supported: ['plain'] } }), identity).auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAVAILABLE', /S256/);
  await refused(setup(fakeServer({ discovery: { issuer: 7 } }), identity).auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAVAILABLE', /discovery document is not valid/);
  assert.equal(launched.length, 0);
});

test('a refused exchange (invalid_grant) is surfaced; nothing stored', async () => {
  const server = fakeServer({ token: () => ({ status: 400, body: { error: 'invalid_grant', error_description: 'grant request is invalid' } }) });
  const { identity } = fakeIdentity(approve(() => pushed(server).state));
  const { auth, local, session } = setup(server, identity);
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAUTHENTICATED', /\(invalid_grant\): grant request is invalid/);
  nothingStored(local, session);
  assert.equal(auth.state, 'signed-out');
});

test('an invalid token answer is refused; nothing stored', async () => {
  for (const body of [{ refresh_token: 'rt' }, { access_token: '' }, { access_token: 'x'.repeat(9000) }, 'not json']) {
    const server = fakeServer({ token: () => ({ status: 200, body }) });
    const { identity } = fakeIdentity(approve(() => pushed(server).state));
    const { auth, local, session } = setup(server, identity);
    await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_UNAVAILABLE', /token answer is not valid/);
    nothingStored(local, session);
  }
});

test('one window at a time; a second request is refused while one is open', async () => {
  const server = fakeServer();
  let release!: (url: string) => void;
  const { identity, started, launched } = fakeIdentity(() => new Promise<string>((r) => (release = r)));
  const { auth } = setup(server, identity);
  const first = auth.signInWithBrowser(SERVER);
  await started;
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_CONFLICT', /already open/);
  release(approve(() => pushed(server).state)());
  await first;
  assert.equal(launched.length, 1);
  assert.equal(auth.state, 'signed-in');
  await auth.signOut();
});

test('a window left open past the time limit is given up', async () => {
  const server = fakeServer();
  const { identity } = fakeIdentity(() => new Promise<string>(() => {}));
  const { auth } = setup(server, identity, { timeoutMs: 20 });
  await refused(auth.signInWithBrowser(SERVER), 'PAL_ERR_TIMEOUT', /open too long/);
  assert.equal(auth.browserSignIn, false);
});

test('the worker is kept alive while the window is open, and only then', async (t: TestContext) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const server = fakeServer();
  let release!: (url: string) => void;
  const { identity, started } = fakeIdentity(() => new Promise<string>((r) => (release = r)));
  let pings = 0;
  const { auth } = setup(server, identity, { keepAlive: () => void pings++ });
  const signIn = auth.signInWithBrowser(SERVER);
  await started;
  t.mock.timers.tick(KEEP_ALIVE_MS * 3);
  assert.equal(pings, 3);
  release(approve(() => pushed(server).state)());
  await signIn;
  t.mock.timers.tick(KEEP_ALIVE_MS * 3);
  assert.equal(pings, 3, 'stopped once the window answered');
  await auth.signOut();
});

test('server URL rules are those of the device flow; without chrome.identity the method is unavailable', async () => {
  const server = fakeServer();
  const { identity, launched } = fakeIdentity(() => assert.fail('no window'));
  await refused(setup(server, identity).auth.signInWithBrowser('http://palisade.example'), 'PAL_ERR_URL_REFUSED', /https/);
  await refused(setup(server, undefined).auth.signInWithBrowser(SERVER), 'PAL_ERR_INTERNAL', /not available/);
  assert.equal(server.requests.length, 0);
  assert.equal(launched.length, 0);
});
