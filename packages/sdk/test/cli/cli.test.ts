/** The `palisade` executable as a subprocess against the server test double. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeServer, type FakeServer } from '../helpers/fake-server.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
let server: FakeServer;
let home = '';

before(async () => {
  server = await startFakeServer({ devicePolls: [] });
  home = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
});
after(async () => {
  await server.close();
  rmSync(home, { recursive: true, force: true });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI asynchronously (the server double lives in this process). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: join(home, 'config'), ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const cc = () => ({ PALISADE_SERVER: server.url, PALISADE_CLIENT_ID: server.clientId, PALISADE_CLIENT_SECRET: server.clientSecret });

test('run --json prints exactly the final task and exits 0', async () => {
  const r = await cli(['run', 'ok', '--input', 'query=shoes', '--json'], cc());
  assert.equal(r.code, 0, r.stderr);
  const task = JSON.parse(r.stdout);
  assert.equal(task.state, 'succeeded');
  assert.deepEqual(task.result.outputs, { title: 'Example Domain', n: 3 });
  assert.equal(r.stderr, '');
  assert.deepEqual(JSON.parse(server.requestsTo('/api/v1/tasks').at(-1)?.body ?? '{}').input, { query: 'shoes' });
});

test('run: a failed task exits 1 and --json prints the failed task', async () => {
  const r = await cli(['run', 'fail', '--json'], cc());
  assert.equal(r.code, 1);
  const task = JSON.parse(r.stdout);
  assert.equal(task.state, 'failed');
  assert.equal(task.error.code, 'PAL_ERR_STEP_FAILED');
});

test('run: no agent exits 6 with the code and a hint on stderr', async () => {
  const r = await cli(['run', 'no-agent'], cc());
  assert.equal(r.code, 6);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /PAL_ERR_NO_AGENT/);
  assert.match(r.stderr, /hint: .*extension/);
});

test('run: an unknown recipe exits 4; --json prints the problem', async () => {
  const r = await cli(['run', 'nope', '--json'], cc());
  assert.equal(r.code, 4);
  const problem = JSON.parse(r.stdout);
  assert.equal(problem.code, 'PAL_ERR_UNKNOWN_RECIPE');
  assert.equal(problem.type, 'urn:palisade:error:PAL_ERR_UNKNOWN_RECIPE');
});

test('run: wrong credentials exit 3, an unreachable server exits 5', async () => {
  const bad = await cli(['run', 'ok', '--client-secret', 'wrong'], cc());
  assert.equal(bad.code, 3);
  assert.match(bad.stderr, /PAL_ERR_UNAUTHENTICATED/);
  const down = await cli(['run', 'ok', '--json', '--server', 'http://127.0.0.1:1'], cc());
  assert.equal(down.code, 5);
  assert.equal(JSON.parse(down.stdout).code, 'PAL_ERR_UNAVAILABLE');
});

test('run --flow runs a DevTools Recorder export on --site; human output lists the outputs', async () => {
  const flow = join(home, 'recording.json');
  writeFileSync(flow, JSON.stringify({ title: 'Recording', steps: [{ type: 'setViewport', width: 800, height: 600 }, { type: 'navigate', url: 'https://example.com/' }] }));
  const r = await cli(['run', '--flow', flow, '--site', 'https://example.com', '--timeout', '30s'], cc());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /succeeded/);
  assert.match(r.stdout, /"title": "Example Domain"/);
  const body = JSON.parse(server.requestsTo('/api/v1/tasks').at(-1)?.body ?? '{}');
  assert.equal(body.site, 'https://example.com');
  assert.equal(body.steps.length, 2);
  assert.equal(body.timeoutMs, 30_000);
  const broken = join(home, 'broken.json');
  writeFileSync(broken, '{ not json');
  assert.equal((await cli(['run', '--flow', broken, '--site', 'https://example.com'], cc())).code, 2);
});

test('recipes, agents, tasks get: JSON and exit codes', async () => {
  const recipes = await cli(['recipes', '--json'], cc());
  assert.equal(recipes.code, 0);
  assert.deepEqual(JSON.parse(recipes.stdout).recipes.map((r: { name: string }) => r.name), ['ok']);
  const show = await cli(['recipes', 'show', 'ok'], cc());
  assert.equal(show.code, 0);
  assert.match(show.stdout, /q\s+required\s+query/);
  assert.equal((await cli(['recipes', 'show', 'missing'], cc())).code, 4);
  const agents = await cli(['agents'], cc());
  assert.match(agents.stdout, /agent-1\s+Chrome\s+0\.1\.0\s+connected\s+https:\/\/example\.com/);
  const missing = await cli(['tasks', 'get', 'nope', '--json'], cc());
  assert.equal(missing.code, 4);
  assert.equal(JSON.parse(missing.stdout).code, 'PAL_ERR_NOT_FOUND');
});

test('login saves 0600 credentials; later commands use and refresh them; logout revokes and deletes', async () => {
  const file = join(home, 'config', 'palisade', 'credentials.json');
  const login = await cli(['login', '--server', server.url]);
  assert.equal(login.code, 0, login.stderr);
  assert.match(login.stderr, /WXYZ-1234/);
  assert.match(login.stderr, /user_code=WXYZ-1234/);
  assert.match(login.stdout, /signed in to .* as user-1/);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(join(home, 'config', 'palisade')).mode & 0o777, 0o700);
  const saved = JSON.parse(readFileSync(file, 'utf8'));
  assert.equal(saved.server, server.url);
  assert.match(saved.refreshToken, /^rt-/);

  const who = await cli(['whoami', '--json']);
  assert.equal(who.code, 0, who.stderr);
  assert.equal(JSON.parse(who.stdout).sub, 'user-1');

  // The access token is about to expire: the next command refreshes and stores the rotated refresh token.
  writeFileSync(file, JSON.stringify({ ...saved, expiresAt: Date.now() + 1000 }));
  const agents = await cli(['agents', '--json']);
  assert.equal(agents.code, 0, agents.stderr);
  const rotated = JSON.parse(readFileSync(file, 'utf8'));
  assert.notEqual(rotated.refreshToken, saved.refreshToken);
  assert.notEqual(rotated.accessToken, saved.accessToken);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(server.state.refreshTokens.has(saved.refreshToken), false, 'the old refresh token was spent');

  // Admin: create prints the secret once, with a warning.
  const created = await cli(['clients', 'create', '--name', 'ci', '--scopes', 'tasks']);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /client secret\s+shown-once/);
  assert.match(created.stderr, /not shown again/);
  const list = await cli(['clients', 'list', '--json']);
  const [client] = JSON.parse(list.stdout).clients;
  assert.equal(client.name, 'ci');
  assert.equal(JSON.stringify(JSON.parse(list.stdout)).includes('shown-once'), false);
  assert.equal((await cli(['clients', 'delete', client.clientId])).code, 0);
  assert.equal((await cli(['clients', 'delete', client.clientId])).code, 4);

  // A saved login for another server is not used there.
  const other = await cli(['agents', '--server', 'https://elsewhere.example']);
  assert.equal(other.code, 3);

  const logout = await cli(['logout']);
  assert.equal(logout.code, 0);
  assert.equal(existsSync(file), false);
  assert.deepEqual(server.state.revoked, [rotated.refreshToken]);
  assert.equal((await cli(['whoami'])).code, 3);
});

test('on a terminal, run shows a progress line per state and step on stderr', async () => {
  const { main } = await import('../../src/cli/main.ts');
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['run', 'ok', '--input', 'q=1'], {
    stdout: { write: (t: string) => out.push(t), isTTY: true },
    stderr: { write: (t: string) => err.push(t), isTTY: true },
    env: { ...cc(), NO_COLOR: '1', XDG_CONFIG_HOME: join(home, 'none') },
  });
  assert.equal(code, 0);
  const lines = err.join('').trim().split('\n');
  assert.deepEqual(lines.filter((l) => l.startsWith('●')), ['● queued', '● dispatched', '● running', '● succeeded']);
  assert.ok(lines.some((l) => /^\s+1\. navigate…$/.test(l)));
  assert.ok(lines.some((l) => /^\s+✔ extract \d+ ms$/.test(l)));
  assert.match(out.join(''), /^✔ task \S+\s+succeeded/);
  // -q silences progress.
  const quiet: string[] = [];
  await main(['run', 'ok', '-q'], { stdout: { write: () => true, isTTY: true }, stderr: { write: (t: string) => quiet.push(t), isTTY: true }, env: { ...cc(), XDG_CONFIG_HOME: join(home, 'none') } });
  assert.equal(quiet.join(''), '');
});
