/**
 * TLS of a real server node: operator key and certificate files checked at start, reloaded on the
 * public and internal listeners without a restart when they change (a bad new pair refused), the
 * TLS 1.3 default and the TLS 1.2 opt-in, and the expiry warning at start.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, type ConnectionOptions } from 'node:tls';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import { createPalisade } from '../../src/app.ts';
import type { SecurityEvent } from '../../src/siem/events.ts';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { waitFor } from '../support/redis-procs.ts';
import { makePki, type TestPki } from '../support/certs.ts';

let pki: TestPki;

before(() => {
  pki = makePki();
});
after(() => pki.remove());

/** The serial number of the certificate a server presents on a new connection, or the error code. */
function served(url: string, o: ConnectionOptions = {}): Promise<{ serial?: string; protocol?: string | null; error?: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: pki.caPem, servername: 'localhost', ...o }, () => {
      resolve({ serial: s.getPeerX509Certificate()?.serialNumber, protocol: s.getProtocol() });
      s.destroy();
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
  });
}

/** Live copies of a pair, as an operator's files. */
function liveFiles(from: { keyFile: string; certFile: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-live-'));
  const files = { keyFile: join(dir, 'tls.key'), certFile: join(dir, 'tls.crt') };
  copyFileSync(from.keyFile, files.keyFile);
  copyFileSync(from.certFile, files.certFile);
  return { ...files, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

test('changed key and certificate files are served without a restart, on both listeners; a bad pair is refused', async () => {
  const a = pki.server('reload-a');
  const b = pki.server('reload-b');
  const c = pki.server('reload-c');
  const live = liveFiles(a);
  let t: TestServer | undefined;
  try {
    t = await startTestServer({ tlsKeyFile: live.keyFile, tlsCertFile: live.certFile, tlsReloadMs: 50, internalPort: 0, internalCaFile: pki.caFile });
    const internal = t.server.internalUrl!;
    assert.equal((await served(t.url)).serial, a.serial);
    assert.equal((await served(internal, pki.client('n1', 'node'))).serial, a.serial);
    // An open connection keeps working across the reload.
    const open = connect({ host: '127.0.0.1', port: Number(new URL(t.url).port), ca: pki.caPem, servername: 'localhost' });
    await new Promise((r) => open.once('secureConnect', r));

    copyFileSync(b.keyFile, live.keyFile);
    copyFileSync(b.certFile, live.certFile);
    await waitFor(async () => (await served(t!.url)).serial === b.serial, 10_000, 'the new certificate on the public listener');
    assert.equal((await served(internal, pki.client('n2', 'node'))).serial, b.serial);
    assert.equal(t.server.tls?.cert, b.cert);
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'tls.reload' && e.status === 'Success'));
    assert.equal(open.destroyed, false);
    open.write('GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    const reply = await new Promise<string>((resolve) => {
      let text = '';
      open.on('data', (d: Buffer) => (text += d.toString()));
      open.on('end', () => resolve(text));
    });
    assert.match(reply, /^HTTP\/1\.1 200/);

    // A certificate whose key does not match: refused, the previous pair stays.
    const n = t.securityEvents.length;
    copyFileSync(c.certFile, live.certFile);
    await waitFor(() => t!.securityEvents.slice(n).some((e) => e.activity_name === 'tls.reload'), 10_000, 'the refusal');
    const refused = t.securityEvents.slice(n).find((e) => e.activity_name === 'tls.reload')!;
    assert.equal(refused.status, 'Failure');
    assert.match(refused.message, /does not belong to the certificate/);
    assert.equal((await served(t.url)).serial, b.serial);
    const metrics = await t.server.metrics.registry.metrics();
    assert.match(metrics, /palisade_tls_certificate_reloads_total\{outcome="success"\} 1/);
    assert.match(metrics, /palisade_tls_certificate_reloads_total\{outcome="failure"\} 1/);
  } finally {
    await t?.close();
    live.remove();
  }
});

test('start is refused when the key does not match the certificate, naming the files', async () => {
  const a = pki.server('start-a');
  const b = pki.server('start-b');
  await assert.rejects(
    createPalisade({ dataDir: join(pki.dir, 'data-mismatch'), tlsKeyFile: b.keyFile, tlsCertFile: a.certFile, logger: pino({ level: 'silent' }) }),
    (e: Error) => e.message.includes(`--tls-key ${b.keyFile} / --tls-cert ${a.certFile}: the private key does not belong to the certificate`),
  );
  await assert.rejects(
    createPalisade({ dataDir: join(pki.dir, 'data-missing'), tlsKeyFile: join(pki.dir, 'nope.key'), tlsCertFile: a.certFile, logger: pino({ level: 'silent' }) }),
    /--tls-key: cannot read .*nope\.key \(ENOENT\)/,
  );
});

test('a certificate that expires within 14 days warns at start, and the gauge shows when', async () => {
  const soon = pki.server('soon', { days: 5 });
  const node = await createPalisade({ port: 0, dataDir: join(pki.dir, 'data-soon'), tlsKeyFile: soon.keyFile, tlsCertFile: soon.certFile, logger: pino({ level: 'silent' }) });
  const seen: SecurityEvent[] = [];
  node.events.subscribe((e) => seen.push(e));
  try {
    await node.listen();
    const warning = seen.find((e) => e.activity_name === 'tls.certificate.expiring');
    assert.ok(warning, 'the expiry warning at start');
    assert.equal(warning.severity, 'medium');
    assert.match(warning.message, /expires in [45] day\(s\)/);
    const metrics = await node.metrics.registry.metrics();
    const value = Number(/^palisade_tls_certificate_expiry_seconds (\d+)$/m.exec(metrics)?.[1]);
    assert.equal(value, Math.floor(new X509Certificate(soon.cert).validToDate.getTime() / 1000));
  } finally {
    await node.close();
  }
});

test('TLS 1.3 only by default; --tls-min-version 1.2 lets a TLS 1.2 client in with an AEAD suite', async () => {
  const t13 = await startTestServer({});
  const t12 = await startTestServer({ tlsMinVersion: '1.2' });
  try {
    const ca = t13.server.tls!.ca!;
    const old13 = await served(t13.url, { ca, maxVersion: 'TLSv1.2' });
    assert.ok(old13.error, `TLS 1.2 must be refused by default, got ${JSON.stringify(old13)}`);
    assert.equal((await served(t13.url, { ca })).protocol, 'TLSv1.3');
    const ok12 = await served(t12.url, { ca: t12.server.tls!.ca!, maxVersion: 'TLSv1.2' });
    assert.equal(ok12.protocol, 'TLSv1.2');
    const cbc = await served(t12.url, { ca: t12.server.tls!.ca!, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA256' });
    assert.ok(cbc.error, 'a CBC suite must be refused');
  } finally {
    await t13.close();
    await t12.close();
  }
});

test('a renegotiation attempt (TLS 1.2) is refused and its connection cut, so the node still closes promptly', async () => {
  const t = await startTestServer({ tlsMinVersion: '1.2' });
  let closedAt = 0;
  try {
    const { port } = new URL(t.url);
    const socket = connect({ host: '127.0.0.1', port: Number(port), servername: 'localhost', ca: t.server.tls!.ca!, maxVersion: 'TLSv1.2' });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', () => resolve()).once('error', reject));
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.renegotiate({ rejectUnauthorized: false }, () => undefined);
    await Promise.race([gone, new Promise((_, reject) => setTimeout(() => reject(new Error('the server kept the connection open')), 5000))]);
  } finally {
    const start = Date.now();
    await t.close();
    closedAt = Date.now() - start;
  }
  assert.ok(closedAt < 3000, `close() took ${closedAt} ms`);
});
