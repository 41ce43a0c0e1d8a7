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

  it('health (liveness) and readiness (stores reachable) answer for a load balancer', async () => {
    const health = await t.fetch('/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await t.fetch('/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', checks: { durableStore: 'ok', hotStore: 'ok' } });
  });
});
