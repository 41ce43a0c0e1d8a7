/**
 * Request limits, each crossed: URL length (414), request head size (431, answered for Node's own
 * parser), JSON nesting depth and body size — every refusal RFC 9457 problem details with a stable
 * code and no internals; plus the health and readiness endpoints.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import type { Problem } from '@palisade/protocol';
import { apiClient, createAdmin, startTestServer, type TestServer } from '../support/harness.ts';

async function problem(res: Response, status: number, code: string): Promise<Problem> {
  assert.equal(res.status, status, `status for ${code}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
  const p = (await res.json()) as Problem;
  assert.equal(p.code, code);
  assert.ok(!JSON.stringify(p).includes('    at '), 'no stack trace');
  return p;
}

/** Sends raw bytes over TLS and returns the raw answer (for what fetch cannot send). */
function raw(t: TestServer, request: string): Promise<string> {
  const { port } = new URL(t.url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(port), ca: t.server.tls?.ca, servername: 'localhost' }, () => s.end(request));
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

describe('request limits', () => {
  let t: TestServer;
  let token: string;
  before(async () => {
    t = await startTestServer({ maxUrlBytes: 2048, maxHeaderBytes: 8192, maxJsonDepth: 8, maxBodyBytes: 64 * 1024 });
    await createAdmin(t);
    ({ token } = await apiClient(t));
  });
  after(async () => t?.close());

  it('a URL past maxUrlBytes is 414 PAL_ERR_URI_TOO_LONG, on the API and on the OAuth endpoints', async () => {
    const long = 'a'.repeat(2100);
    const p = await problem(await t.fetch(`/api/v1/tasks?x=${long}`, { token }), 414, 'PAL_ERR_URI_TOO_LONG');
    assert.match(p.detail!, /longer than 2048 bytes/);
    await problem(await t.fetch(`/oauth2/.well-known/openid-configuration?x=${long}`), 414, 'PAL_ERR_URI_TOO_LONG');
    assert.equal((await t.fetch(`/api/v1/me?x=${'a'.repeat(1900)}`, { token })).status, 200, 'just under the limit passes');
  });

  it('a request head past maxHeaderBytes is 431 PAL_ERR_HEADERS_TOO_LARGE (answered for the HTTP parser)', async () => {
    const answer = await raw(t, `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'b'.repeat(9000)}\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 431 /);
    assert.match(answer, /content-type: application\/problem\+json/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Problem;
    assert.equal(body.code, 'PAL_ERR_HEADERS_TOO_LARGE');
  });

  it('a malformed request line is 400 problem details', async () => {
    const answer = await raw(t, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.equal((JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Problem).code, 'PAL_ERR_VALIDATION');
  });

  it('JSON nested past maxJsonDepth is 400 before parsing; brackets inside strings do not count', async () => {
    const post = (body: string) => t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body });
    const p = await problem(await post(`${'['.repeat(9)}${']'.repeat(9)}`), 400, 'PAL_ERR_VALIDATION');
    assert.match(p.detail!, /nests deeper than 8 levels/);
    const deep = await problem(await post(`${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`.slice(0, 60_000)), 400, 'PAL_ERR_VALIDATION');
    assert.match(deep.detail!, /nests deeper/);
    // Within the depth, with brackets in strings: reaches the task validator (which refuses the shape, not the depth).
    const shallow = await problem(await post(JSON.stringify({ recipe: '[[[[[[[[[[{{{{{{{{{', input: { a: '"\\[[[[' } })), 400, 'PAL_ERR_VALIDATION');
    assert.doesNotMatch(shallow.detail ?? '', /nests deeper/);
  });

  it('a body past maxBodyBytes is 413 PAL_ERR_FRAME_TOO_LARGE', async () => {
    await problem(await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(70 * 1024) }) }), 413, 'PAL_ERR_FRAME_TOO_LARGE');
  });

  it('__proto__ keys in JSON are refused', async () => {
    const res = await t.fetch('/api/v1/tasks', { method: 'POST', token, headers: { 'content-type': 'application/json' }, body: '{"recipe":"x","__proto__":{"admin":true}}' });
    await problem(res, 400, 'PAL_ERR_VALIDATION');
  });

  it('OAuth endpoints: a resume URL with no sign-in in progress is 400 (not a 500), an unknown route a 404 problem', async () => {
    for (const path of ['/oauth2/device/nope/', '/oauth2/device/auth', '/oauth2/auth/nope/']) {
      const res = await t.fetch(path);
      assert.equal(res.status, 400, path);
      assert.match(await res.text(), /not in progress in this browser|request has expired/);
      assert.ok(res.headers.get('content-security-policy'), 'security headers kept');
    }
    await problem(await t.fetch('/oauth2/token'), 404, 'PAL_ERR_NOT_FOUND');
    await problem(await t.fetch('/oauth2/no-such-endpoint'), 404, 'PAL_ERR_NOT_FOUND');
  });

  it('a Host header that is not a host is 400 before any handler builds a URL from it', async () => {
    for (const host of ['javascript:alert(1)', '%2e%2e%2f', 'blob:https://example.com/x', 'a b', 'x/y']) {
      for (const path of ['/oauth2/session/end', '/api/v1/me', '/healthz']) {
        const answer = await raw(t, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        assert.match(answer, /^HTTP\/1\.1 400 /, `${host} ${path}`);
        assert.equal((JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Problem).code, 'PAL_ERR_VALIDATION');
      }
    }
    for (const host of ['localhost', 'localhost:8443', '127.0.0.1:1', '[::1]:443', 'my_host.internal']) {
      assert.match(await raw(t, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 200 /, host);
    }
  });

  it('the router\'s own refusals are problem details: a bad percent-escape (400), an over-long path segment (414)', async () => {
    const bad = await problem(await t.fetch('/api/v1/tasks/%E0%A4%A', { token }), 400, 'PAL_ERR_VALIDATION');
    assert.match(bad.detail!, /percent-encoding/);
    await problem(await t.fetch(`/api/v1/tasks/${'x'.repeat(150)}`, { token }), 414, 'PAL_ERR_URI_TOO_LONG');
  });

  it('/oauth2 with a query string reaches the OAuth server (not a 500)', async () => {
    const res = await t.fetch('/oauth2?x=1');
    assert.ok(res.status < 500, `status ${res.status}`);
    await problem(res, 404, 'PAL_ERR_NOT_FOUND');
  });

  it('health (liveness) and readiness (stores reachable) answer for a load balancer', async () => {
    const health = await t.fetch('/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await t.fetch('/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', checks: { durableStore: 'ok', hotStore: 'ok', memory: 'ok' } });
  });
});
