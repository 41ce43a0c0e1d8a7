/**
 * `palisade.users.create` and `palisade users add --password-stdin` against the real server: an
 * admin creates a password account, and its person then signs in with that password through the
 * real device grant.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Palisade, PalisadeError } from '../../src/index.ts';
import { credentialsPath, saveLogin } from '../../src/cli/credentials.ts';
import { createAdmin, deviceLogin, startTestServer, type TestServer } from '../../../server/test/support/harness.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

describe('users: SDK and CLI against the real server', () => {
  let t: TestServer;
  let ca: string;
  let dir: string;

  /** Runs the CLI with the admin's saved login, `input` on its standard input. */
  const cli = (args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const child = execFile(
        process.execPath,
        [CLI, ...args],
        { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir, NO_COLOR: '1' }, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
      if (input !== undefined) child.stdin!.end(input);
      else child.stdin!.end();
    });
  const signsIn = async (username: string, password: string) => {
    const tokens = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks', { username, password });
    return (await new Palisade({ server: t.url, accessToken: tokens.access_token, ca }).me()).sub;
  };

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    ca = t.server.tls!.ca!;
    dir = mkdtempSync(join(tmpdir(), 'pal-users-'));
    writeFileSync(join(dir, 'ca.crt'), ca);
    const admin = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
    saveLogin(credentialsPath({ XDG_CONFIG_HOME: dir }), {
      version: 1, server: t.url, clientId: 'palisade-cli', accessToken: admin.access_token, refreshToken: admin.refresh_token!,
      expiresAt: Date.now() + admin.expires_in * 1000, caFile: join(dir, 'ca.crt'), savedAt: new Date().toISOString(),
    });
  });
  after(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the SDK creates an account; the person signs in with the password; a taken name is PAL_ERR_CONFLICT', async () => {
    const admin = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
    const p = new Palisade({ server: t.url, accessToken: admin.access_token, ca });
    const user = await p.users.create({ username: 'grace', password: 'compiler of the first compiler' });
    assert.equal(user.username, 'grace');
    assert.equal(user.role, 'user');
    assert.equal(await signsIn('grace', 'compiler of the first compiler'), user.id);
    await assert.rejects(p.users.create({ username: 'grace', password: 'another long passphrase' }), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_CONFLICT');
  });

  it('`palisade users add NAME --password-stdin` reads the password from standard input, never from the command line', async () => {
    const made = await cli(['users', 'add', 'ada', '--password-stdin', '--json'], 'notes on the analytical engine\n');
    assert.equal(made.code, 0, made.stderr);
    const user = JSON.parse(made.stdout) as { id: string; username: string };
    assert.equal(user.username, 'ada');
    assert.equal(await signsIn('ada', 'notes on the analytical engine'), user.id, 'the first line, without its newline, is the password');

    const without = await cli(['users', 'add', 'bob']);
    assert.equal(without.code, 2);
    assert.match(without.stderr, /--password-stdin/);
    const empty = await cli(['users', 'add', 'bob', '--password-stdin'], '');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no password/);
    const weak = await cli(['users', 'add', 'bob', '--password-stdin'], 'password\n');
    assert.equal(weak.code, 2);
    assert.match(weak.stderr, /at least 8 characters|common breached/);
    const taken = await cli(['users', 'add', 'ada', '--password-stdin'], 'yet another long passphrase\n');
    assert.equal(taken.code, 2);
    assert.match(taken.stderr, /taken/);
    assert.equal(await t.server.store.users.byUsername('bob'), undefined, 'nothing was created by the refused commands');
  });
});
