/**
 * Sign-in and site management through the real popup, against a fake Palisade server speaking the
 * device authorization grant (RFC 8628), refresh-token rotation and the agent WebSocket.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { FakePalisade, launch, serveFixtures, type Browser } from '../support/harness.ts';

let browser: Browser;
let fixtures: Awaited<ReturnType<typeof serveFixtures>>;
let server: FakePalisade;
let popup: Page;
let approved = false;
const tokenRequests: Record<string, string>[] = [];
let generation = 1;

const jwt = (claims: object) => `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.x`;

before(async () => {
  fixtures = await serveFixtures();
  server = await new FakePalisade().listen();
  const O = server.origin;
  const json = (res: import('node:http').ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  server.routes.set('GET /oauth2/.well-known/openid-configuration', (_q, _b, res) =>
    json(res, 200, { issuer: `${O}/oauth2`, device_authorization_endpoint: `${O}/oauth2/device/auth`, token_endpoint: `${O}/oauth2/token` }),
  );
  server.routes.set('POST /oauth2/device/auth', (_q, body, res) => {
    const form = Object.fromEntries(new URLSearchParams(body));
    if (form.client_id !== 'palisade-extension' || form.scope !== 'openid offline_access agent') return json(res, 400, { error: 'invalid_client' });
    json(res, 200, { device_code: 'dc-1', user_code: 'WDJB-MJHT', verification_uri: `${O}/oauth2/device`, verification_uri_complete: `${O}/oauth2/device?user_code=WDJB-MJHT`, expires_in: 300, interval: 1 });
  });
  server.routes.set('GET /oauth2/device', (_q, _b, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>Enter code</title><p>Enter the code</p>'));
  server.routes.set('POST /oauth2/token', (_q, body, res) => {
    const form = Object.fromEntries(new URLSearchParams(body));
    tokenRequests.push(form);
    if (form.grant_type === 'urn:ietf:params:oauth:grant-type:device_code') {
      if (form.device_code !== 'dc-1') return json(res, 400, { error: 'invalid_grant' });
      if (!approved) return json(res, 400, { error: 'authorization_pending' });
      return json(res, 200, { access_token: 'at-1', refresh_token: 'rt-1', token_type: 'Bearer', expires_in: 900, id_token: jwt({ sub: 'u1', email: 'ada@example.com' }) });
    }
    if (form.grant_type === 'refresh_token') {
      if (form.refresh_token !== `rt-${generation}`) return json(res, 400, { error: 'invalid_grant' }); // rotated: an old one is refused
      generation += 1;
      return json(res, 200, { access_token: `at-${generation}`, refresh_token: `rt-${generation}`, token_type: 'Bearer', expires_in: 900 });
    }
    json(res, 400, { error: 'unsupported_grant_type' });
  });
  browser = await launch();
  popup = await browser.ctx.newPage();
  await popup.goto(`chrome-extension://${browser.extensionId}/popup.html`);
});

after(async () => {
  await browser?.close();
  await server?.close();
  await fixtures?.close();
});

const storage = () =>
  browser.worker.evaluate(async () => ({ local: await chrome.storage.local.get(null), session: await chrome.storage.session.get(null) }));

test('device sign-in from the popup: code shown, verification page opens, tokens stored, agent connects', async () => {
  await popup.locator('#server').fill(server.origin);
  await popup.locator('#insecure').waitFor({ state: 'visible' }); // plain http is allowed on 127.0.0.1, with a warning
  await popup.getByRole('button', { name: 'Sign in with a code' }).click();
  await popup.locator('#user-code', { hasText: 'WDJB-MJHT' }).waitFor();
  assert.equal(await popup.locator('#pending').isVisible(), true);

  const opened = browser.ctx.waitForEvent('page');
  await popup.getByRole('link', { name: 'Open the sign-in page' }).click();
  const verification = await opened;
  await verification.waitForURL(`${server.origin}/oauth2/device?user_code=WDJB-MJHT`);
  await verification.close();

  assert.ok(tokenRequests.length === 0 || tokenRequests.every((r) => r.grant_type?.endsWith('device_code')));
  approved = true; // the user enters the code on the server
  const hello = await server.waitFor((f) => f.type === 'hello');
  assert.deepEqual(server.tokens, ['at-1'], 'the access token travels in the subprotocol');
  assert.deepEqual(hello.grants, []);
  await popup.locator('#account', { hasText: 'as ada@example.com' }).waitFor();
  await popup.locator('#conn', { hasText: 'connected' }).waitFor();

  const { local, session } = await storage();
  assert.equal(local.refreshToken, 'rt-1');
  assert.equal(local.accessToken, undefined, 'the access token is not in local storage');
  assert.equal(session.accessToken, 'at-1');
  assert.equal(session.deviceFlow, undefined);
  assert.ok(tokenRequests.some((r) => r.grant_type?.endsWith('device_code') && r.client_id === 'palisade-extension'));
});

test('closed with 4401: the agent refreshes (rotating the refresh token) and reconnects with the new token', async () => {
  const reconnected = server.waitFor((f) => f.type === 'hello', 20_000, false);
  server.kick(4401, 'token expired');
  await reconnected;
  assert.deepEqual(server.tokens, ['at-1', 'at-2']);
  assert.deepEqual(tokenRequests.filter((r) => r.grant_type === 'refresh_token').map((r) => r.refresh_token), ['rt-1']);
  assert.equal((await storage()).local.refreshToken, 'rt-2', 'the newest refresh token is kept');
});

test('closed abnormally: the agent reconnects on its own', async () => {
  const reconnected = server.waitFor((f) => f.type === 'hello', 20_000, false);
  server.kick(1011, 'server restarting');
  await reconnected;
  assert.equal(server.tokens.at(-1), 'at-2', 'the still-valid token is reused');
});

test('add and remove a site in the popup: the permission is requested, the server gets grants frames', async () => {
  const site = fixtures.origin;
  await popup.locator('#origin').fill(`${site}/`);
  await popup.getByRole('button', { name: 'Add site' }).click();
  const added = await server.waitFor((f) => f.type === 'grants' && (f.grants as string[]).includes(site));
  assert.deepEqual(added.grants, [site]);
  await popup.locator('#sites li', { hasText: site }).waitFor();

  // An origin that is not http(s) is refused in the popup before any prompt.
  await popup.locator('#origin').fill('file:///etc');
  await popup.getByRole('button', { name: 'Add site' }).click();
  await popup.locator('#error', { hasText: 'scheme' }).waitFor();

  const removed = server.waitFor((f) => f.type === 'grants' && (f.grants as string[]).length === 0, 10_000, false);
  await popup.getByRole('button', { name: `Remove ${site}` }).click();
  await removed.catch(async (e: unknown) => {
    // Rare in CI (once): what the worker said, what the popup shows and what is stored, to tell a frame not sent from one lost.
    const shown = await popup.locator('#sites').innerText().catch(() => '?');
    const error = await popup.locator('#error').innerText().catch(() => '?');
    throw new Error(`${(e as Error).message}\npopup sites: ${JSON.stringify(shown)}; popup error: ${JSON.stringify(error)}; stored: ${JSON.stringify((await storage()).local.sites)}; agent connections: ${server.wss.clients.size}\nworker log (@ms since the test process started):\n${browser.workerLog.join('\n')}`, { cause: e });
  });
  assert.deepEqual(server.frames.filter((f) => f.type === 'grants').at(-1)?.grants, []);
  assert.deepEqual((await storage()).local.sites, []);
  assert.deepEqual(server.invalid, []);
});

test('sign out clears the tokens and closes the connection', async () => {
  const closed = new Promise<number>((resolve) => {
    for (const c of server.wss.clients) c.once('close', (code) => resolve(code));
  });
  await popup.getByRole('button', { name: 'Sign out' }).click();
  assert.equal(await closed, 1000);
  await popup.locator('#signed-out').waitFor({ state: 'visible' });
  const { local, session } = await storage();
  assert.equal(local.refreshToken, undefined);
  assert.equal(session.accessToken, undefined);
  assert.equal(local.server, server.origin, 'the server URL is remembered');
});

test('closed with 4410 (session revoked on the server): the refresh is refused and the extension signs out', async () => {
  await popup.getByRole('button', { name: 'Sign in with a code' }).click();
  await server.waitFor((f) => f.type === 'hello', 20_000, false);
  await popup.locator('#conn', { hasText: 'connected' }).waitFor();
  const refreshes = tokenRequests.filter((r) => r.grant_type === 'refresh_token').length;
  server.kick(4410, 'the session was revoked; sign in again');
  await popup.locator('#signed-out').waitFor({ state: 'visible' });
  assert.equal(tokenRequests.filter((r) => r.grant_type === 'refresh_token').length, refreshes + 1, 'one refresh was tried, and refused');
  const { local, session } = await storage();
  assert.equal(local.refreshToken, undefined);
  assert.equal(session.accessToken, undefined);
});
