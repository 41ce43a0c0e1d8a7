/**
 * @module lib/node-certs — Node only: the certificates of a private Palisade deployment, made
 * with the system `openssl` (keys with node:crypto, written at mode 0600 from the start):
 *
 * - a local CA (EC P-256, `CA:TRUE, pathlen:0`, keyCertSign + cRLSign) and its certificate
 *   revocation list, `ca.crl`;
 * - server certificates (EKU serverAuth, SANs from DNS names and IP addresses);
 * - client certificates for mutual TLS (EKU clientAuth, CN = the name, and the role as a SAN URI
 *   `urn:palisade:role:admin|metrics|node`, which the server's internal listener reads).
 *
 * Used by `palisade certs` (cli/certs.ts). The server's own development CA (server
 * `tls/devca.ts`) is a second, thinner caller of `openssl`: the server does not depend on the SDK.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PalisadeError } from '@palisade/protocol';

/** The roles of client certificates. */
export const CERT_ROLES = ['admin', 'metrics', 'node'] as const;
export type CertRole = (typeof CERT_ROLES)[number];
/** The SAN URI prefix that carries a client certificate's role. */
export const ROLE_URI_PREFIX = 'urn:palisade:role:';

/** Days a CA is valid by default (10 years); at most 20 years. */
export const CA_DAYS = 3650;
/** Days a server or client certificate is valid by default (397, what browsers accept); at most 825. */
export const LEAF_DAYS = 397;
/** Days a certificate revocation list is valid before it must be signed again. */
export const CRL_DAYS = 30;

/** File names inside a CA folder. */
export const CA_FILES = { key: 'ca.key', cert: 'ca.crt', crl: 'ca.crl', index: 'index.txt', crlNumber: 'crlnumber' } as const;

/** What was written. */
export interface MadeCertificate {
  keyFile: string;
  certFile: string;
  certificate: X509Certificate;
}

const DNS_NAME = /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const CA_NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;

const bad = (message: string) => new PalisadeError('PAL_ERR_VALIDATION', message);

function openssl(args: string[], input?: string): string {
  try {
    return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the `openssl` command is needed to make certificates; install OpenSSL');
    throw new PalisadeError('PAL_ERR_INTERNAL', `openssl ${args[0]} failed: ${(err.stderr ?? err.message).trim().split('\n')[0]}`, { internal: e });
  }
}

function checkDays(days: number, max: number): void {
  if (!Number.isInteger(days) || days < 1 || days > max) throw bad(`--days must be a whole number from 1 to ${max}, not ${days}`);
}

/** A folder to write into (made at mode 0700 if missing); refuses to replace any of `files` there. */
function outFolder(dir: string, files: readonly string[]): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw bad(`--out ${dir} is not a folder`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const f of files) {
    if (existsSync(join(dir, f))) throw new PalisadeError('PAL_ERR_CONFLICT', `${join(dir, f)} exists already; remove it or choose another --out folder`);
  }
}

/** A new EC P-256 private key, written (PKCS#8 PEM) at mode 0600 without ever being readable by others. */
function newKey(file: string): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
}

/** A random positive 128-bit serial number, as openssl's `-set_serial` takes it. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return `0x${b.toString('hex')}`;
}

/** Runs `fn` with a private temporary folder, removed afterwards. */
function withTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-certs-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The CA certificate and key of a folder made by {@link createCa}, checked to belong together. */
export function loadCa(dir: string): { certFile: string; keyFile: string; certificate: X509Certificate } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw bad(`--ca ${dir} is not a folder made by \`palisade certs ca\``);
  const certFile = join(dir, CA_FILES.cert);
  const keyFile = join(dir, CA_FILES.key);
  for (const f of [certFile, keyFile]) if (!existsSync(f)) throw bad(`--ca ${dir} has no ${f.slice(dir.length + 1)} (make the CA with \`palisade certs ca --out ${dir}\`)`);
  const certificate = new X509Certificate(readFileSync(certFile));
  if (!certificate.ca) throw bad(`${certFile} is not a CA certificate`);
  const key = readFileSync(keyFile, 'utf8');
  let ok = false;
  try {
    ok = certificate.checkPrivateKey(createPrivateKey(key));
  } catch {
    ok = false;
  }
  if (!ok) throw bad(`${keyFile} is not the key of ${certFile}`);
  if (certificate.validToDate.getTime() <= Date.now()) throw bad(`the CA certificate ${certFile} expired on ${certificate.validToDate.toISOString()}`);
  return { certFile, keyFile, certificate };
}

/**
 * Makes a local CA in `out`: `ca.key` (0600), `ca.crt`, an empty `ca.crl`, and the files openssl
 * keeps its revocation list in.
 *
 * @example createCa({ out: '/etc/palisade/ca' })
 */
export function createCa(o: { out: string; name?: string | undefined; days?: number | undefined }): MadeCertificate & { crlFile: string } {
  const name = o.name ?? 'Palisade Local CA';
  if (!CA_NAME.test(name)) throw bad(`--cn "${name}": use letters, digits, spaces, ".", "_" and "-" (at most 64)`);
  const days = o.days ?? CA_DAYS;
  checkDays(days, 7300);
  outFolder(o.out, Object.values(CA_FILES));
  const keyFile = join(o.out, CA_FILES.key);
  const certFile = join(o.out, CA_FILES.cert);
  newKey(keyFile);
  try {
    const pem = openssl(['req', '-x509', '-new', '-key', keyFile, '-sha256', '-days', String(days), '-set_serial', serial(), '-subj', `/CN=${name}/O=Palisade`,
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectKeyIdentifier=hash', '-out', '-']);
    writeFileSync(certFile, pem, { mode: 0o644, flag: 'wx' });
    writeFileSync(join(o.out, CA_FILES.index), '', { mode: 0o600, flag: 'wx' });
    writeFileSync(join(o.out, CA_FILES.crlNumber), '1000\n', { mode: 0o600, flag: 'wx' });
    const crlFile = createCrl({ ca: o.out });
    return { keyFile, certFile, crlFile, certificate: new X509Certificate(pem) };
  } catch (e) {
    for (const f of Object.values(CA_FILES)) rmSync(join(o.out, f), { force: true });
    throw e;
  }
}

/**
 * Signs the CA's certificate revocation list again (`ca.crl`, valid {@link CRL_DAYS} days): publish
 * it at the URL given to `--crl-url`, and renew it before it runs out.
 */
export function createCrl(o: { ca: string; days?: number | undefined }): string {
  const ca = loadCa(o.ca);
  const days = o.days ?? CRL_DAYS;
  checkDays(days, 365);
  const crlFile = join(o.ca, CA_FILES.crl);
  withTemp((tmp) => {
    const conf = join(tmp, 'ca.cnf');
    writeFileSync(conf, [
      '[ca]', 'default_ca = palisade', '[palisade]',
      `database = ${join(o.ca, CA_FILES.index)}`, `crlnumber = ${join(o.ca, CA_FILES.crlNumber)}`,
      'default_md = sha256', `default_crl_days = ${days}`, 'crl_extensions = crl_ext', '[crl_ext]', 'authorityKeyIdentifier = keyid:always', '',
    ].join('\n'));
    const pem = openssl(['ca', '-gencrl', '-batch', '-config', conf, '-keyfile', ca.keyFile, '-cert', ca.certFile]);
    // Replaced in one step, so whoever serves it never reads half a file.
    writeFileSync(`${crlFile}.new`, pem, { mode: 0o644 });
    renameSync(`${crlFile}.new`, crlFile);
  });
  return crlFile;
}

/** Checks a DNS name or IP address for a server certificate; returns its SAN entry. */
export function sanFor(name: string): string {
  if (isIP(name)) return `IP:${name}`;
  if (name.length <= 253 && DNS_NAME.test(name)) return `DNS:${name.toLowerCase()}`;
  throw bad(`--name "${name}" is neither a DNS name nor an IP address`);
}

/** Issues a leaf certificate for a new key in `out`/`base`.{key,crt}, signed by the CA in `caDir`. */
function issue(o: { caDir: string; out: string; base: string; subject: string; ext: string[]; days: number; crlUrl?: string | undefined }): MadeCertificate {
  checkDays(o.days, 825);
  if (o.crlUrl !== undefined && !/^https?:\/\/[^\s,]+$/.test(o.crlUrl)) throw bad(`--crl-url must be an http:// or https:// URL, not "${o.crlUrl}"`);
  const ca = loadCa(o.caDir);
  const keyFile = join(o.out, `${o.base}.key`);
  const certFile = join(o.out, `${o.base}.crt`);
  outFolder(o.out, [`${o.base}.key`, `${o.base}.crt`]);
  newKey(keyFile);
  try {
    const pem = withTemp((tmp) => {
      const ext = join(tmp, 'ext.cnf');
      writeFileSync(ext, [
        'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', ...o.ext,
        'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid', ...(o.crlUrl ? [`crlDistributionPoints=URI:${o.crlUrl}`] : []), '',
      ].join('\n'));
      const csr = openssl(['req', '-new', '-key', keyFile, '-subj', o.subject, '-out', '-']);
      return openssl(['x509', '-req', '-in', '-', '-CA', ca.certFile, '-CAkey', ca.keyFile, '-set_serial', serial(), '-days', String(o.days), '-sha256', '-extfile', ext, '-out', '-'], csr);
    });
    writeFileSync(certFile, pem, { mode: 0o644, flag: 'wx' });
    return { keyFile, certFile, certificate: new X509Certificate(pem) };
  } catch (e) {
    rmSync(keyFile, { force: true });
    throw e;
  }
}

/**
 * A server certificate for `names` (DNS names and IP addresses; the first is also the CN) in
 * `out/server.key` (0600) and `out/server.crt`.
 *
 * @example createServerCert({ ca: 'ca', names: ['localhost', '10.0.0.5'], out: 'server' })
 */
export function createServerCert(o: { ca: string; names: readonly string[]; out: string; days?: number | undefined; crlUrl?: string | undefined }): MadeCertificate {
  if (o.names.length === 0) throw bad('give at least one --name (a DNS name or an IP address)');
  const sans = [...new Set(o.names.map(sanFor))];
  return issue({ caDir: o.ca, out: o.out, base: 'server', subject: `/CN=${o.names[0]!.toLowerCase()}`, ext: ['extendedKeyUsage=serverAuth', `subjectAltName=${sans.join(',')}`], days: o.days ?? LEAF_DAYS, crlUrl: o.crlUrl });
}

/**
 * A client certificate for mutual TLS in `out/client.key` (0600) and `out/client.crt`: CN `name`,
 * and the role as the SAN URI `urn:palisade:role:<role>`.
 *
 * @example createClientCert({ ca: 'ca', name: 'node-2', role: 'node', out: 'node-2' })
 */
export function createClientCert(o: { ca: string; name: string; role: string; out: string; days?: number | undefined; crlUrl?: string | undefined }): MadeCertificate {
  if (!CLIENT_NAME.test(o.name)) throw bad(`--name "${o.name}": use letters, digits, ".", "_" and "-" (at most 64, starting with a letter or digit)`);
  if (!(CERT_ROLES as readonly string[]).includes(o.role)) throw bad(`--role must be one of ${CERT_ROLES.join(', ')}, not "${o.role}"`);
  return issue({ caDir: o.ca, out: o.out, base: 'client', subject: `/CN=${o.name}/O=Palisade`, ext: ['extendedKeyUsage=clientAuth', `subjectAltName=URI:${ROLE_URI_PREFIX}${o.role}`], days: o.days ?? LEAF_DAYS, crlUrl: o.crlUrl });
}
