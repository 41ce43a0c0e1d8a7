/**
 * The internal listener (mutual TLS): a real server node with `internalPort`, client certificates
 * made by the `palisade certs` code, and every refusal — no certificate, another CA's, a server
 * certificate used as a client's, a role without permission, a certificate without a role.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createPalisade } from '../../src/app.ts';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { makePki, rawClientCert, type TestPki } from '../support/certs.ts';

let pki: TestPki;
let other: TestPki;
let t: TestServer;
let srv: ReturnType<TestPki['server']>;
const HIGH_WATER = 512 * 1024 * 1024;
let heap = 16 * 1024 * 1024;

before(async () => {
  pki = makePki();
  other = makePki();
  srv = pki.server('server');
  t = await startTestServer({
    tlsKeyFile: srv.keyFile, tlsCertFile: srv.certFile, internalPort: 0, internalCaFile: pki.caFile,
    // A heap figure the health test moves across the high-water mark.
    memoryHighWaterBytes: HIGH_WATER, memorySampleMs: 60_000, memorySampler: () => ({ heapUsed: heap, rss: heap }),
  });
});
after(async () => {
  await t?.close();
  pki.remove();
  other.remove();
});

interface Answer {
  status: number;
  type: string | undefined;
  body: string;
}

/** One request to the internal listener with an optional client key and certificate. */
function call(method: string, path: string, client?: { key: string; cert: string }): Promise<Answer> {
  const url = new URL(path, t.server.internalUrl);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, ca: pki.caPem, servername: 'localhost', agent: false, ...(client ?? {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const eventsSince = (n: number) => t.securityEvents.slice(n);

test('the node reports its internal URL, on 127.0.0.1 by default', () => {
  assert.match(t.server.internalUrl ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);
});

test('no client certificate: the TLS handshake fails, and a security event says so', async () => {
  const n = t.securityEvents.length;
  await assert.rejects(call('GET', '/internal/v1/health'), (e: NodeJS.ErrnoException) => /CERTIFICATE_REQUIRED|certificate required|ECONNRESET|socket hang up/i.test(`${e.code} ${e.message}`));
  assert.equal(await refusal(n), 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
});

/** The reason of the handshake refusal recorded after event `n`. */
async function refusal(n: number): Promise<unknown> {
  for (let i = 0; i < 40 && !eventsSince(n).some((e) => e.activity_name === 'internal.tls.refused'); i++) await new Promise((r) => setTimeout(r, 25));
  const refused = eventsSince(n).find((e) => e.activity_name === 'internal.tls.refused');
  assert.ok(refused, 'a refused handshake is a security event');
  assert.equal(refused.status, 'Failure');
  return refused.unmapped?.reason;
}

test("a client certificate from another CA: the handshake fails", async () => {
  const n = t.securityEvents.length;
  await assert.rejects(call('GET', '/internal/v1/health', other.client('stranger', 'admin')), (e: NodeJS.ErrnoException) => /ECONNRESET|socket hang up/i.test(`${e.code} ${e.message}`));
  assert.equal(await refusal(n), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
});

test('a server certificate of the right CA (EKU serverAuth only) is not accepted as a client certificate', async () => {
  const n = t.securityEvents.length;
  await assert.rejects(call('GET', '/internal/v1/health', { key: srv.key, cert: srv.cert }), (e: NodeJS.ErrnoException) => /ECONNRESET|socket hang up/i.test(`${e.code} ${e.message}`));
  assert.equal(await refusal(n), 'INVALID_PURPOSE');
});

test('metrics role: GET /metrics answers Prometheus text with the certificate expiry gauge', async () => {
  const r = await call('GET', '/metrics', pki.client('prometheus', 'metrics'));
  assert.equal(r.status, 200);
  assert.match(r.type ?? '', /^text\/plain/);
  const notAfter = Math.floor(new Date(new (await import('node:crypto')).X509Certificate(srv.cert).validTo).getTime() / 1000);
  assert.match(r.body, new RegExp(`^palisade_tls_certificate_expiry_seconds ${notAfter}$`, 'm'));
  assert.match(r.body, /^palisade_process_cpu_user_seconds_total /m);
});

test('metrics role may not rotate keys: 403 PAL_ERR_FORBIDDEN problem details and an authorization event', async () => {
  const n = t.securityEvents.length;
  const before = t.server.keys.view();
  const r = await call('POST', '/internal/v1/keys/rotate', pki.client('prom2', 'metrics'));
  assert.equal(r.status, 403);
  assert.equal(r.type, 'application/problem+json');
  const problem = JSON.parse(r.body) as { code: string; detail: string; status: number };
  assert.equal(problem.code, 'PAL_ERR_FORBIDDEN');
  assert.equal(problem.detail, 'role "metrics" may not call POST /internal/v1/keys/rotate (allowed: admin)');
  assert.deepEqual(t.server.keys.view(), before, 'nothing changed');
  const e = eventsSince(n).find((x) => x.activity_name === 'internal.request');
  assert.equal(e?.class_name, 'Authorize Session');
  assert.equal(e?.status_code, 'PAL_ERR_FORBIDDEN');
  assert.equal(e?.unmapped?.certificate, 'prom2');
});

test('node role: health yes, metrics no', async () => {
  const node = pki.client('node-2', 'node');
  const health = await call('GET', '/internal/v1/health', node);
  assert.equal(health.status, 200);
  assert.equal((JSON.parse(health.body) as { status: string }).status, 'ok');
  const metrics = await call('GET', '/metrics', node);
  assert.equal(metrics.status, 403);
  assert.equal((JSON.parse(metrics.body) as { code: string }).code, 'PAL_ERR_FORBIDDEN');
});

test('health says when the node sheds new work (above the memory high-water mark), and when it is back', async () => {
  const node = pki.client('node-3', 'node');
  const status = async () => (JSON.parse((await call('GET', '/internal/v1/health', node)).body) as { status: string }).status;
  assert.equal(await status(), 'ok');
  heap = HIGH_WATER + 1;
  t.server.memory.sample();
  assert.equal(await status(), 'shedding');
  heap = 16 * 1024 * 1024;
  t.server.memory.sample();
  assert.equal(await status(), 'ok');
});

test('admin role: POST /internal/v1/keys/rotate rotates the signing keys (the node\'s rotateKeys)', async () => {
  const admin = pki.client('ops', 'admin');
  const current = () => t.server.keys.view().find((k) => k.status === 'current')?.kid;
  const was = current();
  const r = await call('POST', '/internal/v1/keys/rotate', admin);
  assert.equal(r.status, 200, r.body);
  const body = JSON.parse(r.body) as { keys: Array<{ kid: string; status: string }> };
  assert.notEqual(current(), was);
  assert.equal(body.keys.find((k) => k.status === 'current')?.kid, current());
  const list = await call('GET', '/internal/v1/keys', admin);
  assert.equal(list.status, 200);
});

test('a certificate with no role, or with two, may call nothing', async () => {
  const none = rawClientCert(pki, 'norole', ['extendedKeyUsage=clientAuth']);
  const r = await call('GET', '/internal/v1/health', none);
  assert.equal(r.status, 403);
  assert.match((JSON.parse(r.body) as { detail: string }).detail, /names no role/);
  const two = rawClientCert(pki, 'tworoles', ['extendedKeyUsage=clientAuth', 'subjectAltName=URI:urn:palisade:role:metrics,URI:urn:palisade:role:admin']);
  const r2 = await call('POST', '/internal/v1/keys/rotate', two);
  assert.equal(r2.status, 403);
  assert.match((JSON.parse(r2.body) as { detail: string }).detail, /several roles/);
});

test('unknown routes are 404, a wrong method 405, a request body 400', async () => {
  const admin = pki.client('ops2', 'admin');
  assert.equal((await call('GET', '/api/v1/clients', admin)).status, 404);
  assert.equal((await call('GET', '/internal/v1/keys/rotate', admin)).status, 405);
  const withBody = await new Promise<number>((resolve, reject) => {
    const req = request(new URL('/internal/v1/keys/rotate', t.server.internalUrl), { method: 'POST', ca: pki.caPem, servername: 'localhost', agent: false, ...admin, headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end('{"x":1}');
  });
  assert.equal(withBody, 400);
});

test('the internal listener needs its CA: createPalisade refuses internalPort without internalCaFile', async () => {
  await assert.rejects(
    createPalisade({ dataDir: pki.dir, internalPort: 0, logger: pino({ level: 'silent' }) }),
    /--internal-port needs --internal-ca FILE/,
  );
});

test('palisade-server: --internal-port without --internal-ca is a usage error (exit 2)', async () => {
  const cli = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [cli, 'start', '--internal-port', '9999', '--data-dir', pki.dir], { timeout: 20_000 }, (err, _out, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stderr });
    });
  });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--internal-port needs --internal-ca FILE/);
});
