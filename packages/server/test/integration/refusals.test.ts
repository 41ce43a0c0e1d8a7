/**
 * Bad input and bad credentials, each refused with a clear structured error that changes nothing:
 * malformed task, unknown recipe, unknown field, site not granted, `javascript:` URL, code steps,
 * oversized body and frame, no token, expired / wrong-audience / foreign-key / `alg: none` tokens,
 * wrong `Origin`, and a token in the URL.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, generateKeyPair, importJWK, type JWK } from 'jose';
import { WS_BEARER_PREFIX, WS_SUBPROTOCOL, type Problem } from '@palisade/protocol';
import { SyntheticAgent, rawAgentSocket } from '../support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';

const SITE = 'http://127.0.0.1:9';
const OTHER = 'http://localhost:9';

describe('refusals', () => {
  let t: TestServer;
  let token: string;
  let agentToken: string;
  let agent: SyntheticAgent;
  let signingKey: JWK;

  const post = (body: unknown, headers: Record<string, string> = {}) =>
    t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  async function problem(res: Response, status: number, code: string): Promise<Problem> {
    assert.equal(res.status, status, `status for ${code}`);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const p = (await res.json()) as Problem;
    assert.equal(p.code, code);
    assert.equal(p.type, `urn:palisade:error:${code}`);
    assert.equal(p.status, status);
    assert.ok(p.detail && p.detail.length > 0, 'a human-readable detail');
    assert.ok(!JSON.stringify(p).includes('    at '), 'no stack trace');
    return p;
  }

  /** Nothing was stored: no task exists and no submission was accepted. */
  async function nothingChanged(): Promise<void> {
    assert.equal((await t.server.store.tasks.listUnfinished()).length, 0);
    assert.equal(t.securityEvents.filter((e) => e.activity_name === 'task.submit').length, 0);
  }

  before(async () => {
    t = await startTestServer({ authTimeoutMs: 1000 });
    await createAdmin(t);
    agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    agent = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], onTask: () => 'ignore' });
    ({ token } = await apiClient(t));
    signingKey = t.server.keys.set.keys.find((k) => k.status === 'current')!.jwk;
  });
  after(async () => {
    agent?.close();
    await t?.close();
  });

  it('malformed JSON body', async () => {
    await problem(await post('{"recipe": '), 400, 'PAL_ERR_VALIDATION');
    await nothingChanged();
  });

  it('malformed task: wrong types', async () => {
    const p = await problem(await post({ site: SITE, steps: 'navigate' }), 400, 'PAL_ERR_VALIDATION');
    assert.ok(p.errors?.some((e) => e.path === '/steps'), JSON.stringify(p.errors));
    await nothingChanged();
  });

  it('neither recipe nor steps', async () => {
    await problem(await post({ input: {} }), 400, 'PAL_ERR_VALIDATION');
    await nothingChanged();
  });

  it('unknown recipe', async () => {
    const p = await problem(await post({ recipe: 'no-such-recipe' }), 404, 'PAL_ERR_UNKNOWN_RECIPE');
    assert.match(p.detail!, /no-such-recipe/);
    await nothingChanged();
  });

  it('unknown field at the top and inside a step', async () => {
    const top = await problem(await post({ site: SITE, steps: [{ type: 'navigate', url: SITE }], priority: 'high' }), 400, 'PAL_ERR_VALIDATION');
    assert.ok(top.errors?.some((e) => e.path === '/priority'), JSON.stringify(top.errors));
    const inner = await problem(await post({ site: SITE, steps: [{ type: 'navigate', url: SITE, script: 'x' }] }), 400, 'PAL_ERR_VALIDATION');
    assert.ok(inner.errors?.some((e) => e.path.startsWith('/steps/0')), JSON.stringify(inner.errors));
    await nothingChanged();
  });

  it('site not granted to any connected agent', async () => {
    const p = await problem(await post({ site: OTHER, steps: [{ type: 'navigate', url: `${OTHER}/` }] }), 403, 'PAL_ERR_SITE_NOT_GRANTED');
    assert.match(p.detail!, /localhost:9/);
    await nothingChanged();
  });

  for (const url of ['javascript:alert(1)', 'data:text/html,hi', 'file:///etc/passwd', 'chrome://settings', `${OTHER}/elsewhere`]) {
    it(`navigation to ${url.split(':')[0]}: refused`, async () => {
      const p = await problem(await post({ site: SITE, steps: [{ type: 'navigate', url }] }), 400, 'PAL_ERR_URL_REFUSED');
      assert.ok(p.errors?.some((e) => e.path === '/steps/0/url'));
      await nothingChanged();
    });
  }

  it('a javascript: site is refused', async () => {
    await problem(await post({ site: 'javascript:alert(1)', steps: [{ type: 'navigate', url: 'javascript:alert(1)' }] }), 400, 'PAL_ERR_URL_REFUSED');
    await nothingChanged();
  });

  for (const type of ['waitForExpression', 'customStep']) {
    it(`${type} steps are refused`, async () => {
      const p = await problem(await post({ site: SITE, steps: [{ type: 'navigate', url: SITE }, { type, expression: '1' }] }), 400, 'PAL_ERR_STEP_REFUSED');
      assert.ok(p.errors?.some((e) => e.path === '/steps/1/type'));
      await nothingChanged();
    });
  }

  it('oversized body', async () => {
    const big = { site: SITE, steps: [{ type: 'change', selectors: ['#q'], value: 'x'.repeat(t.server.config.maxBodyBytes) }] };
    await problem(await post(big), 413, 'PAL_ERR_FRAME_TOO_LARGE');
    await nothingChanged();
  });

  it('no token', async () => {
    const res = await t.fetch('/api/v1/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }] }) });
    await problem(res, 401, 'PAL_ERR_UNAUTHENTICATED');
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'api.authenticate' && e.status === 'Failure' && e.status_code === 'PAL_ERR_UNAUTHENTICATED'));
    await nothingChanged();
  });

  async function forged(claims: Record<string, unknown>, opts: { key?: JWK; alg?: string } = {}): Promise<string> {
    const key = await importJWK(opts.key ?? signingKey, 'ES256');
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ client_id: 'palisade-cli', scope: 'tasks agent', ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: (opts.key ?? signingKey).kid })
      .setIssuer(String(claims.iss ?? t.server.issuer))
      .setAudience(String(claims.aud ?? t.server.config.audience))
      .setSubject('nobody')
      .setIssuedAt(now - 60)
      .setExpirationTime(Number(claims.exp ?? now + 600))
      .sign(key);
  }

  it('expired, wrong-audience, wrong-issuer, foreign-key and alg:none tokens', async () => {
    const past = Math.floor(Date.now() / 1000) - 120;
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const { exportJWK } = await import('jose');
    const foreignKey = { ...(await exportJWK(privateKey)), kid: signingKey.kid } as JWK;
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url');
    const payload = Buffer.from(JSON.stringify({ iss: t.server.issuer, aud: 'urn:palisade:api', client_id: 'palisade-cli', sub: 'x', scope: 'tasks', exp: past + 9999 })).toString('base64url');
    const cases: [string, string, RegExp][] = [
      ['expired', await forged({ exp: past }), /expired/],
      ['wrong audience', await forged({ aud: 'urn:someone:else' }), /"aud"/],
      ['wrong issuer', await forged({ iss: 'https://evil.example/oauth2' }), /"iss"/],
      ['foreign key', await forged({}, { key: foreignKey }), /not valid/],
      ['alg none', `${header}.${payload}.`, /not valid/],
    ];
    for (const [name, bad, detail] of cases) {
      const res = await t.fetch('/api/v1/tasks', { method: 'POST', token: bad, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }] }) });
      const p = await problem(res, 401, 'PAL_ERR_TOKEN_INVALID');
      assert.match(p.detail!, detail, name);
      const ws = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + bad], { ca: t.server.tls?.ca });
      assert.equal(ws.status, 401, `${name} over WebSocket`);
      assert.equal((JSON.parse(ws.body!) as Problem).code, 'PAL_ERR_TOKEN_INVALID');
    }
    await nothingChanged();
  });

  it('a client token may not connect as an agent (scope)', async () => {
    const ws = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token], { ca: t.server.tls?.ca });
    assert.equal(ws.status, 403);
    assert.equal((JSON.parse(ws.body!) as Problem).code, 'PAL_ERR_FORBIDDEN');
  });

  it('an agent token may not submit tasks (scope)', async () => {
    const res = await t.fetch('/api/v1/tasks', { method: 'POST', token: agentToken, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ site: SITE, steps: [{ type: 'navigate', url: SITE }] }) });
    await problem(res, 403, 'PAL_ERR_FORBIDDEN');
    await nothingChanged();
  });

  it('WebSocket with no token is closed after the auth timeout', async () => {
    const { ws } = await rawAgentSocket(t.url, [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
    assert.ok(ws, 'the upgrade itself succeeds: the token may come in the first frame');
    const closed = await new Promise<{ code: number }>((resolve) => ws.once('close', (code) => resolve({ code })));
    assert.equal(closed.code, 4401);
  });

  it('a hello sent in time is answered though storing the agent takes longer than the auth timeout (a busy database)', async () => {
    const agents = t.server.store.agents;
    const upsert = agents.upsert.bind(agents);
    agents.upsert = async (record) => {
      await new Promise((r) => setTimeout(r, 1500));
      return upsert(record);
    };
    try {
      const slow = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE], onTask: () => 'ignore', instanceId: 'slow-hello' });
      assert.ok(slow.agentId, 'welcomed after the auth timeout had passed');
      const closed = slow.closed();
      const outcome = await Promise.race([closed.then(({ code }) => `closed ${code}`), new Promise((r) => setTimeout(() => r('open'), 300))]);
      assert.equal(outcome, 'open');
      slow.close();
      await closed;
    } finally {
      agents.upsert = upsert;
    }
  });

  it('WebSocket frames before authentication are refused', async () => {
    const { ws } = await rawAgentSocket(t.url, [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
    const msgs: string[] = [];
    ws!.on('message', (d) => msgs.push(String(d)));
    const closed = new Promise<number>((resolve) => ws!.once('close', (code) => resolve(code)));
    ws!.send(JSON.stringify({ type: 'hello', v: 1, agent: { name: 'x', version: '1', instanceId: 'abc' }, grants: [SITE] }));
    assert.equal(await closed, 4401);
    assert.equal(JSON.parse(msgs[0]!).code, 'PAL_ERR_UNAUTHENTICATED');
  });

  it('token in the URL is refused', async () => {
    const { default: WebSocket } = await import('ws');
    const status = await new Promise<number>((resolve) => {
      const s = new WebSocket(`${t.url.replace('https', 'wss')}/ws/agent?access_token=${agentToken}`, [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
      s.once('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      s.once('open', () => resolve(101));
    });
    assert.equal(status, 400);
  });

  it('wrong Origin (cross-site WebSocket hijacking) is refused and logged', async () => {
    const ws = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + agentToken], { ca: t.server.tls?.ca, origin: 'https://evil.example' });
    assert.equal(ws.status, 403);
    assert.equal((JSON.parse(ws.body!) as Problem).code, 'PAL_ERR_ORIGIN_REFUSED');
    assert.ok(t.securityEvents.some((e) => e.status_code === 'PAL_ERR_ORIGIN_REFUSED' && e.src_endpoint.origin === 'https://evil.example'));
    const ext = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + agentToken], { ca: t.server.tls?.ca, origin: 'chrome-extension://abcdefghijklmnopabcdefghijklmnop' });
    assert.ok(ext.ws, 'an extension origin is allowed');
    ext.ws.close();
  });

  it('oversized WebSocket frame closes the connection with 1009', async () => {
    const a = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE] });
    const closed = a.closed();
    a.send({ type: 'grants', grants: ['x'.repeat(t.server.config.maxFrameBytes)] });
    assert.equal((await closed).code, 1009);
    assert.ok(t.securityEvents.some((e) => e.status_code === 'PAL_ERR_FRAME_TOO_LARGE'));
  });

  it('a flood of frames past the pending limit closes the connection', async () => {
    const { MAX_PENDING_FRAMES } = await import('../../src/gateway/agents.ts');
    const a = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE] });
    const closed = a.closed();
    const burst = Array.from({ length: MAX_PENDING_FRAMES * 8 }, (_, i) => JSON.stringify({ type: 'grants', grants: [`http://127.0.0.1:${1000 + (i % 50)}`] }));
    for (const f of burst) a.ws.send(f);
    assert.equal((await closed).code, 1008);
    assert.ok(t.securityEvents.some((e) => e.status_code === 'PAL_ERR_RATE_LIMITED'));
  });

  it('malformed and unknown frames get an error frame and change nothing', async () => {
    const a = await SyntheticAgent.connect({ url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE] });
    a.send('not json');
    assert.equal((await a.next((f) => f.type === 'error')).type === 'error' && true, true);
    a.send({ type: 'task.result', taskId: 'nope', outcome: 'succeeded', result: { outputs: {}, artifacts: [], timings: { totalMs: 1, steps: [] } }, extra: 1 });
    const e = await a.next((f) => f.type === 'error');
    assert.equal(e.type === 'error' ? e.code : '', 'PAL_ERR_VALIDATION');
    a.send({ type: 'eval', code: '1' });
    const e2 = await a.next((f) => f.type === 'error');
    assert.equal(e2.type === 'error' ? e2.code : '', 'PAL_ERR_VALIDATION');
    a.close();
    await nothingChanged();
  });
});

describe('input binding cannot blow up the server', () => {
  it('a few placeholders times a large input is refused, and a string grown past its field is refused', async () => {
    const t = await startTestServer();
    try {
      await createAdmin(t);
      const { token } = await apiClient(t);
      const placeholders = '${input.a}'.repeat(200);
      const post = (body: unknown) => t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const heap = process.memoryUsage().heapUsed;
      const blown = await post({ site: SITE, steps: [{ type: 'change', selectors: [placeholders], value: placeholders }], input: { a: 'x'.repeat(60_000) } });
      assert.equal(blown.status, 400);
      assert.match(((await blown.json()) as Problem).detail!, /too large once the inputs are put in/);
      assert.ok(process.memoryUsage().heapUsed - heap < 128 * 1024 * 1024);
      const grown = await post({ site: SITE, steps: [{ type: 'navigate', url: `${SITE}/\${input.a}` }], input: { a: 'y'.repeat(3000) } });
      assert.equal(grown.status, 400);
      const p = (await grown.json()) as Problem;
      assert.equal(p.code, 'PAL_ERR_VALIDATION');
      assert.ok(p.errors?.some((e) => e.path === '/0/url'), JSON.stringify(p.errors));
      assert.equal((await t.server.store.tasks.listUnfinished()).length, 0);
    } finally {
      await t.close();
    }
  });
});

describe('heartbeat', () => {
  it('a peer that stops answering pings is dropped; one that answers stays', async () => {
    const t = await startTestServer({ heartbeatMs: 200 });
    try {
      await createAdmin(t);
      const token = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
      const { default: WebSocket } = await import('ws');
      const open = (autoPong: boolean) => new Promise<InstanceType<typeof WebSocket>>((resolve) => {
        const ws = new WebSocket(`${t.url.replace('https', 'wss')}/ws/agent`, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token], { ca: t.server.tls?.ca, autoPong });
        ws.once('open', () => {
          ws.send(JSON.stringify({ type: 'hello', v: 1, agent: { name: 'hb', version: '1', instanceId: `hb-${autoPong}` }, grants: [] }));
          resolve(ws);
        });
      });
      const silent = await open(false);
      const alive = await open(true);
      const closed = await new Promise<number>((resolve) => silent.once('close', (code) => resolve(code)));
      assert.equal(closed, 1006, 'terminated without a close frame');
      assert.equal(alive.readyState, WebSocket.OPEN, 'the answering peer is still connected');
      alive.close();
    } finally {
      await t.close();
    }
  });
});
