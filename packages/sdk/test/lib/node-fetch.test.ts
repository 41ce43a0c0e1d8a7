/** The `ca` option over real TLS: a CA and a server certificate made with openssl for this test. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PalisadeError } from '@palisade/protocol';
import { Palisade } from '../../src/index.ts';
import { startFakeServer, type FakeServer } from '../helpers/fake-server.ts';

let dir = '';
let ca = '';
let server: FakeServer;
let haveOpenssl = true;

before(async () => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    haveOpenssl = false;
    return;
  }
  dir = mkdtempSync(join(tmpdir(), 'palisade-ca-'));
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Palisade Test CA']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  const ext = join(dir, 'ext.cnf');
  execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1\\n' > ${ext}`]);
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', ext]);
  ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
  server = await startFakeServer({ tls: { key: readFileSync(join(dir, 'server.key'), 'utf8'), cert: readFileSync(join(dir, 'server.pem'), 'utf8') } });
});

after(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('with `ca` the client trusts the private CA, runs a task and streams its events over TLS', async (t) => {
  if (!haveOpenssl) return t.skip('openssl is not installed');
  const palisade = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret, ca });
  let events = 0;
  const task = await palisade.run('ok', undefined, { onProgress: () => events++ });
  assert.equal(task.state, 'succeeded');
  assert.ok(events >= 8);
  await palisade.clients.create({ name: 'x' });
  const [c] = await palisade.clients.list();
  await palisade.clients.delete(c?.clientId as string); // a 204 without a body
  assert.deepEqual(await palisade.clients.list(), []);
});

test('without `ca` the same server is refused as unavailable, naming the certificate problem', async (t) => {
  if (!haveOpenssl) return t.skip('openssl is not installed');
  const palisade = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret });
  await assert.rejects(palisade.me(), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_UNAVAILABLE' && /certificate/i.test(e.message));
});

test('with `ca` an abort stops a request with the abort reason', async (t) => {
  if (!haveOpenssl) return t.skip('openssl is not installed');
  const palisade = new Palisade({ server: server.url, clientId: server.clientId, clientSecret: server.clientSecret, ca });
  const reason = new Error('stop');
  await assert.rejects(palisade.me({ signal: AbortSignal.abort(reason) }), (e: unknown) => e === reason);
});
