/**
 * @module testssl — scans a Palisade server with testssl.sh (Debian's `testssl.sh` package) and
 * fails on any finding of MEDIUM severity or worse, or a grade below A+.
 *
 *   node scripts/testssl.ts                    # a fresh server on a free port (dev TLS), TLS 1.3 only
 *   node scripts/testssl.ts --min-version 1.2  # the same with TLS 1.2 allowed
 *   node scripts/testssl.ts --json out.json    # also write testssl's findings and the grade
 *
 * Debian 12's testssl.sh (3.0.x) reports findings but no grade (the rating came in 3.1), so the
 * grade is computed here from its findings with SSL Labs' SSL Server Rating Guide, the way newer
 * testssl.sh does; when testssl.sh reports its own grade, that one counts too.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createPalisade, type Palisade } from '../packages/server/src/app.ts';
import type { TlsMinVersion } from '../packages/server/src/tls/options.ts';
import { createCa, createServerCert } from '../packages/sdk/src/lib/node-certs.ts';

/** One finding of testssl.sh's flat JSON output (`--jsonfile`). */
export interface Finding {
  id: string;
  ip?: string;
  port?: string;
  severity: 'DEBUG' | 'INFO' | 'OK' | 'LOW' | 'MEDIUM' | 'HIGH' | 'CRITICAL' | 'WARN' | 'FATAL';
  cve?: string;
  cwe?: string;
  finding: string;
}

/** Severities that fail the check. */
export const FAILING_SEVERITIES: ReadonlySet<string> = new Set(['MEDIUM', 'HIGH', 'CRITICAL']);

/** The testssl.sh executable on PATH (`testssl` on Debian, `testssl.sh` elsewhere), or undefined. */
export function findTestssl(): string | undefined {
  for (const name of ['testssl', 'testssl.sh']) {
    if (spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0) return name;
  }
  return undefined;
}

export interface ScanResult {
  findings: Finding[];
  seconds: number;
  exitCode: number | null;
  command: string[];
}

/** Runs testssl.sh against `host:port` (connecting to `ip`), trusting `caFile`; resolves with its findings. */
export async function runTestssl(o: { bin: string; host: string; ip: string; port: number; caFile?: string | undefined; workDir: string; timeoutMs?: number }): Promise<ScanResult> {
  const jsonFile = join(o.workDir, 'testssl.json');
  const args = [
    '--quiet', '--color', '0', '--warnings', 'off', '--ip', o.ip, '--jsonfile', jsonFile,
    ...(o.caFile ? ['--add-ca', o.caFile] : []),
    `https://${o.host}:${o.port}`,
  ];
  const started = Date.now();
  const child = spawn(o.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERM: 'dumb' } });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
  const exitCode = await new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  clearTimeout(timer);
  const seconds = (Date.now() - started) / 1000;
  let findings: Finding[];
  try {
    findings = JSON.parse(readFileSync(jsonFile, 'utf8')) as Finding[];
  } catch (e) {
    throw new Error(`testssl.sh wrote no readable JSON (exit ${String(exitCode)}): ${(e as Error).message}\n${output.slice(-3000)}`);
  }
  return { findings, seconds, exitCode, command: [o.bin, ...args] };
}

export interface ScanOptions {
  /** Lowest TLS version the server accepts. Default 1.3. */
  minVersion?: TlsMinVersion;
  /**
   * Scan with the generated development CA instead of certificates made by `palisade certs` with a
   * published revocation list. The dev certificate names no CRL or OCSP URL, which testssl.sh
   * rates HIGH (`cert_revocation`): a fact about a local development CA, not about the TLS setup.
   */
  devCa?: boolean;
  /** testssl.sh executable. Default: found on PATH. */
  bin?: string;
}

/**
 * Starts a server node on a free port in a temporary folder and scans it. By default its key and
 * certificate are made as an operator would (`palisade certs ca` + `certs server --crl-url`), and
 * the CA's revocation list is published over HTTP on 127.0.0.1 while the scan runs.
 */
export async function scanFreshServer(o: ScanOptions = {}): Promise<ScanResult & { url: string; grade: Grade; failing: Finding[] }> {
  const bin = o.bin ?? findTestssl();
  if (!bin) throw new Error('testssl.sh is not installed (Debian: apt-get install testssl.sh)');
  const dir = mkdtempSync(join(tmpdir(), 'palisade-testssl-'));
  let server: Palisade | undefined;
  let crlServer: HttpServer | undefined;
  try {
    let files: { tlsKeyFile?: string; tlsCertFile?: string; caFile?: string } = {};
    if (!o.devCa) {
      const ca = createCa({ out: join(dir, 'ca') });
      const der = Buffer.from(readFileSync(ca.crlFile, 'utf8').replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
      crlServer = createHttpServer((req, res) => {
        if (req.url === '/ca.crl') res.writeHead(200, { 'content-type': 'application/pkix-crl', 'content-length': der.length }).end(der);
        else res.writeHead(404).end();
      });
      await new Promise<void>((resolve) => crlServer!.listen(0, '127.0.0.1', resolve));
      const crlUrl = `http://127.0.0.1:${(crlServer.address() as AddressInfo).port}/ca.crl`;
      const made = createServerCert({ ca: join(dir, 'ca'), names: ['localhost', '127.0.0.1'], out: join(dir, 'server'), crlUrl });
      files = { tlsKeyFile: made.keyFile, tlsCertFile: made.certFile, caFile: ca.certFile };
    }
    server = await createPalisade({
      port: 0, dataDir: join(dir, 'data'), logger: pino({ level: 'silent' }), tlsMinVersion: o.minVersion ?? '1.3',
      tlsKeyFile: files.tlsKeyFile, tlsCertFile: files.tlsCertFile,
    });
    const url = await server.listen();
    const port = Number(new URL(url).port);
    const result = await runTestssl({ bin, host: 'localhost', ip: '127.0.0.1', port, caFile: files.caFile ?? server.tls?.caFile, workDir: dir });
    // A server that cannot close after the scan (a connection it never lets go) is a finding too, not a hang.
    const closing = server;
    server = undefined;
    const closeError = await closeWithin(closing, 15_000).then(() => undefined, (e: Error) => e.message);
    if (closeError) result.findings.push({ id: 'palisade_server_close', severity: 'HIGH', finding: closeError });
    return { ...result, url, grade: gradeFindings(result.findings), failing: failingFindings(result.findings) };
  } finally {
    await server?.close();
    if (crlServer) await new Promise<void>((resolve) => crlServer!.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Closes the node; throws if that takes longer than `ms` (connections left open). */
async function closeWithin(server: Palisade, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the server did not close within ${ms / 1000} s after the scan: a connection testssl.sh left was never closed`)), ms);
  });
  try {
    await Promise.race([server.close(), late]);
  } finally {
    clearTimeout(timer);
  }
}

// ── grade: SSL Labs' SSL Server Rating Guide, computed from testssl.sh's findings ──────────────

/** The grade and how it came about. */
export interface Grade {
  grade: string;
  /** 0–100: 30 % protocol support, 30 % key exchange, 40 % cipher strength. */
  score: number;
  protocolScore: number;
  keyExchangeScore: number;
  cipherScore: number;
  /** Why the grade is capped below what the score gives. */
  caps: string[];
  /** HSTS max-age in seconds (A+ needs at least 180 days). */
  hstsMaxAge: number | undefined;
  /** The grade testssl.sh itself reported (testssl.sh 3.1 and later), if any. */
  testsslGrade: string | undefined;
}

const PROTOCOL_SCORE: Record<string, number> = { SSLv2: 0, SSLv3: 80, TLS1: 90, TLS1_1: 95, TLS1_2: 100, TLS1_3: 100 };
const VULNERABILITIES = new Set(['heartbleed', 'CCS', 'ticketbleed', 'ROBOT', 'secure_renego', 'secure_client_renego', 'CRIME_TLS', 'BREACH', 'POODLE_SSL', 'fallback_SCSV', 'SWEET32', 'FREAK', 'DROWN', 'LOGJAM', 'LOGJAM-common_primes', 'BEAST', 'LUCKY13', 'RC4', 'GREASE']);
const GRADES = ['A+', 'A', 'A-', 'B', 'C', 'D', 'E', 'F', 'M', 'T'];
/** Named-curve sizes as testssl.sh names them. */
const CURVE_BITS: Record<string, number> = { X25519: 253, X448: 448, prime256v1: 256, secp384r1: 384, secp521r1: 521, secp224r1: 224, secp192r1: 192, brainpoolP256r1: 256, brainpoolP384r1: 384, brainpoolP512r1: 512 };
/** At least 180 days, as testssl.sh and SSL Labs ask for A+. */
export const HSTS_MIN_SECONDS = 15_552_000;

function keyScore(kind: 'EC' | 'RSA', bits: number): number {
  const limits = kind === 'EC' ? [110, 123, 163, 225] : [512, 1024, 2048, 4096];
  return bits < limits[0]! ? 20 : bits < limits[1]! ? 40 : bits < limits[2]! ? 80 : bits < limits[3]! ? 90 : 100;
}

function cipherBitsScore(bits: number): number {
  return bits === 0 ? 0 : bits < 128 ? 20 : bits < 256 ? 80 : 100;
}

/** The worse of two grades. */
export function worseGrade(a: string, b: string): string {
  return GRADES.indexOf(a) >= GRADES.indexOf(b) ? a : b;
}

/** Grades a scan from its findings (see the guide: protocol, key exchange and cipher scores, then caps). */
export function gradeFindings(findings: readonly Finding[]): Grade {
  const byId = (id: string) => findings.find((f) => f.id === id);
  const offered = (id: string) => /^offered/.test(byId(id)?.finding ?? '');
  const caps: Array<[string, string]> = [];
  const cap = (grade: string, why: string) => caps.push([grade, why]);

  const protocols = Object.keys(PROTOCOL_SCORE).filter(offered);
  if (protocols.length === 0) throw new Error('the findings name no offered protocol: the scan did not run through');
  const pScores = protocols.map((p) => PROTOCOL_SCORE[p]!);
  const protocolScore = (Math.max(...pScores) + Math.min(...pScores)) / 2;
  if (offered('SSLv2')) cap('F', 'SSLv2 offered');
  if (offered('SSLv3')) cap('B', 'SSLv3 offered');
  if (offered('TLS1') || offered('TLS1_1')) cap('B', 'TLS 1.0 or 1.1 offered');
  if (!offered('TLS1_2') && !offered('TLS1_3')) cap('C', 'neither TLS 1.2 nor TLS 1.3 offered');

  // Key exchange: the server key, and the weakest ephemeral group of any suite offered.
  const ciphers = findings.filter((f) => /^cipher_x[0-9a-f]+$/i.test(f.id)).map((f) => {
    const m = /^x\S+\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)/.exec(f.finding.trim());
    if (!m) throw new Error(`cannot read the cipher line "${f.finding}"`);
    return { name: m[1]!, kx: m[2]!, kxBits: Number(m[3]), enc: m[4]!, bits: Number(m[5]) };
  });
  if (ciphers.length === 0) throw new Error('the findings list no cipher suites (cipher_x…): run testssl.sh without --fast or -e off');
  let keyExchangeScore = 100;
  for (const f of findings.filter((x) => x.id.startsWith('cert_keySize'))) {
    const m = /^(EC|RSA|DSA|EdDSA)\s+(\d+)/.exec(f.finding);
    if (!m) continue;
    const ec = m[1] === 'EC' || m[1] === 'EdDSA';
    const size = Number(m[2]);
    keyExchangeScore = Math.min(keyExchangeScore, keyScore(ec ? 'EC' : 'RSA', size));
    if (size < (ec ? 123 : 1024)) cap('F', `insecure server key (${f.finding})`);
    else if (size < (ec ? 163 : 2048)) cap('B', `weak server key (${f.finding})`);
  }
  for (const c of ciphers) keyExchangeScore = Math.min(keyExchangeScore, c.kx === 'ECDH' ? keyScore('EC', c.kxBits) : c.kx === 'DH' ? keyScore('RSA', c.kxBits) : 100);
  for (const curve of (byId('PFS_ECDHE_curves')?.finding ?? '').split(/\s+/).filter(Boolean)) {
    if (CURVE_BITS[curve] !== undefined) keyExchangeScore = Math.min(keyExchangeScore, keyScore('EC', CURVE_BITS[curve]));
  }

  const bits = ciphers.map((c) => c.bits);
  const cipherScore = (cipherBitsScore(Math.max(...bits)) + cipherBitsScore(Math.min(...bits))) / 2;
  if (ciphers.some((c) => /RC4/i.test(c.name))) cap('C', 'RC4 offered');
  if (ciphers.some((c) => /3DES|DES-CBC3|IDEA/i.test(c.name))) cap('C', '64-bit block ciphers (3DES, IDEA) offered');
  if (ciphers.some((c) => c.kx === 'RSA' || !/ECDH|DH/.test(c.kx))) cap('B', 'suites without forward secrecy offered');
  if (!/^offered/.test(byId('PFS')?.finding ?? '')) cap('B', 'no forward secrecy');
  if (ciphers.some((c) => !/GCM|CHACHA|POLY1305|CCM/i.test(`${c.name} ${c.enc}`))) cap('A-', 'suites without AEAD offered');
  const scsv = byId('fallback_SCSV');
  if (scsv && FAILING_SEVERITIES.has(scsv.severity)) cap('A-', `TLS_FALLBACK_SCSV: ${scsv.finding}`);

  for (const f of findings) {
    if (VULNERABILITIES.has(f.id) && (f.severity === 'HIGH' || f.severity === 'CRITICAL')) cap('F', `${f.id}: ${f.finding}`);
  }
  const chain = findings.filter((f) => f.id.startsWith('cert_chain_of_trust'));
  if (chain.length === 0 || chain.some((f) => f.severity !== 'OK' && f.severity !== 'INFO')) cap('T', `certificate not trusted: ${chain.map((f) => f.finding).join('; ') || 'no chain-of-trust finding'}`);
  for (const f of findings.filter((x) => x.id.startsWith('cert_trust'))) if (FAILING_SEVERITIES.has(f.severity)) cap('M', `certificate name mismatch: ${f.finding}`);
  for (const f of findings.filter((x) => x.id.startsWith('cert_expirationStatus'))) if (f.severity === 'CRITICAL') cap('T', `certificate expired: ${f.finding}`);
  for (const f of findings.filter((x) => x.id.startsWith('cert_signatureAlgorithm'))) if (f.severity === 'HIGH' || f.severity === 'CRITICAL') cap('T', `insecure certificate signature: ${f.finding}`);

  const score = Math.round(0.3 * protocolScore + 0.3 * keyExchangeScore + 0.4 * cipherScore);
  let grade = score >= 80 ? 'A' : score >= 65 ? 'B' : score >= 50 ? 'C' : score >= 35 ? 'D' : score >= 20 ? 'E' : 'F';
  for (const [g] of caps) grade = worseGrade(grade, g);
  // testssl.sh 3.0: `HSTS_time` "365 days (=31536000 seconds) > 15552000 seconds", or `HSTS` "not offered".
  const hsts = (byId('HSTS_time') ?? byId('HSTS'))?.finding ?? '';
  const maxAge = /\(=(\d+) seconds\)/.exec(hsts) ?? /=(\d+) s\b/.exec(hsts);
  const hstsMaxAge = maxAge ? Number(maxAge[1]) : undefined;
  if (grade === 'A') {
    if (hstsMaxAge !== undefined && hstsMaxAge >= HSTS_MIN_SECONDS) grade = 'A+';
    else caps.push(['A', hstsMaxAge === undefined ? 'no HSTS header (A+ needs HSTS with max-age of at least 180 days)' : `HSTS max-age ${hstsMaxAge} s is under 180 days`]);
  }
  const testsslGrade = byId('overall_grade')?.finding;
  if (testsslGrade && GRADES.includes(testsslGrade)) grade = worseGrade(grade, testsslGrade);
  return { grade, score, protocolScore, keyExchangeScore, cipherScore, caps: caps.map(([g, why]) => `${g}: ${why}`), hstsMaxAge, testsslGrade };
}

/**
 * What fails the check: every finding of MEDIUM severity or worse, and a scan that aborted (FATAL).
 * WARN (one check could not connect, e.g. on a loaded machine) is printed, not failed on.
 */
export function failingFindings(findings: readonly Finding[]): Finding[] {
  return findings.filter((f) => FAILING_SEVERITIES.has(f.severity) || f.severity === 'FATAL');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { 'min-version': { type: 'string' }, 'dev-ca': { type: 'boolean' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write('Usage: node scripts/testssl.ts [--min-version 1.3|1.2] [--dev-ca] [--json FILE]\n');
    return 0;
  }
  const minVersion = values['min-version'] ?? '1.3';
  if (minVersion !== '1.3' && minVersion !== '1.2') throw new Error(`--min-version must be 1.3 or 1.2, not "${minVersion}"`);
  const started = new Date();
  const r = await scanFreshServer({ minVersion, devCa: values['dev-ca'] === true });
  if (values.json) writeFileSync(values.json, JSON.stringify({ date: started.toISOString(), minVersion, devCa: values['dev-ca'] === true, ...r }, null, 2));
  const out = process.stdout;
  const version = r.findings.find((f) => f.id === 'scanTime');
  out.write(`testssl.sh scan of ${r.url} (TLS ${minVersion}+${values['dev-ca'] ? ', dev CA' : ''}): ${r.findings.length} findings in ${r.seconds.toFixed(0)} s${version ? '' : ''}\n`);
  out.write(`  command   ${r.command.join(' ')}\n`);
  const count = (sev: string) => r.findings.filter((f) => f.severity === sev).length;
  out.write(`  severity  ${['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'WARN', 'FATAL'].map((s) => `${s} ${count(s)}`).join(', ')}\n`);
  out.write(`  grade     ${r.grade.grade} (score ${r.grade.score}: protocols ${r.grade.protocolScore}, key exchange ${r.grade.keyExchangeScore}, ciphers ${r.grade.cipherScore}; HSTS ${r.grade.hstsMaxAge ?? 'none'}${r.grade.testsslGrade ? `; testssl.sh says ${r.grade.testsslGrade}` : ''})\n`);
  for (const c of r.grade.caps) out.write(`            capped ${c}\n`);
  for (const f of r.findings.filter((x) => x.severity === 'LOW' || x.severity === 'WARN')) out.write(`  ${f.severity.padEnd(9)} ${f.id}: ${f.finding}\n`);
  for (const f of r.failing) out.write(`  ${f.severity.padEnd(9)} ${f.id}: ${f.finding}\n`);
  const ok = r.failing.length === 0 && r.grade.grade === 'A+';
  out.write(ok ? '\n✔ no finding of MEDIUM severity or worse, grade A+\n' : `\n✖ ${r.failing.length} finding(s) of MEDIUM severity or worse; grade ${r.grade.grade}\n`);
  return ok ? 0 : 1;
}

if (import.meta.main) {
  main().then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`testssl: ${(e as Error).message}\n`);
    process.exit(2);
  });
}
