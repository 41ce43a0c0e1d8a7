/**
 * testssl.sh against a real server node (scripts/testssl.ts): no finding of MEDIUM severity or
 * worse, and grade A+. Takes about 40 s. In CI (`CI=true`) a missing testssl.sh is an error
 * (.ci/run installs Debian's `testssl.sh`); elsewhere the test skips and says so loudly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findTestssl, gradeFindings, scanFreshServer, type Finding } from '../../../../scripts/testssl.ts';

const bin = findTestssl();
if (!bin && process.env.CI === 'true') throw new Error('testssl.sh is not installed, and CI=true requires the TLS scan to run (apt-get install testssl.sh)');
if (!bin) process.stderr.write('\n\n!!! SKIPPED: testssl.sh scan — testssl.sh is not installed (apt-get install testssl.sh; it runs in CI) !!!\n\n');

test('testssl.sh: no finding of MEDIUM severity or worse, grade A+ (TLS 1.3 only, the default)', { skip: bin ? false : 'no testssl.sh', timeout: 240_000 }, async () => {
  const r = await scanFreshServer({ bin });
  const summary = r.failing.map((f) => `${f.severity} ${f.id}: ${f.finding}`).join('\n');
  assert.deepEqual(r.failing, [], `findings of MEDIUM severity or worse:\n${summary}`);
  assert.equal(r.grade.grade, 'A+', `grade ${r.grade.grade}: ${r.grade.caps.join('; ')}`);
  // The scan really ran: protocols, the certificate and the cipher list were examined.
  const ids = new Set(r.findings.map((f) => f.id));
  for (const id of ['TLS1_2', 'TLS1_3', 'cert_chain_of_trust', 'cipher_x1302', 'heartbleed', 'HSTS_time']) assert.ok(ids.has(id), `no ${id} finding`);
  assert.equal(r.findings.find((f) => f.id === 'TLS1_2')?.finding, 'not offered');
});

test('the grade drops for what SSL Labs caps: TLS 1.0, no forward secrecy, CBC suites, no HSTS, an untrusted chain', () => {
  const base: Finding[] = [
    { id: 'TLS1_3', severity: 'OK', finding: 'offered with final' },
    { id: 'TLS1_2', severity: 'INFO', finding: 'not offered' },
    { id: 'PFS', severity: 'OK', finding: 'offered' },
    { id: 'cert_keySize', severity: 'OK', finding: 'EC 256 bits' },
    { id: 'cert_chain_of_trust', severity: 'OK', finding: 'passed.' },
    { id: 'cipher_x1302', severity: 'INFO', finding: 'x1302   TLS_AES_256_GCM_SHA384            ECDH 253   AESGCM      256      TLS_AES_256_GCM_SHA384' },
    { id: 'cipher_x1301', severity: 'INFO', finding: 'x1301   TLS_AES_128_GCM_SHA256            ECDH 253   AESGCM      128      TLS_AES_128_GCM_SHA256' },
    { id: 'HSTS_time', severity: 'OK', finding: '365 days (=31536000 seconds) > 15552000 seconds' },
  ];
  assert.equal(gradeFindings(base).grade, 'A+');
  assert.equal(gradeFindings(base).score, 96);
  const without = (id: string) => base.filter((f) => f.id !== id);
  assert.equal(gradeFindings([...without('HSTS_time'), { id: 'HSTS', severity: 'LOW', finding: 'not offered' }]).grade, 'A');
  assert.equal(gradeFindings([...base, { id: 'TLS1', severity: 'LOW', finding: 'offered (deprecated)' }]).grade, 'B');
  assert.equal(gradeFindings([...without('PFS'), { id: 'PFS', severity: 'MEDIUM', finding: 'not offered' }]).grade, 'B');
  assert.equal(gradeFindings([...base, { id: 'cipher_xc027', severity: 'INFO', finding: 'xc027   ECDHE-RSA-AES128-SHA256           ECDH 253   AES         128      TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256' }]).grade, 'A-');
  assert.equal(gradeFindings([...without('cert_chain_of_trust'), { id: 'cert_chain_of_trust', severity: 'CRITICAL', finding: 'failed (self signed).' }]).grade, 'T');
  assert.equal(gradeFindings([...base, { id: 'heartbleed', severity: 'CRITICAL', finding: 'VULNERABLE' }]).grade, 'F');
  assert.equal(gradeFindings([...without('cert_keySize'), { id: 'cert_keySize', severity: 'MEDIUM', finding: 'RSA 1024 bits' }]).grade, 'B');
});
