/**
 * `palisade.sessions` and `palisade sessions` against the real server: sign-ins made through the
 * real device grant, the CLI's login saved where `palisade login` saves it, a synthetic agent on
 * the extension's session. The tests run in order: the last one revokes every session.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Palisade, PalisadeError, type Session } from '../../src/index.ts';
import { credentialsPath, saveLogin } from '../../src/cli/credentials.ts';
import { SyntheticAgent } from '../../../server/test/support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer, type DeviceTokens, type TestServer } from '../../../server/test/support/harness.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const SITE = 'http://127.0.0.1:9';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe('sessions: SDK and CLI against the real server', () => {
  let t: TestServer;
  let ca: string;
  let caFile: string;
  let api: { clientId: string; clientSecret: string };
  const homes: string[] = [];

  /** A person's sign-in with the CLI's client (what `palisade login` gets). */
  const signIn = (clientId = 'palisade-cli', scope = 'openid offline_access tasks admin'): Promise<DeviceTokens> => deviceLogin(t, clientId, scope);
  const sdk = (tokens: DeviceTokens): Palisade => new Palisade({ server: t.url, accessToken: tokens.access_token, ca });
  /** The id of the session `tokens` (a person's token with the `tasks` scope) belong to, as the server marks it. */
  const sessionOf = async (tokens: DeviceTokens): Promise<string> => {
    const current = (await sdk(tokens).sessions.list()).filter((s) => s.current);
    assert.equal(current.length, 1, 'exactly one session is marked current');
    return current[0]!.id;
  };
  /** The session of an agent-only sign-in: the `gid` (grant id) its access token names. */
  const agentSessionOf = (tokens: DeviceTokens): string => {
    const gid = (JSON.parse(Buffer.from(tokens.access_token.split('.')[1]!, 'base64url').toString()) as { gid?: string }).gid;
    assert.ok(gid, 'the access token names its session');
    return gid;
  };

  /** A config folder holding `tokens` as the saved login, as `palisade login` leaves it. */
  const home = (tokens: DeviceTokens): string => {
    const dir = mkdtempSync(join(tmpdir(), 'pal-sessions-'));
    homes.push(dir);
    saveLogin(credentialsPath({ XDG_CONFIG_HOME: dir }), {
      version: 1,
      server: t.url,
      clientId: 'palisade-cli',
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token!,
      expiresAt: Date.now() + tokens.expires_in * 1000,
      caFile,
      savedAt: new Date().toISOString(),
    });
    return dir;
  };

  const cli = (args: string[], configHome: string, env: Record<string, string> = {}): Promise<Result> =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        { env: { PATH: process.env.PATH, HOME: configHome, XDG_CONFIG_HOME: configHome, NO_COLOR: '1', ...env }, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });

  const refusedAs = (code: string) => (e: unknown) => {
    assert.ok(e instanceof PalisadeError, String(e));
    assert.equal(e.code, code, e.message);
    return true;
  };

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    ca = t.server.tls!.ca!;
    caFile = join(mkdtempSync(join(tmpdir(), 'pal-ca-')), 'ca.crt');
    homes.push(join(caFile, '..'));
    writeFileSync(caFile, ca);
    api = await apiClient(t, 'sessions test');
  });
  after(async () => {
    await t?.close();
    for (const dir of homes) rmSync(dir, { recursive: true, force: true });
  });

  it('sessions.list() and `palisade sessions` show every sign-in, the caller\'s own marked current', async () => {
    const cliLogin = await signIn();
    const extension = await signIn('palisade-extension', 'openid offline_access agent');
    const mine = await sessionOf(cliLogin);
    const extensionSession = agentSessionOf(extension);
    await assert.rejects(sdk(extension).sessions.list(), (e: PalisadeError) => e.code === 'PAL_ERR_FORBIDDEN', 'an agent-only token may not list sessions');

    const list: Session[] = await sdk(cliLogin).sessions.list();
    const byId = new Map(list.map((s) => [s.id, s]));
    assert.equal(byId.get(mine)?.clientId, 'palisade-cli');
    assert.equal(byId.get(mine)?.current, true);
    assert.equal(byId.get(extensionSession)?.clientId, 'palisade-extension');
    assert.equal(byId.get(extensionSession)?.current, false);
    assert.ok(list.every((s) => typeof s.clientName === 'string' && !Number.isNaN(Date.parse(s.createdAt))));

    const dir = home(cliLogin);
    const json = await cli(['sessions', '--json'], dir);
    assert.equal(json.code, 0, json.stderr);
    const listed = (JSON.parse(json.stdout) as { sessions: Session[] }).sessions;
    assert.deepEqual(listed.filter((s) => s.current).map((s) => s.id), [mine]);
    assert.ok(listed.some((s) => s.id === extensionSession));

    const human = await cli(['sessions'], dir);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^ID\s+APP\s+CREATED\s+EXPIRES$/);
    assert.match(lines.find((l) => l.startsWith(mine))!, /← current$/);
    assert.doesNotMatch(lines.find((l) => l.startsWith(extensionSession))!, /current/);
    assert.equal(lines.length, listed.length + 1);
  });

  it('`palisade sessions revoke ID` of another session: its agent is closed with 4410 and its tokens are refused', async () => {
    const cliLogin = await signIn();
    const extension = await signIn('palisade-extension', 'openid offline_access agent');
    const target = agentSessionOf(extension);
    const agent = await SyntheticAgent.connect({ url: t.url, token: extension.access_token, ca, grants: [SITE] });
    const closed = agent.closed();
    const dir = home(cliLogin);

    const r = await cli(['sessions', 'revoke', '--', target], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^revoked session ${target} \\(.+\\)\\n$`));
    assert.equal((await closed).code, 4410);
    await assert.rejects(sdk(extension).agents(), refusedAs('PAL_ERR_SESSION_REVOKED'));
    assert.ok(!(await sdk(cliLogin).sessions.list()).some((s) => s.id === target), 'the revoked session is no longer listed');
    assert.ok(existsSync(credentialsPath({ XDG_CONFIG_HOME: dir })), 'the CLI\'s own login is kept');
    const still = await cli(['whoami', '--json'], dir);
    assert.equal(still.code, 0, still.stderr);
  });

  it('sessions.revoke(id) from the SDK: the other session\'s token is refused, an unknown id is PAL_ERR_NOT_FOUND', async () => {
    const me = await signIn();
    const other = await signIn();
    const otherSession = await sessionOf(other);
    await sdk(me).sessions.revoke(otherSession);
    await assert.rejects(sdk(other).me(), refusedAs('PAL_ERR_SESSION_REVOKED'));
    await assert.rejects(sdk(me).sessions.revoke(otherSession), refusedAs('PAL_ERR_NOT_FOUND'));
    await assert.rejects(sdk(me).sessions.revoke('no-such-session'), refusedAs('PAL_ERR_NOT_FOUND'));
  });

  it('`palisade sessions revoke` of an unknown id exits 4 with a clear message; bad usage exits 2', async () => {
    const dir = home(await signIn());
    const r = await cli(['sessions', 'revoke', 'no-such-session'], dir);
    assert.equal(r.code, 4);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /error PAL_ERR_NOT_FOUND: no session no-such-session/);
    assert.match(r.stderr, /hint: .*`palisade sessions`/);
    const json = await cli(['sessions', 'revoke', 'no-such-session', '--json'], dir);
    assert.equal(json.code, 4);
    assert.equal(JSON.parse(json.stdout).code, 'PAL_ERR_NOT_FOUND');

    const missing = await cli(['sessions', 'revoke'], dir);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /missing the session ID \(or --all\)/);
    const both = await cli(['sessions', 'revoke', 'x', '--all'], dir);
    assert.equal(both.code, 2);
    // Session ids may start with "-": such an id goes after "--", and is never read as -V or -h.
    const dashed = await cli(['sessions', 'revoke', '-nqVhx'], dir);
    assert.equal(dashed.code, 2);
    assert.equal(dashed.stdout, '');
    assert.match(dashed.stderr, /Unknown option '-n'; if it is an argument that starts with "-", such as an ID, put it after "--"/);
    const afterDashes = await cli(['sessions', 'revoke', '--', '-nqVhx'], dir);
    assert.equal(afterDashes.code, 4, afterDashes.stderr);
    assert.match(afterDashes.stderr, /no session -nqVhx/);
    assert.ok(existsSync(credentialsPath({ XDG_CONFIG_HOME: dir })));
  });

  it('revoking the session of the CLI\'s own login by id deletes the saved login and says so', async () => {
    const tokens = await signIn();
    const mine = await sessionOf(tokens);
    const dir = home(tokens);
    const r = await cli(['sessions', 'revoke', '--json', '--', mine], dir);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(JSON.parse(r.stdout), { revoked: mine, current: true, signedOut: true });
    assert.ok(!existsSync(credentialsPath({ XDG_CONFIG_HOME: dir })));
    await assert.rejects(sdk(tokens).me(), refusedAs('PAL_ERR_SESSION_REVOKED'));
    const after = await cli(['whoami'], dir);
    assert.equal(after.code, 3);
    assert.match(after.stderr, /not signed in/);
  });

  it('a saved login whose session was revoked elsewhere exits 3 with PAL_ERR_SESSION_REVOKED (no futile refresh)', async () => {
    const tokens = await signIn();
    const dir = home(tokens);
    await sdk(await signIn()).sessions.revoke(await sessionOf(tokens));
    const r = await cli(['sessions'], dir);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /error PAL_ERR_SESSION_REVOKED/);
    assert.match(r.stderr, /hint: .*palisade login/);
  });

  it('an API client cannot list or revoke sessions: PAL_ERR_FORBIDDEN, exit 3', async () => {
    const client = new Palisade({ server: t.url, clientId: api.clientId, clientSecret: api.clientSecret, ca });
    await assert.rejects(client.sessions.list(), refusedAs('PAL_ERR_FORBIDDEN'));
    await assert.rejects(client.sessions.revokeAll(), refusedAs('PAL_ERR_FORBIDDEN'));
    const dir = mkdtempSync(join(tmpdir(), 'pal-sessions-'));
    homes.push(dir);
    const r = await cli(['sessions', '--json'], dir, { PALISADE_SERVER: t.url, PALISADE_CA_FILE: caFile, PALISADE_CLIENT_ID: api.clientId, PALISADE_CLIENT_SECRET: api.clientSecret });
    assert.equal(r.code, 3);
    assert.equal(JSON.parse(r.stdout).code, 'PAL_ERR_FORBIDDEN');
  });

  it('`palisade sessions revoke --all` revokes every session and deletes the saved login', async () => {
    const tokens = await signIn();
    const extension = await signIn('palisade-extension', 'openid offline_access agent');
    const agent = await SyntheticAgent.connect({ url: t.url, token: extension.access_token, ca, grants: [SITE] });
    const closed = agent.closed();
    const before = (await sdk(tokens).sessions.list()).length;
    assert.ok(before >= 2);
    const dir = home(tokens);

    const r = await cli(['sessions', 'revoke', '--all'], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `revoked ${before} sessions: all of yours, this one included\nsigned out of ${t.url}: the saved login was deleted\n`);
    assert.ok(!existsSync(credentialsPath({ XDG_CONFIG_HOME: dir })), 'the saved login is gone');
    assert.equal((await closed).code, 4410);
    await assert.rejects(sdk(tokens).me(), refusedAs('PAL_ERR_SESSION_REVOKED'));
    await assert.rejects(sdk(extension).me(), refusedAs('PAL_ERR_SESSION_REVOKED'));

    // A new sign-in starts from nothing: its own session is the only one; revokeAll() counts it.
    const fresh = await signIn();
    const list = await sdk(fresh).sessions.list();
    assert.deepEqual(list.map((s) => s.current), [true]);
    assert.equal(await sdk(fresh).sessions.revokeAll(), 1);
    await assert.rejects(sdk(fresh).sessions.list(), refusedAs('PAL_ERR_SESSION_REVOKED'));
  });
});
