/** Certificate checks, reload from changed files, and the expiry gauge and warning event. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { checkTlsPair } from '../../src/tls/check.ts';
import { watchTls, type KeyAndCert } from '../../src/tls/watch.ts';
import { createMetrics } from '../../src/metrics.ts';
import { createSecurityEvents, type SecurityEvent } from '../../src/siem/events.ts';
import { waitFor } from '../support/redis-procs.ts';
import { makePki, type TestPki } from '../support/certs.ts';

let pki: TestPki;
let a: ReturnType<TestPki['server']>;
let b: ReturnType<TestPki['server']>;

before(() => {
  pki = makePki();
  a = pki.server('a');
  b = pki.server('b');
});
after(() => pki.remove());

const YEAR_MS = 365 * 86_400_000;

test('checkTlsPair accepts a matching, valid pair and returns its certificate', () => {
  assert.equal(checkTlsPair(a.key, a.cert).serialNumber, a.serial);
});

test('checkTlsPair refuses a key of another certificate, an expired or not-yet-valid one, and garbage', () => {
  assert.throws(() => checkTlsPair(b.key, a.cert), /the private key does not belong to the certificate \(CN=localhost\)/);
  assert.throws(() => checkTlsPair(a.key, a.cert, Date.now() + 2 * YEAR_MS), /the certificate \(CN=localhost\) expired on \d{4}-/);
  assert.throws(() => checkTlsPair(a.key, a.cert, Date.now() - YEAR_MS), /is not valid before/);
  assert.throws(() => checkTlsPair(a.key, 'not a certificate'), /not a PEM X\.509 certificate/);
  assert.throws(() => checkTlsPair('not a key', a.cert), /not a PEM private key/);
});

/** A watch on fresh copies of pair a. Let the first poll take its baseline before changing the files. */
async function started(o: { now?: () => number; warnDays?: number } = {}) {
  const r = setup(o);
  await new Promise((resolve) => setTimeout(resolve, 150));
  return r;
}

function setup(o: { now?: () => number; warnDays?: number } = {}) {
  const dir = join(pki.dir, `live-${Math.random().toString(36).slice(2)}`);
  const files = { keyFile: `${dir}.key`, certFile: `${dir}.crt` };
  writeFileSync(files.keyFile, a.key);
  writeFileSync(files.certFile, a.cert);
  const events = createSecurityEvents(pino({ level: 'silent' }));
  const seen: SecurityEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const metrics = createMetrics();
  const applied: KeyAndCert[] = [];
  const watch = watchTls({ files, material: { key: a.key, cert: a.cert }, apply: (m) => applied.push(m), events, metrics, pollMs: 40, debounceMs: 60, ...o });
  return { files, seen, metrics, applied, watch };
}

test('a new valid pair written over the files is checked and applied; the reload is counted and logged', async () => {
  const { files, seen, metrics, applied, watch } = await started();
  try {
    writeFileSync(files.keyFile, b.key);
    writeFileSync(files.certFile, b.cert);
    await waitFor(() => applied.length === 1, 5000, 'the new pair to be applied');
    assert.equal(applied[0]!.cert, b.cert);
    assert.equal(watch.certificate.serialNumber, b.serial);
    const event = seen.find((e) => e.activity_name === 'tls.reload');
    assert.equal(event?.status, 'Success');
    const text = await metrics.registry.metrics();
    assert.match(text, /palisade_tls_certificate_reloads_total\{outcome="success"\} 1/);
    assert.match(text, new RegExp(`palisade_tls_certificate_expiry_seconds ${Math.floor(watch.certificate.validToDate.getTime() / 1000)}`));
  } finally {
    watch.close();
  }
});

test('a bad new pair (key of another certificate) is refused with a high-severity event; the old one stays', async () => {
  const { files, seen, metrics, applied, watch } = await started();
  try {
    copyFileSync(b.certFile, files.certFile); // the key stays a's: they do not match
    await waitFor(() => seen.some((e) => e.activity_name === 'tls.reload'), 5000, 'the refusal');
    const event = seen.find((e) => e.activity_name === 'tls.reload')!;
    assert.equal(event.status, 'Failure');
    assert.equal(event.severity, 'high');
    assert.match(event.message, /refused, the previous one stays: the private key does not belong to the certificate/);
    assert.equal(applied.length, 0);
    assert.equal(watch.certificate.serialNumber, a.serial);
    assert.match(await metrics.registry.metrics(), /palisade_tls_certificate_reloads_total\{outcome="failure"\} 1/);
    // Completing the rotation (the matching key lands) is then taken.
    copyFileSync(b.keyFile, files.keyFile);
    await waitFor(() => applied.length === 1, 5000, 'the completed pair to be applied');
    assert.equal(watch.certificate.serialNumber, b.serial);
  } finally {
    watch.close();
  }
});

test('a removed file is refused, not a crash', async () => {
  const { files, seen, applied, watch } = await started();
  try {
    writeFileSync(files.certFile, '');
    await waitFor(() => seen.some((e) => e.activity_name === 'tls.reload'), 5000, 'the refusal');
    assert.match(seen[0]!.message, /not a PEM X\.509 certificate/);
    assert.equal(applied.length, 0);
  } finally {
    watch.close();
  }
});

test('expiry: no warning while far away; a medium warning within the window, high on the last day, critical once expired', () => {
  let now = Date.now();
  const { seen, watch } = setup({ now: () => now });
  try {
    assert.equal(watch.checkExpiry(), undefined);
    assert.equal(seen.length, 0);
    const notAfter = watch.certificate.validToDate.getTime();
    now = notAfter - 10 * 86_400_000 - 1000;
    const soon = watch.checkExpiry();
    assert.equal(soon?.activity_name, 'tls.certificate.expiring');
    assert.equal(soon?.severity, 'medium');
    assert.match(soon!.message, /expires in 10 day\(s\)/);
    assert.equal(soon?.unmapped?.daysLeft, 10);
    now = notAfter - 3600_000;
    assert.equal(watch.checkExpiry()?.severity, 'high');
    now = notAfter + 1000;
    const expired = watch.checkExpiry();
    assert.equal(expired?.severity, 'critical');
    assert.match(expired!.message, /expired on/);
  } finally {
    watch.close();
  }
});

test('expiry is checked at start: a certificate inside the warning window warns at once', () => {
  const short = pki.server('short', { days: 3 });
  const events = createSecurityEvents(pino({ level: 'silent' }));
  const seen: SecurityEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const watch = watchTls({ material: { key: short.key, cert: short.cert }, apply: () => undefined, events, metrics: createMetrics(), warnDays: 14 });
  watch.close();
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.activity_name, 'tls.certificate.expiring');
  assert.match(seen[0]!.message, /expires in [23] day\(s\)/);
});
