/**
 * `browserLogin` and `palisade login --browser` against the real server: the authorization link is
 * driven through the real sign-in and consent pages, and the redirect it ends in is requested, as
 * the person's browser would, on the loopback receiver.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Palisade, PalisadeError, browserLogin, refreshTokens, type BrowserLoginOptions, type TokenSet } from '../../src/index.ts';
import { credentialsPath, loadLogin } from '../../src/cli/credentials.ts';
import { ADMIN, Browser, createAdmin, readForm, startTestServer, type TestServer } from '../../../server/test/support/harness.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

/** The claims of a JWT, unverified (the server verifies; the test only reads). */
const claimsOf = (jwt: string): Record<string, unknown> => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `'pending'` if the promise has not settled within `ms`. */
const settledWithin = (p: Promise<unknown>, ms: number): Promise<'settled' | 'pending'> =>
  Promise.race([p.then(() => 'settled' as const, () => 'settled' as const), sleep(ms).then(() => 'pending' as const)]);

/** Whether a TCP connection to host:port is accepted. */
const accepts = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

describe('browser login (authorization code + PKCE, loopback redirect) against the real server', () => {
  let t: TestServer;
  let ca: string;
  let caFile: string;
  const dirs: string[] = [];

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    ca = t.server.tls!.ca!;
    const dir = mkdtempSync(join(tmpdir(), 'pal-browser-login-'));
    dirs.push(dir);
    caFile = join(dir, 'ca.crt');
    writeFileSync(caFile, ca);
  });
  after(async () => {
    await t?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** Opens the authorization link in a fresh browser, signs in as ADMIN, approves (or denies); returns where the server sends the browser. */
  async function decide(url: string, decision: 'approve' | 'deny' = 'approve'): Promise<string> {
    const b = new Browser(t);
    let page = await b.request(url);
    const login = readForm(page.body);
    page = await b.request(login.action, { method: 'POST', form: { username: ADMIN.username, password: ADMIN.password } });
    assert.ok(page.body.includes('id="approve"'), `consent page expected: ${page.status} ${page.body.slice(0, 300)}`);
    if (decision === 'approve') {
      page = await b.request(readForm(page.body).action, { method: 'POST', form: {} });
    } else {
      const abort = /<form method="post" action="([^"]*\/abort)"/.exec(page.body);
      assert.ok(abort, 'the consent page offers Deny');
      page = await b.request(abort[1]!, { method: 'POST', form: {} });
    }
    assert.ok(page.location, `redirected to the loopback receiver: ${page.status} ${page.body.slice(0, 300)}`);
    return page.location;
  }

  /** Starts `browserLogin`; resolves with the link it shows, and the login's outcome (never an unhandled rejection). */
  async function start(options: Partial<BrowserLoginOptions> = {}): Promise<{ url: URL; outcome: Promise<TokenSet | Error> }> {
    let shown!: (url: string) => void;
    const url = new Promise<string>((resolve) => (shown = resolve));
    const login = browserLogin({ server: t.url, ca, onUrl: (u) => shown(u), ...options });
    const outcome = login.then(
      (tokens) => tokens,
      (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
    );
    const first = await Promise.race([url, outcome]);
    if (typeof first !== 'string') throw first instanceof Error ? first : new Error('the login ended before showing its link');
    return { url: new URL(first), outcome };
  }

  const failedWith = (result: TokenSet | Error, code: string): PalisadeError => {
    assert.ok(result instanceof PalisadeError, `expected ${code}, got ${result instanceof Error ? result.stack : JSON.stringify(result)}`);
    assert.equal(result.code, code, result.message);
    return result;
  };

  it('signs in: the link carries S256 PKCE, a fresh state and the loopback redirect; the tokens work and carry a session', async () => {
    const { url, outcome } = await start();
    const p = url.searchParams;
    assert.equal(`${url.origin}${url.pathname}`, `${t.url}/oauth2/auth`, "the discovery document's authorization_endpoint");
    assert.equal(p.get('response_type'), 'code');
    assert.equal(p.get('client_id'), 'palisade-cli');
    assert.equal(p.get('scope'), 'openid offline_access tasks admin');
    assert.equal(p.get('prompt'), 'consent');
    assert.equal(p.get('code_challenge_method'), 'S256');
    assert.match(p.get('code_challenge')!, /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('state')!, /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('redirect_uri')!, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);

    const location = await decide(url.href);
    const back = new URL(location);
    assert.equal(`${back.origin}${back.pathname}`, p.get('redirect_uri'));
    assert.equal(back.searchParams.get('state'), p.get('state'));
    const page = await fetch(location);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /^Signed in to Palisade\. You can close this tab/);
    assert.match(page.headers.get('content-type') ?? '', /^text\/plain/);

    const tokens = await outcome;
    assert.ok(!(tokens instanceof Error), tokens instanceof Error ? tokens.stack : '');
    assert.ok(tokens.refreshToken, 'offline_access gave a refresh token');
    assert.ok(tokens.idToken);
    assert.ok(tokens.expiresAt > Date.now());
    assert.equal(typeof claimsOf(tokens.accessToken).gid, 'string', 'the token names its session');
    const me = await new Palisade({ server: t.url, accessToken: tokens.accessToken, ca }).me();
    assert.equal(me.clientId, 'palisade-cli');
    assert.ok(me.scopes.includes('admin'));
    const sessions = await new Palisade({ server: t.url, accessToken: tokens.accessToken, ca }).sessions.list();
    assert.equal(sessions.find((s) => s.current)?.clientId, 'palisade-cli', 'the sign-in is a session of the CLI');

    const refreshed = await refreshTokens({ server: t.url, ca, refreshToken: tokens.refreshToken });
    assert.notEqual(refreshed.refreshToken, tokens.refreshToken, 'refresh tokens rotate');
    assert.equal((await t.fetch('/api/v1/me', { token: refreshed.accessToken })).status, 200);

    assert.equal(await accepts('127.0.0.1', Number(back.port)), false, 'the receiver is closed once the login is done');
    assert.equal((await fetch(location).catch(() => undefined))?.status, undefined, 'the code cannot be delivered twice');
  });

  it('a callback with the wrong state is refused and does not complete the login; the right one still does', async () => {
    const refused: string[] = [];
    const { url, outcome } = await start({ onRefusedCallback: (r) => refused.push(r) });
    const location = await decide(url.href);
    // A forged redirect: the real code, another state (what a login-CSRF would send).
    const forged = new URL(location);
    forged.searchParams.set('state', 'attacker-state');
    const r1 = await fetch(forged);
    assert.equal(r1.status, 400);
    assert.match(await r1.text(), /does not belong to the sign-in that is waiting \(wrong state\)/);
    forged.searchParams.delete('state');
    assert.equal((await fetch(forged)).status, 400, 'no state at all');
    // An error that does not carry the state cannot end the login either.
    assert.equal((await fetch(`${url.searchParams.get('redirect_uri')}?error=access_denied&state=nope`)).status, 400);
    assert.equal(await settledWithin(outcome, 300), 'pending', 'the login keeps waiting');
    assert.deepEqual(refused, ['a callback with the wrong state', 'a callback without state', 'a callback with the wrong state']);

    // The real redirect still completes: the forged requests did not spend the code.
    const ok = await fetch(location);
    assert.equal(ok.status, 200, await ok.text());
    const tokens = await outcome;
    assert.ok(!(tokens instanceof Error), tokens instanceof Error ? tokens.stack : '');
    assert.equal((await t.fetch('/api/v1/me', { token: tokens.accessToken })).status, 200);
  });

  it('a denied consent (error=access_denied) fails the login with PAL_ERR_FORBIDDEN and a clear message', async () => {
    const { url, outcome } = await start();
    const location = await decide(url.href, 'deny');
    const back = new URL(location);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    const page = await fetch(location);
    assert.equal(page.status, 400);
    assert.match(await page.text(), /did not complete: the sign-in was denied in the browser/);
    const err = failedWith(await outcome, 'PAL_ERR_FORBIDDEN');
    assert.match(err.message, /^the sign-in was denied in the browser \(the user denied access\)$/);
  });

  it('another error in the callback fails the login with its code and description; a callback from another issuer is refused', async () => {
    {
      const { url, outcome } = await start();
      const cb = new URL(url.searchParams.get('redirect_uri')!);
      cb.search = new URLSearchParams({ error: 'invalid_scope', error_description: 'no such\u001b[31m scope', state: url.searchParams.get('state')!, iss: `${t.url}/oauth2` }).toString();
      assert.equal((await fetch(cb)).status, 400);
      const err = failedWith(await outcome, 'PAL_ERR_FORBIDDEN');
      assert.equal(err.message, 'the sign-in failed in the browser: invalid_scope (no such [31m scope)', 'control characters are not passed to the terminal');
    }
    {
      const { url, outcome } = await start();
      const cb = new URL(url.searchParams.get('redirect_uri')!);
      cb.search = new URLSearchParams({ code: 'x', state: url.searchParams.get('state')!, iss: 'https://evil.example' }).toString();
      const page = await fetch(cb);
      assert.equal(page.status, 400);
      const err = failedWith(await outcome, 'PAL_ERR_VALIDATION');
      assert.match(err.message, /comes from issuer "https:\/\/evil\.example"/);
    }
  });

  it('the receiver listens on 127.0.0.1 only, answers 404 elsewhere, and closes on timeout and on abort', async () => {
    const controller = new AbortController();
    const { url, outcome } = await start({ signal: controller.signal });
    const redirect = new URL(url.searchParams.get('redirect_uri')!);
    const port = Number(redirect.port);
    assert.equal(redirect.hostname, '127.0.0.1');
    assert.equal(await accepts('127.0.0.1', port), true);
    assert.equal(await accepts('127.0.0.2', port), false, 'not the rest of 127/8 (so not 0.0.0.0)');
    const others = Object.values(networkInterfaces()).flat().filter((i) => i !== undefined && !(i.family === 'IPv4' && i.address === '127.0.0.1'));
    for (const i of others) {
      const host = i!.family === 'IPv6' && i!.scopeid ? `${i!.address}%${i!.scopeid}` : i!.address;
      assert.equal(await accepts(host, port), false, `not on ${host}`);
    }
    for (const path of ['/', '/favicon.ico', '/oauth2/auth', '/callback/x']) {
      assert.equal((await fetch(new URL(path, redirect))).status, 404, path);
    }
    assert.equal(await settledWithin(outcome, 50), 'pending');
    controller.abort(new DOMException('interrupted', 'AbortError'));
    const aborted = await outcome;
    assert.ok(aborted instanceof Error && aborted.name === 'AbortError', String(aborted));
    assert.equal(await accepts('127.0.0.1', port), false, 'closed after an abort');

    const slow = await start({ timeoutMs: 300 });
    const err = failedWith(await slow.outcome, 'PAL_ERR_TIMEOUT');
    assert.equal(err.message, 'the sign-in was not completed in the browser within 300 ms; run the login again');
    assert.equal(await accepts('127.0.0.1', Number(new URL(slow.url.searchParams.get('redirect_uri')!).port)), false, 'closed after the timeout');
  });

  // ── the CLI ─────────────────────────────────────────────────────────────────────────────────

  interface Running {
    /** The link the CLI showed. */
    url: Promise<string>;
    done: Promise<{ code: number | null; stdout: string; stderr: string }>;
  }

  /** Runs `palisade login --browser …` in its own config folder; the link is read from stderr as it is printed. */
  function cliLogin(args: string[], configHome: string): Running {
    const child = spawn(process.execPath, [CLI, 'login', ...args], {
      env: { PATH: process.env.PATH, HOME: configHome, XDG_CONFIG_HOME: configHome, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => child.kill(), 60_000);
    let stdout = '';
    let stderr = '';
    let found!: (url: string) => void;
    const url = new Promise<string>((resolve) => (found = resolve));
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      const m = /Open this link to sign in:\n\n {2}(\S+)\n/.exec(stderr);
      if (m) found(m[1]!);
    });
    const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      }),
    );
    const shown = Promise.race([url, done.then((r) => Promise.reject(new Error(`the CLI ended first: ${r.code} ${r.stderr}`)))]);
    shown.catch(() => {}); // Awaited only when a link is expected.
    return { url: shown, done };
  }

  const home = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'pal-browser-login-'));
    dirs.push(dir);
    return dir;
  };

  it('`palisade login --browser` saves the login as the device login does; later commands use it', async () => {
    const dir = home();
    const run = cliLogin(['--browser', '--no-open', '--server', t.url, '--ca', caFile], dir);
    const location = await decide(await run.url);
    assert.equal((await fetch(location)).status, 200);
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^Open this link to sign in:\n\n {2}https:\/\/\S+\n\nWaiting up to 5 min…\n$/);
    assert.equal(r.stdout, `✔ signed in to ${t.url} as ${claimsOf(loadLogin(credentialsPath({ XDG_CONFIG_HOME: dir }))!.accessToken).sub}\n`);

    const saved = loadLogin(credentialsPath({ XDG_CONFIG_HOME: dir }))!;
    assert.equal(saved.version, 1);
    assert.equal(saved.server, t.url);
    assert.equal(saved.clientId, 'palisade-cli');
    assert.equal(saved.caFile, caFile);
    assert.ok(saved.refreshToken);
    assert.equal(typeof claimsOf(saved.accessToken).gid, 'string');

    const whoami = spawn(process.execPath, [CLI, 'whoami', '--json'], { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir } });
    let out = '';
    whoami.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const code = await new Promise((resolve) => whoami.on('close', resolve));
    assert.equal(code, 0);
    assert.equal(JSON.parse(out).clientId, 'palisade-cli');
  });

  it('`palisade login --browser --json` prints one JSON document; a denied sign-in exits 3 and saves nothing', async () => {
    const dir = home();
    const ok = cliLogin(['--browser', '--no-open', '--json', '--timeout', '2m', '--server', t.url, '--ca', caFile], dir);
    assert.equal((await fetch(await decide(await ok.url))).status, 200);
    const r = await ok.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Waiting up to 2 min…/);
    const result = JSON.parse(r.stdout) as { server: string; sub: string; scopes: string[] };
    assert.equal(result.server, t.url);
    assert.ok(result.scopes.includes('admin'));

    const other = home();
    const denied = cliLogin(['--browser', '--no-open', '--server', t.url, '--ca', caFile], other);
    assert.equal((await fetch(await decide(await denied.url, 'deny'))).status, 400);
    const d = await denied.done;
    assert.equal(d.code, 3);
    assert.match(d.stderr, /error PAL_ERR_FORBIDDEN: the sign-in was denied in the browser/);
    assert.match(d.stderr, /hint: run `palisade login` again and approve the sign-in/);
    assert.ok(!existsSync(credentialsPath({ XDG_CONFIG_HOME: other })), 'nothing saved');
  });

  it('`palisade login --browser` times out with exit 5 and a hint; --no-open and --timeout need --browser', async () => {
    const dir = home();
    const slow = cliLogin(['--browser', '--no-open', '--timeout', '1s', '--server', t.url, '--ca', caFile], dir);
    await slow.url;
    const r = await slow.done;
    assert.equal(r.code, 5);
    assert.match(r.stderr, /error PAL_ERR_TIMEOUT: the sign-in was not completed in the browser within 1 s/);
    assert.match(r.stderr, /hint: run `palisade login` again .*--timeout/);
    for (const args of [['--no-open'], ['--timeout', '2m']]) {
      const u = await cliLogin([...args, '--server', t.url], dir).done;
      assert.equal(u.code, 2, args.join(' '));
      assert.match(u.stderr, /goes with --browser/);
    }
  });
});
