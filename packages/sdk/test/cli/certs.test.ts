/**
 * `palisade certs`: the files it writes verify with `openssl verify`, carry the right key usage,
 * EKU, SANs, role and validity, keys are mode 0600, and bad arguments fail with exit 2 and a
 * message that says what is wrong.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../../src/cli/main.ts';

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'palisade-certs-test-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = {
    stdout: { write: (t: string) => out.push(t), isTTY: false },
    stderr: { write: (t: string) => err.push(t), isTTY: false },
    env: { XDG_CONFIG_HOME: '/nonexistent-palisade-test' },
  };
  const code = await main(argv, io);
  return { code, out: out.join(''), err: err.join('') };
}

const mode = (file: string) => statSync(file).mode & 0o777;
const verify = (...certs: string[]) => execFileSync('openssl', ['verify', '-CAfile', join(dir, 'ca', 'ca.crt'), ...certs], { encoding: 'utf8' });
/** The text dump of a certificate's extensions. */
const text = (file: string) => execFileSync('openssl', ['x509', '-in', file, '-noout', '-text'], { encoding: 'utf8' });

test('certs ca: an EC P-256 CA (CA:TRUE, pathlen 0, keyCertSign + cRLSign), key 0600, and an empty CRL', async () => {
  const r = await cli('certs', 'ca', '--out', join(dir, 'ca'), '--json');
  assert.equal(r.code, 0, r.err);
  const made = JSON.parse(r.out) as { files: { key: string; certificate: string; crl: string }; notAfter: string };
  assert.equal(mode(made.files.key), 0o600);
  assert.equal(mode(join(dir, 'ca')), 0o700);
  const ca = new X509Certificate(readFileSync(made.files.certificate));
  assert.equal(ca.ca, true);
  assert.equal(ca.subject, 'CN=Palisade Local CA\nO=Palisade');
  assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.ok(ca.checkPrivateKey(createPrivateKey(readFileSync(made.files.key))));
  assert.ok(ca.verify(ca.publicKey), 'self-signed');
  const dump = text(made.files.certificate);
  assert.match(dump, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
  assert.match(dump, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
  const days = (ca.validToDate.getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 3649 && days <= 3650, `${days} days`);
  const crl = execFileSync('openssl', ['crl', '-in', made.files.crl, '-noout', '-text', '-CAfile', made.files.certificate], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  assert.match(crl, /No Revoked Certificates/);
});

test('certs server: serverAuth, DNS and IP SANs, signed by the CA, key 0600', async () => {
  const r = await cli('certs', 'server', '--ca', join(dir, 'ca'), '--name', 'localhost', '--name', '10.0.0.5', '--name', 'Palisade.Example.com', '--out', join(dir, 'server'), '--crl-url', 'http://ca.example/ca.crl');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /subjectAltName\s+DNS:localhost, IP Address:10\.0\.0\.5, DNS:palisade\.example\.com/);
  const certFile = join(dir, 'server', 'server.crt');
  assert.equal(verify(certFile).trim(), `${certFile}: OK`);
  assert.equal(mode(join(dir, 'server', 'server.key')), 0o600);
  const cert = new X509Certificate(readFileSync(certFile));
  assert.equal(cert.ca, false);
  assert.equal(cert.subject, 'CN=localhost');
  assert.equal(cert.checkHost('localhost'), 'localhost');
  assert.equal(cert.checkIP('10.0.0.5'), '10.0.0.5');
  assert.equal(cert.checkHost('other.example'), undefined);
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  const dump = text(certFile);
  assert.match(dump, /Key Usage: critical\s+Digital Signature\n/);
  assert.match(dump, /Extended Key Usage: \s*\n\s+TLS Web Server Authentication\n/);
  assert.match(dump, /CRL Distribution Points:[\s\S]*URI:http:\/\/ca\.example\/ca\.crl/);
  const days = (cert.validToDate.getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 396 && days <= 397, `${days} days`);
  assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'server', 'server.key')))));
});

test('certs client: clientAuth, CN the name, the role as SAN URI urn:palisade:role:<role>', async () => {
  const r = await cli('certs', 'client', '--ca', join(dir, 'ca'), '--name', 'node-2', '--role', 'admin', '--out', join(dir, 'node-2'), '--days', '30', '--json');
  assert.equal(r.code, 0, r.err);
  const certFile = join(dir, 'node-2', 'client.crt');
  assert.equal(verify(certFile).trim(), `${certFile}: OK`);
  assert.equal(mode(join(dir, 'node-2', 'client.key')), 0o600);
  const cert = new X509Certificate(readFileSync(certFile));
  assert.equal(cert.subject, 'CN=node-2\nO=Palisade');
  assert.equal(cert.subjectAltName, 'URI:urn:palisade:role:admin');
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
  assert.equal(JSON.parse(r.out).subjectAltName, 'URI:urn:palisade:role:admin');
  const days = (cert.validToDate.getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 29 && days <= 30, `${days} days`);
  // openssl agrees on the purposes: a client certificate, not a server one.
  execFileSync('openssl', ['verify', '-purpose', 'sslclient', '-CAfile', join(dir, 'ca', 'ca.crt'), certFile]);
  assert.throws(() => execFileSync('openssl', ['verify', '-purpose', 'sslserver', '-CAfile', join(dir, 'ca', 'ca.crt'), certFile], { stdio: 'pipe' }));
});

test('certs crl: signs the revocation list again', async () => {
  const before = readFileSync(join(dir, 'ca', 'ca.crl'), 'utf8');
  const r = await cli('certs', 'crl', '--ca', join(dir, 'ca'));
  assert.equal(r.code, 0, r.err);
  assert.notEqual(readFileSync(join(dir, 'ca', 'ca.crl'), 'utf8'), before);
});

test('bad arguments exit 2 and say what is wrong; nothing is written', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['certs', 'ca'], /--out DIR is required/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--out', join(dir, 'x1')], /--name is required/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--name', 'bad name!', '--out', join(dir, 'x2')], /--name "bad name!" is neither a DNS name nor an IP address/],
    [['certs', 'server', '--ca', join(dir, 'nope'), '--name', 'localhost', '--out', join(dir, 'x3')], /--ca .*nope is not a folder made by `palisade certs ca`/],
    [['certs', 'server', '--ca', join(dir, 'server'), '--name', 'localhost', '--out', join(dir, 'x4')], /has no ca\.crt/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--name', 'localhost', '--out', join(dir, 'x5'), '--days', '900'], /--days must be a whole number from 1 to 825, not 900/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--name', 'localhost', '--out', join(dir, 'x6'), '--days', 'soon'], /--days must be a whole number of days, not "soon"/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--name', 'localhost', '--out', join(dir, 'x7'), '--crl-url', 'ftp://x'], /--crl-url must be an http:\/\/ or https:\/\/ URL/],
    [['certs', 'client', '--ca', join(dir, 'ca'), '--name', 'node-3', '--role', 'root', '--out', join(dir, 'x8')], /--role must be one of admin, metrics, node, not "root"/],
    [['certs', 'client', '--ca', join(dir, 'ca'), '--name', 'node-3', '--out', join(dir, 'x9')], /--role admin\|metrics\|node is required/],
    [['certs', 'client', '--ca', join(dir, 'ca'), '--name', 'a/CN=b', '--role', 'admin', '--out', join(dir, 'x10')], /--name "a\/CN=b": use letters, digits/],
    [['certs', 'client', '--ca', join(dir, 'ca'), '--name', 'a', '--name', 'b', '--role', 'admin', '--out', join(dir, 'x11')], /give one --name for a client certificate/],
    [['certs', 'ca', '--out', join(dir, 'ca')], /ca\.key exists already; remove it or choose another --out folder/],
    [['certs', 'server', '--ca', join(dir, 'ca'), '--name', 'localhost', '--out', join(dir, 'server')], /server\.key exists already/],
    [['certs', 'ca', '--out', join(dir, 'x12'), '--bogus'], /Unknown option '--bogus'/],
  ];
  for (const [argv, message] of cases) {
    const r = await cli(...argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: exit ${r.code}\n${r.err}`);
    assert.match(r.err, message, argv.join(' '));
  }
  for (const x of ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'x7', 'x8', 'x9', 'x10', 'x11', 'x12']) {
    assert.throws(() => statSync(join(dir, x, 'server.key')), /ENOENT/);
    assert.throws(() => statSync(join(dir, x, 'client.key')), /ENOENT/);
  }
});

test('a CA key that does not belong to the CA certificate is refused', async () => {
  const r1 = await cli('certs', 'ca', '--out', join(dir, 'ca2'));
  assert.equal(r1.code, 0, r1.err);
  writeFileSync(join(dir, 'ca2', 'ca.key'), readFileSync(join(dir, 'ca', 'ca.key')));
  const r = await cli('certs', 'server', '--ca', join(dir, 'ca2'), '--name', 'localhost', '--out', join(dir, 'x13'));
  assert.equal(r.code, 2);
  assert.match(r.err, /ca\.key is not the key of .*ca2\/ca\.crt/);
});

test('the palisade executable runs certs (a subprocess, as a person would)', () => {
  const bin = new URL('../../src/cli.ts', import.meta.url).pathname;
  const out = execFileSync(process.execPath, [bin, 'certs', 'client', '--ca', join(dir, 'ca'), '--name', 'prometheus', '--role', 'metrics', '--out', join(dir, 'prom')], { encoding: 'utf8' });
  assert.match(out, /subjectAltName\s+URI:urn:palisade:role:metrics/);
  assert.equal(mode(join(dir, 'prom', 'client.key')), 0o600);
});

test('`palisade certs` alone lists its subcommands (exit 2); with --help, exit 0', async () => {
  const bare = await cli('certs');
  assert.equal(bare.code, 2);
  assert.match(bare.err, /"certs" needs a subcommand: ca, server, client, crl/);
  const help = await cli('certs', '--help');
  assert.equal(help.code, 0);
  assert.match(help.out, /palisade certs client --ca DIR --name NAME --role admin\|metrics\|node --out DIR/);
});
