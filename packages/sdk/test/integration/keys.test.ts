/**
 * `palisade.keys` and `palisade keys` against the real server: the signing-key ring listed and
 * rotated by an admin signed in through the real device grant; tokens issued before a rotation keep
 * working; API clients are refused. The tests run in order (the rotation changes the ring).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Palisade, PalisadeError, type SigningKey } from '../../src/index.ts';
import { credentialsPath, saveLogin } from '../../src/cli/credentials.ts';
import { apiClient, clientToken, createAdmin, deviceLogin, startTestServer, type DeviceTokens, type TestServer } from '../../../server/test/support/harness.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

/** The `kid` in a JWT's header. */
const kidOf = (jwt: string): string => (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString('utf8')) as { kid: string }).kid;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe('signing keys: SDK and CLI against the real server', () => {
  let t: TestServer;
  let ca: string;
  let caFile: string;
  let admin: DeviceTokens;
  let api: { clientId: string; clientSecret: string };
  let dir: string;
  const dirs: string[] = [];

  const sdk = (token: string): Palisade => new Palisade({ server: t.url, accessToken: token, ca });
  const byStatus = (keys: SigningKey[], status: SigningKey['status']) => keys.filter((k) => k.status === status);
  const cli = (args: string[], env: Record<string, string> = {}): Promise<Result> =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir, NO_COLOR: '1', ...env }, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    ca = t.server.tls!.ca!;
    dir = mkdtempSync(join(tmpdir(), 'pal-keys-'));
    dirs.push(dir);
    caFile = join(dir, 'ca.crt');
    writeFileSync(caFile, ca);
    admin = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
    saveLogin(credentialsPath({ XDG_CONFIG_HOME: dir }), {
      version: 1,
      server: t.url,
      clientId: 'palisade-cli',
      accessToken: admin.access_token,
      refreshToken: admin.refresh_token!,
      expiresAt: Date.now() + admin.expires_in * 1000,
      caFile,
      savedAt: new Date().toISOString(),
    });
    api = await apiClient(t, 'keys test');
  });
  after(async () => {
    await t?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('keys.list() and `palisade keys` show the ring: one current (the signer of our tokens) and one next', async () => {
    const keys = await sdk(admin.access_token).keys.list();
    assert.equal(byStatus(keys, 'current').length, 1);
    assert.equal(byStatus(keys, 'next').length, 1);
    assert.equal(byStatus(keys, 'current')[0]!.kid, kidOf(admin.access_token));
    assert.ok(keys.every((k) => typeof k.kid === 'string' && !Number.isNaN(Date.parse(k.createdAt))));

    const json = await cli(['keys', 'list', '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { keys });

    const human = await cli(['keys']);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^KID\s+STATUS\s+CREATED\s+RETIRES$/);
    assert.match(lines[1]!, new RegExp(`^${byStatus(keys, 'current')[0]!.kid}\\s+current\\s+\\S+\\s+-$`));
    assert.match(lines[2]!, new RegExp(`^${byStatus(keys, 'next')[0]!.kid}\\s+next\\s+`));
    assert.equal(lines.length, 3);
  });

  it('keys.rotate(): the next key becomes current, the old one is retired until its tokens expire, and they still work', async () => {
    const before = await sdk(admin.access_token).keys.list();
    const oldCurrent = byStatus(before, 'current')[0]!.kid;
    const oldNext = byStatus(before, 'next')[0]!.kid;
    const apiBefore = await clientToken(t, api.clientId, api.clientSecret);
    assert.equal(kidOf(apiBefore), oldCurrent);

    const after = await sdk(admin.access_token).keys.rotate();
    assert.equal(byStatus(after, 'current')[0]?.kid, oldNext, 'the key published as next now signs');
    const retired = byStatus(after, 'retired');
    assert.deepEqual(retired.map((k) => k.kid), [oldCurrent]);
    assert.ok(Date.parse(retired[0]!.retireAfter!) > Date.now(), 'kept until its last token expires');
    const newNext = byStatus(after, 'next')[0]!.kid;
    assert.ok(![oldCurrent, oldNext].includes(newNext), 'a new next key');
    assert.deepEqual(await sdk(admin.access_token).keys.list(), after);

    // Tokens from before the rotation still work: the admin's (a person's) and the API client's.
    assert.equal((await sdk(admin.access_token).me()).clientId, 'palisade-cli');
    assert.equal((await sdk(apiBefore).me()).clientId, api.clientId);
    // New tokens are signed by the new current key.
    assert.equal(kidOf(await clientToken(t, api.clientId, api.clientSecret)), oldNext);
  });

  it('`palisade keys rotate` names the new current key and how long the old tokens stay valid', async () => {
    const before = await sdk(admin.access_token).keys.list();
    const oldNext = byStatus(before, 'next')[0]!.kid;
    const r = await cli(['keys', 'rotate']);
    assert.equal(r.code, 0, r.stderr);
    const after = await sdk(admin.access_token).keys.list();
    const latest = byStatus(after, 'retired').map((k) => k.retireAfter!).sort().at(-1)!;
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], `✔ rotated: key ${oldNext} signs new tokens from now on`);
    assert.equal(lines[1], `tokens signed before stay valid until they expire, at the latest ${latest}`);
    assert.match(lines[2]!, /^KID\s+STATUS\s+CREATED\s+RETIRES$/);
    assert.match(lines[3]!, new RegExp(`^${oldNext}\\s+current\\s+`));
    assert.equal(byStatus(after, 'current')[0]!.kid, oldNext);
    assert.equal(byStatus(after, 'retired').length, 2, 'both earlier signers are kept while their tokens live');

    const json = await cli(['keys', 'rotate', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const rotated = (JSON.parse(json.stdout) as { keys: SigningKey[] }).keys;
    assert.equal(byStatus(rotated, 'current')[0]!.kid, byStatus(after, 'next')[0]!.kid);
    // The saved login's token predates both rotations and still works.
    assert.equal((await cli(['whoami'])).code, 0);
  });

  it('an API client cannot list or rotate keys: PAL_ERR_FORBIDDEN, exit 3', async () => {
    const client = new Palisade({ server: t.url, clientId: api.clientId, clientSecret: api.clientSecret, ca });
    const forbidden = (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_FORBIDDEN';
    await assert.rejects(client.keys.list(), forbidden);
    await assert.rejects(client.keys.rotate(), forbidden);
    const before = await sdk(admin.access_token).keys.list();
    const env = { PALISADE_SERVER: t.url, PALISADE_CA_FILE: caFile, PALISADE_CLIENT_ID: api.clientId, PALISADE_CLIENT_SECRET: api.clientSecret };
    const json = await cli(['keys', '--json'], env);
    assert.equal(json.code, 3);
    assert.equal(JSON.parse(json.stdout).code, 'PAL_ERR_FORBIDDEN');
    const rotate = await cli(['keys', 'rotate'], env);
    assert.equal(rotate.code, 3);
    assert.match(rotate.stderr, /error PAL_ERR_FORBIDDEN/);
    assert.match(rotate.stderr, /hint: .*admin/);
    assert.deepEqual(await sdk(admin.access_token).keys.list(), before, 'nothing rotated');
  });
});
