/**
 * CORS from an explicit allow-list (`corsOrigins`): an allowed Origin is echoed (never `*`, never
 * credentials), any other gets no `Access-Control-*` header; `Vary: Origin`; a preflight from an
 * allowed Origin for an allowed method and headers gets the full answer, and every other preflight a
 * 403 problem and a security event. With no list (the default) there is no CORS at all. A wildcard
 * or a malformed origin is refused at start: by the CLI with a usage error, by `createPalisade`.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { CORS_EXPOSED_HEADERS, CORS_MAX_AGE_S, CORS_METHODS, CORS_REQUEST_HEADERS, checkCorsOrigin } from '../../src/edge/cors.ts';

const APP = 'https://app.example.test';
const OTHER = 'https://evil.example.test';

/** A preflight as a browser sends it. */
const preflight = (t: TestServer, path: string, origin: string | undefined, method = 'POST', headers = 'authorization, content-type') =>
  t.fetch(path, { method: 'OPTIONS', headers: { ...(origin ? { origin } : {}), 'access-control-request-method': method, ...(headers ? { 'access-control-request-headers': headers } : {}) } });

const noCorsHeaders = (res: Response) => [...res.headers.keys()].filter((k) => k.startsWith('access-control-'));

async function assertRefused(t: TestServer, res: Response, what: string): Promise<void> {
  assert.equal(res.status, 403, what);
  assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, what);
  const problem = (await res.json()) as { code: string; detail: string };
  assert.equal(problem.code, 'PAL_ERR_ORIGIN_REFUSED', what);
  assert.match(problem.detail, /^cross-origin request refused: /, what);
  assert.deepEqual(noCorsHeaders(res), [], `${what}: no Access-Control-* header`);
  const event = t.securityEvents.findLast((e) => e.activity_name === 'cors.preflight');
  assert.ok(event && event.status === 'Failure' && event.status_code === 'PAL_ERR_ORIGIN_REFUSED', `${what}: a security event`);
}

describe('CORS with an allow-list', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ corsOrigins: [APP] });
  });
  after(async () => t?.close());

  it('a preflight from an allowed Origin for the API gets the Access-Control-* answer, without credentials', async () => {
    const res = await preflight(t, '/api/v1/tasks', APP, 'POST', 'Authorization, Content-Type, Idempotency-Key');
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), APP);
    assert.equal(res.headers.get('access-control-allow-methods'), CORS_METHODS.join(', '));
    assert.equal(res.headers.get('access-control-allow-headers'), CORS_REQUEST_HEADERS.join(', '));
    assert.equal(res.headers.get('access-control-max-age'), String(CORS_MAX_AGE_S));
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    assert.match(res.headers.get('vary') ?? '', /\bOrigin\b/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff', 'the security headers too');
    const root = await preflight(t, '/', APP, 'GET', '');
    assert.equal(root.status, 204, 'the service description too');
  });

  it('every other preflight is refused with a 403 problem and a security event', async () => {
    await assertRefused(t, await preflight(t, '/api/v1/tasks', OTHER), 'another Origin');
    await assertRefused(t, await preflight(t, '/api/v1/tasks', `${APP}.evil.test`), 'an Origin that starts like an allowed one');
    await assertRefused(t, await preflight(t, '/api/v1/tasks', 'null'), 'Origin: null');
    await assertRefused(t, await preflight(t, '/api/v1/tasks', undefined), 'no Origin');
    await assertRefused(t, await preflight(t, '/api/v1/tasks', APP, 'PUT'), 'a method the API does not take');
    await assertRefused(t, await preflight(t, '/api/v1/tasks', APP, 'POST', 'authorization, x-forward-this'), 'a header the API does not read');
    await assertRefused(t, await preflight(t, '/setup', APP), 'a page (not in scope)');
    await assertRefused(t, await preflight(t, '/interaction/x/login', APP), 'a sign-in form (not in scope)');
  });

  it('an allowed Origin is echoed on answers, errors included; any other Origin gets nothing, and every answer varies by Origin', async () => {
    const ok = await t.fetch('/', { headers: { origin: APP } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), APP);
    assert.equal(ok.headers.get('access-control-expose-headers'), CORS_EXPOSED_HEADERS.join(', '));
    assert.equal(ok.headers.get('access-control-allow-credentials'), null);
    assert.equal(ok.headers.get('vary'), 'Origin');
    const unauthorized = await t.fetch('/api/v1/tasks/t_x', { headers: { origin: APP } });
    assert.equal(unauthorized.status, 401);
    assert.equal(unauthorized.headers.get('access-control-allow-origin'), APP, 'a caller can read why it was refused');
    for (const origin of [OTHER, 'null', `${APP}:443`, APP.toUpperCase(), `${APP}/`]) {
      const res = await t.fetch('/api/v1/tasks/t_x', { headers: { origin } });
      assert.deepEqual(noCorsHeaders(res), [], `no Access-Control-* header for ${origin}`);
      assert.equal(res.headers.get('vary'), 'Origin', `Vary: Origin for ${origin}`);
    }
    const none = await t.fetch('/');
    assert.equal(none.headers.get('vary'), 'Origin', 'Vary: Origin without an Origin too');
    const page = await t.fetch('/assets/palisade.css', { headers: { origin: APP } });
    assert.deepEqual(noCorsHeaders(page), [], 'pages and assets never answer cross-origin');
  });
});

describe('CORS by default (no list)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => t?.close());

  it('no Access-Control-* header for any Origin, and every preflight refused', async () => {
    const res = await t.fetch('/', { headers: { origin: APP } });
    assert.deepEqual(noCorsHeaders(res), []);
    assert.equal(res.headers.get('vary'), null);
    await assertRefused(t, await preflight(t, '/api/v1/tasks', APP), 'any Origin');
  });
});

describe('CORS configuration', () => {
  it('accepts exact http(s) origins and refuses wildcards and anything that is not an origin', () => {
    for (const ok of [APP, 'http://localhost:5173', 'https://[::1]:8443']) assert.equal(checkCorsOrigin(ok), undefined, ok);
    for (const [bad, why] of [['*', /wildcard/], ['https://*.example.test', /wildcard/], [`${APP}/`, /as browsers send it/], [`${APP}:443`, /as browsers send it/], ['https://App.Example.test', /as browsers send it/], ['chrome-extension://abc', /only http and https/], ['null', /not an origin/], ['example.test', /not an origin/]] as const) {
      assert.match(checkCorsOrigin(bad) ?? '', why, bad);
    }
  });

  it('createPalisade refuses a wildcard', async () => {
    await assert.rejects(startTestServer({ corsOrigins: ['*'] }), /corsOrigins: "\*": wildcards are refused/);
  });

  it('the CLI refuses --cors-origin * and PALISADE_CORS_ORIGINS=* with a usage error (exit 2)', async () => {
    const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
    const run = (args: string[], env: Record<string, string> = {}) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PALISADE_LOG_LEVEL: 'warn', ...env } });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      child.on('close', (code) => resolve({ code, stderr }));
    });
    for (const [args, env, message] of [
      [['start', '--cors-origin', '*'], {}, /--cors-origin "\*": wildcards are refused/],
      [['start', '--cors-origin', APP, '--cors-origin', `${APP}/`], {}, /--cors-origin "https:\/\/app\.example\.test\/" is not an origin as browsers send it/],
      [['start'], { PALISADE_CORS_ORIGINS: `${APP}, *` }, /--cors-origin "\*": wildcards are refused/],
    ] as const) {
      const r = await run([...args], env);
      assert.equal(r.code, 2, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });
});
