/**
 * Certificates for TLS tests, made in a temporary folder with the same code as `palisade certs`
 * (the SDK's lib/node-certs.ts; the server itself does not depend on the SDK, its tests may).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, createClientCert, createServerCert } from '../../../sdk/src/lib/node-certs.ts';

export { createCa, createClientCert, createServerCert };

/** A temporary folder with a CA in `ca/`; `remove()` deletes it. */
export interface TestPki {
  dir: string;
  caDir: string;
  caFile: string;
  caPem: string;
  /** A server certificate for localhost and 127.0.0.1 in `dir/<name>/server.{key,crt}`. */
  server(name: string, o?: { days?: number; names?: string[] }): { keyFile: string; certFile: string; key: string; cert: string; serial: string };
  /** A client certificate in `dir/<name>/client.{key,crt}`. */
  client(name: string, role: string): { keyFile: string; certFile: string; key: string; cert: string };
  remove(): void;
}

export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-pki-'));
  const caDir = join(dir, 'ca');
  const ca = createCa({ out: caDir });
  return {
    dir, caDir, caFile: ca.certFile, caPem: readFileSync(ca.certFile, 'utf8'),
    server(name, o = {}) {
      const made = createServerCert({ ca: caDir, names: o.names ?? ['localhost', '127.0.0.1'], out: join(dir, name), days: o.days });
      return { keyFile: made.keyFile, certFile: made.certFile, key: readFileSync(made.keyFile, 'utf8'), cert: readFileSync(made.certFile, 'utf8'), serial: made.certificate.serialNumber };
    },
    client(name, role) {
      const made = createClientCert({ ca: caDir, name, role, out: join(dir, name) });
      return { keyFile: made.keyFile, certFile: made.certFile, key: readFileSync(made.keyFile, 'utf8'), cert: readFileSync(made.certFile, 'utf8') };
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A client certificate signed by the CA in `pki` with free-form extensions (e.g. no role, two
 * roles, serverAuth only), made with `openssl` directly.
 */
export function rawClientCert(pki: TestPki, name: string, extensions: string[]): { key: string; cert: string } {
  const d = join(pki.dir, `raw-${name}`);
  execFileSync('mkdir', ['-p', d]);
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(d, 'k.pem')], { stdio: 'ignore' });
  const csr = execFileSync('openssl', ['req', '-new', '-key', join(d, 'k.pem'), '-subj', `/CN=${name}`, '-out', '-']);
  writeFileSync(join(d, 'ext.cnf'), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n${extensions.join('\n')}\n`);
  const cert = execFileSync('openssl', ['x509', '-req', '-in', '-', '-CA', join(pki.caDir, 'ca.crt'), '-CAkey', join(pki.caDir, 'ca.key'), '-set_serial', String(Date.now()), '-days', '30', '-extfile', join(d, 'ext.cnf'), '-out', '-'], { input: csr });
  return { key: readFileSync(join(d, 'k.pem'), 'utf8'), cert: cert.toString() };
}
