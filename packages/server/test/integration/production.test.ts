/**
 * Production mode refuses an insecure configuration at start-up and names every offending setting;
 * a secure one starts. Through `createPalisade` and through the `palisade-server` command.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createPalisade, type CreateOptions } from '../../src/app.ts';
import { InsecureConfigError } from '../../src/edge/production.ts';
import { ensureDevTls } from '../../src/tls/devca.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const EXT = 'chrome-extension://abcdefghijklmnopabcdefghijklmnop';

describe('production mode', () => {
  let dir: string;
  let good: { tlsKeyFile: string; tlsCertFile: string };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'palisade-prod-'));
    ensureDevTls(join(dir, 'tls'));
    good = { tlsKeyFile: join(dir, 'tls', 'server.key'), tlsCertFile: join(dir, 'tls', 'server.crt') };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const problems = async (o: CreateOptions): Promise<{ setting: string; problem: string }[]> => {
    try {
      const s = await createPalisade({ production: true, port: 0, dataDir: join(dir, 'data'), logger: pino({ level: 'silent' }), wsOrigins: [EXT], ...o });
      await s.close();
      return [];
    } catch (e) {
      if (!(e instanceof InsecureConfigError)) throw e;
      assert.match(e.message, /production mode refuses to start/);
      return e.problems;
    }
  };
  const settings = async (o: CreateOptions) => (await problems(o)).map((p) => p.setting);

  it('a secure configuration starts', async () => {
    assert.deepEqual(await problems({ ...good }), []);
  });

  it('the defaults are refused: generated development certificate, any extension may connect', async () => {
    const p = await problems({ wsOrigins: ['chrome-extension://*'] });
    assert.deepEqual(p.map((x) => x.setting), ['--tls-key/--tls-cert', '--ws-origin']);
    assert.match(p[0]!.problem, /development certificate/);
  });

  it('plain HTTP: refused on a public interface; on loopback only behind an https:// public URL', async () => {
    assert.deepEqual(await settings({ insecureHttp: true, host: '0.0.0.0' }), ['--insecure-http']);
    assert.deepEqual(await settings({ insecureHttp: true, host: '127.0.0.1' }), ['--public-url']);
    assert.deepEqual(await settings({ insecureHttp: true, host: '127.0.0.1', publicUrl: 'https://palisade.example.com' }), []);
  });

  it('weak TLS keys are refused', async () => {
    const key = join(dir, 'weak.key');
    const cert = join(dir, 'weak.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:1024', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    const p = await problems({ tlsKeyFile: key, tlsCertFile: cert });
    assert.deepEqual(p.map((x) => x.problem), ['RSA key of 1024 bits; at least 2048 are required']);
  });

  it('wildcard or plain-HTTP CORS origins, trusting every proxy, rate limits off, verbose logs and test-only upstreams are refused', async () => {
    // createPalisade refuses "*" on its own (in every mode); production also refuses remote http:// origins.
    const s = await settings({ ...good, corsOrigins: ['http://app.example.com'], trustProxy: ['0.0.0.0/0'], rateLimits: { ...(await import('../../src/config.ts')).DEFAULT_RATE_LIMITS, enabled: false }, logLevel: 'debug', upstreamInsecureHttp: true });
    assert.deepEqual(s, ['--cors-origin', 'upstreamInsecureHttp', 'rateLimits.enabled', '--trust-proxy', '--log-level']);
  });

  it('store secrets: default passwords, a remote Redis without password or TLS, a remote database without TLS', async () => {
    const p = await problems({ ...good, databaseUrl: 'postgres://palisade:postgres@db.internal:5432/palisade', redisUrl: 'redis://cache.internal:6379' });
    assert.deepEqual(p.map((x) => `${x.setting}: ${x.problem}`), [
      '--database: the password is a well-known default',
      '--database: no TLS to the database at db.internal; add sslmode=verify-full or --database-ca',
      '--redis: no password for the Redis server at cache.internal',
      '--redis: plain redis:// to cache.internal; use rediss:// (TLS)',
    ]);
  });

  it('the command exits 2 and lists every offending setting; a password on the command line is refused', () => {
    const r = spawnSync(process.execPath, [CLI, 'start', '--production', '--port', '0', '--data-dir', join(dir, 'cli')], { encoding: 'utf8', env: { ...process.env, PALISADE_ENV: '' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--tls-key\/--tls-cert: missing/);
    assert.match(r.stderr, /--ws-origin: "chrome-extension:\/\/\*" lets any extension connect/);
    const pw = spawnSync(process.execPath, [CLI, 'start', '--production', '--database', 'postgres://u:s3cret-Pa55@db:5432/x'], { encoding: 'utf8' });
    assert.equal(pw.status, 2);
    assert.match(pw.stderr, /never comes on the command line/);
    assert.ok(!pw.stderr.includes('s3cret-Pa55'), 'the secret is not echoed');
  });

  it('PALISADE_DATABASE_URL_FILE: the connection string comes from a file; an unreadable file is a clear error', () => {
    const missing = spawnSync(process.execPath, [CLI, 'start', '--port', '0'], { encoding: 'utf8', env: { ...process.env, PALISADE_DATABASE_URL_FILE: join(dir, 'nope') } });
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /PALISADE_DATABASE_URL_FILE: cannot read .*nope \(ENOENT\)/);
    writeFileSync(join(dir, 'db-url'), 'not-a-url\n');
    const bad = spawnSync(process.execPath, [CLI, 'start', '--production', ...['--tls-key', good.tlsKeyFile, '--tls-cert', good.tlsCertFile, '--ws-origin', EXT], '--port', '0', '--data-dir', join(dir, 'cli2')], { encoding: 'utf8', env: { ...process.env, PALISADE_DATABASE_URL_FILE: join(dir, 'db-url') } });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /--database: not a valid URL/);
  });
});
