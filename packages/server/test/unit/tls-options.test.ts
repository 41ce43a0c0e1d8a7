/** TLS listener options: real handshakes against a `node:tls` server built with them. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type ConnectionOptions, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { parseTlsMinVersion, tlsProtocolOptions, tlsServerOptions, TLS12_SUITES, type TlsMinVersion } from '../../src/tls/options.ts';
import { makePki, type TestPki } from '../support/certs.ts';

let pki: TestPki;
let material: { key: string; cert: string };

before(() => {
  pki = makePki();
  material = pki.server('srv');
});
after(() => pki.remove());

async function withServer(min: TlsMinVersion, fn: (port: number) => Promise<void>): Promise<void> {
  const sockets = new Set<TLSSocket>();
  const server: Server = createServer(tlsServerOptions(material, min), (s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.resume();
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    await fn((server.address() as AddressInfo).port);
  } finally {
    for (const s of sockets) s.destroy();
    server.close();
  }
}

/** Connects; resolves with the negotiated protocol and cipher, or the error's code. */
function handshake(port: number, o: ConnectionOptions): Promise<{ protocol?: string | null; cipher?: string; error?: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca: pki.caPem, servername: 'localhost', ...o }, () => {
      resolve({ protocol: s.getProtocol(), cipher: s.getCipher().name });
      s.destroy();
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
  });
}

test('the default is TLS 1.3 only, with the three TLS 1.3 AEAD suites', () => {
  const o = tlsProtocolOptions();
  assert.equal(o.minVersion, 'TLSv1.3');
  assert.equal(o.ciphers, 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256');
  assert.equal(o.ecdhCurve, 'X25519:P-256:P-384');
  assert.equal(o.honorCipherOrder, true);
});

test('TLS 1.2, when allowed, adds only ECDHE + AES-GCM / ChaCha20-Poly1305 suites', () => {
  const o = tlsProtocolOptions('1.2');
  assert.equal(o.minVersion, 'TLSv1.2');
  for (const suite of TLS12_SUITES) {
    assert.match(suite, /^ECDHE-(ECDSA|RSA)-/);
    assert.match(suite, /GCM|CHACHA20-POLY1305/);
  }
  assert.ok(o.ciphers?.startsWith('TLS_AES_256_GCM_SHA384:'));
});

test('parseTlsMinVersion accepts 1.3 and 1.2 only', () => {
  assert.equal(parseTlsMinVersion('1.2'), '1.2');
  assert.throws(() => parseTlsMinVersion('1.1'), /must be 1\.3 or 1\.2, not "1\.1"/);
});

test('by default a TLS 1.2 client is refused and a TLS 1.3 client gets a TLS 1.3 AEAD suite', async () => {
  await withServer('1.3', async (port) => {
    const old = await handshake(port, { maxVersion: 'TLSv1.2' });
    assert.ok(old.error, 'a TLS 1.2 client must be refused');
    assert.match(old.error!, /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|ALERT/);
    const ok = await handshake(port, {});
    assert.equal(ok.protocol, 'TLSv1.3');
    assert.equal(ok.cipher, 'TLS_AES_256_GCM_SHA384');
  });
});

test('with TLS 1.2 allowed: a GCM suite works; CBC, SHA-1, RSA key exchange and TLS 1.1 are refused', async () => {
  await withServer('1.2', async (port) => {
    const gcm = await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
    assert.deepEqual(gcm, { protocol: 'TLSv1.2', cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
    for (const ciphers of ['ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA', 'AES128-GCM-SHA256', 'DHE-RSA-AES128-GCM-SHA256']) {
      const r = await handshake(port, { maxVersion: 'TLSv1.2', ciphers });
      assert.ok(r.error, `${ciphers} must be refused, got ${JSON.stringify(r)}`);
    }
    const tls11 = await handshake(port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
    assert.ok(tls11.error, 'TLS 1.1 must be refused');
  });
});

test('with TLS 1.2 allowed: renegotiation is refused', async () => {
  await withServer('1.2', async (port) => {
    const s = connect({ host: '127.0.0.1', port, ca: pki.caPem, servername: 'localhost', maxVersion: 'TLSv1.2' });
    await once(s, 'secureConnect');
    const err = await new Promise<Error | null>((resolve) => {
      s.on('error', resolve);
      s.resume();
      s.renegotiate({}, (e) => resolve(e ?? null));
      setTimeout(() => resolve(null), 3000).unref();
    });
    s.destroy();
    assert.ok(err, 'the renegotiation must fail');
    assert.match(`${(err as NodeJS.ErrnoException).code} ${err.message}`, /NO_RENEGOTIATION|no renegotiation/i);
  });
});
