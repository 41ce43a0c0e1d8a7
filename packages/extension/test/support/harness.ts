/**
 * Test harness for the real-Chromium tests: a fixture web server, a fake Palisade server (OAuth
 * endpoints + the agent WebSocket, speaking the real frames), and a headless Chromium with the
 * test build of the extension loaded.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { chromium, type BrowserContext, type Worker } from 'playwright-core';
import { AgentFrame, validator, type DispatchFrame } from '@palisade/protocol';

const here = dirname(fileURLToPath(import.meta.url));
export const EXTENSION_DIR = join(here, '..', '..', 'dist-test');
export const FIXTURES_DIR = join(here, '..', 'fixtures');

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.txt': 'text/plain', '.css': 'text/css', '.png': 'image/png' };

/** A request the fixture server received: the Host header it was sent to, and the path. */
export type FixtureRequest = { host: string; method: string; path: string };

/**
 * Serves `test/fixtures` on 127.0.0.1 (`PORT_PLACEHOLDER` in HTML becomes the port). The same server
 * answers as `localhost:<port>` (the ungranted origin); `requests` records every request with its
 * Host header, so a test can count what reached "localhost". Two routes are not files:
 * `/redirect?to=URL` answers 302 to URL, and `/attach/NAME` answers with
 * `Content-Disposition: attachment`.
 */
export async function serveFixtures(): Promise<{ origin: string; port: number; requests: FixtureRequest[]; close(): Promise<void> }> {
  const requests: FixtureRequest[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push({ host: String(req.headers.host ?? ''), method: req.method ?? '', path: url.pathname + url.search });
    if (url.pathname === '/redirect') {
      res.writeHead(302, { location: url.searchParams.get('to') ?? '/', 'cache-control': 'no-store' }).end();
      return;
    }
    if (url.pathname.startsWith('/attach/')) {
      const name = url.pathname.slice('/attach/'.length).replace(/[^A-Za-z0-9._-]/g, '_');
      res.writeHead(200, { 'content-type': 'text/plain', 'content-disposition': `attachment; filename="${name}"`, 'cache-control': 'no-store' }).end(`attached from ${req.headers.host}\n`);
      return;
    }
    const path = normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(FIXTURES_DIR, path === '/' ? 'search.html' : path);
    if (!file.startsWith(FIXTURES_DIR) || !existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    let body: Buffer | string = readFileSync(file);
    if (extname(file) === '.html') body = body.toString('utf8').replaceAll('PORT_PLACEHOLDER', String(port));
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { origin: `http://127.0.0.1:${port}`, port, requests, close: () => closeServer(server) };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((r) => server.close(() => r()));
}

const agentFrame = validator(AgentFrame);

/** A frame the agent sent, as received. */
export type Received = { type: string; [k: string]: unknown };

/**
 * A fake Palisade server: accepts the bearer subprotocol on /ws/agent, answers `hello` with
 * `welcome`, dispatches tasks and collects what the agent sends. Every frame the agent sends is
 * checked against `AgentFrame`; a bad one is recorded in `invalid`.
 */
export class FakePalisade {
  readonly http: Server;
  readonly wss: WebSocketServer;
  origin = '';
  /** Bearer tokens the agent connected with. */
  readonly tokens: string[] = [];
  readonly frames: Received[] = [];
  readonly invalid: unknown[] = [];
  /** Origin header of each agent connection. */
  readonly origins: (string | undefined)[] = [];
  #socket: WebSocket | undefined;
  #waiters: { match: (f: Received) => boolean; resolve: (f: Received) => void }[] = [];
  /** While true, WebSocket upgrades are refused with 503 (a server restarting): the agent backs off and retries. */
  refusing = false;
  /** Custom HTTP routes (OAuth endpoints in the sign-in test). */
  routes = new Map<string, (req: IncomingMessage, body: string, res: ServerResponse) => void>();

  constructor() {
    this.http = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        const route = this.routes.get(`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname}`);
        if (route) route(req, body, res);
        else res.writeHead(404).end();
      });
    });
    this.wss = new WebSocketServer({
      server: this.http,
      path: '/ws/agent',
      verifyClient: (_info, done) => (this.refusing ? done(false, 503, 'restarting') : done(true)),
      handleProtocols: (protocols) => {
        const bearer = [...protocols].find((p) => p.startsWith('palisade.bearer.'));
        if (!protocols.has('palisade.v1') || !bearer) return false;
        return 'palisade.v1';
      },
    });
    this.wss.on('connection', (ws, req) => {
      const bearer = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).find((p) => p.startsWith('palisade.bearer.'));
      this.tokens.push(bearer?.slice('palisade.bearer.'.length) ?? '');
      this.origins.push(req.headers.origin);
      this.#socket = ws;
      ws.on('message', (data) => {
        let frame: unknown;
        try {
          frame = JSON.parse(String(data));
        } catch {
          this.invalid.push(String(data));
          return;
        }
        if (!agentFrame.check(frame)) this.invalid.push(frame);
        const f = frame as Received;
        this.frames.push(f);
        if (f.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', v: 1, agentId: 'agent-1', heartbeatMs: 30_000 }));
        if (f.type === 'ping') ws.send(JSON.stringify({ type: 'pong', t: f.t }));
        for (const w of [...this.#waiters]) {
          if (w.match(f)) {
            this.#waiters.splice(this.#waiters.indexOf(w), 1);
            w.resolve(f);
          }
        }
      });
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((r) => this.http.listen(0, '127.0.0.1', r));
    this.origin = `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
    return this;
  }

  /** The next frame (from now on, or already received when `past`) that matches. */
  waitFor(match: (f: Received) => boolean, timeoutMs = 20_000, past = true): Promise<Received> {
    if (past) {
      const hit = this.frames.find(match);
      if (hit) return Promise.resolve(hit);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${this.frames.map((f) => f.type).join(',')}`)), timeoutMs);
      this.#waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }

  /** Sends a raw frame to the connected agent. */
  send(frame: unknown): void {
    if (!this.#socket) throw new Error('no agent connected');
    this.#socket.send(JSON.stringify(frame));
  }

  /** Closes the agent's socket with `code`. */
  kick(code: number, reason = ''): void {
    this.#socket?.close(code, reason);
  }

  /** Dispatches a task and resolves with its `task.result` and every frame of that task. */
  async run(task: { taskId: string; site: string; steps: unknown[]; deadline?: number }, timeoutMs = 45_000): Promise<{ result: Received; frames: Received[] }> {
    // Steps are sent as given (possibly invalid: the agent must refuse those itself).
    const frame: Omit<DispatchFrame, 'steps'> & { steps: unknown[] } = { type: 'task.dispatch', deadline: Date.now() + 60_000, ...task };
    const resultP = this.waitFor((f) => f.type === 'task.result' && f.taskId === task.taskId, timeoutMs, false);
    this.send(frame);
    const result = await resultP;
    return { result, frames: this.frames.filter((f) => f.taskId === task.taskId) };
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    await closeServer(this.http);
  }
}

/**
 * The id Chromium gives an unpacked extension loaded from `dir` (no `key` in its manifest): the
 * SHA-256 of its absolute path, first 32 hex digits written with the letters a–p. Known before the
 * browser starts, so a server can be configured with it (`extensionIds`) first.
 */
export function unpackedExtensionId(dir = EXTENSION_DIR): string {
  const hex = createHash('sha256').update(realpathSync(dir)).digest('hex').slice(0, 32);
  return [...hex].map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
}

/** A headless Chromium with the test build loaded, and its service worker. */
export interface Browser {
  ctx: BrowserContext;
  worker: Worker;
  extensionId: string;
  userDataDir: string;
  /** Chromium's download folder. */
  downloadDir: string;
  /** The service worker's last console lines (its `[palisade]` log), for a failure's message. */
  workerLog: string[];
  close(): Promise<void>;
}

/** Launches Chromium with the test build (and any extra extension directories and Chromium flags). */
export async function launch(extraExtensions: string[] = [], extraArgs: string[] = []): Promise<Browser> {
  if (!existsSync(join(EXTENSION_DIR, 'manifest.json'))) {
    throw new Error('dist-test/ is missing: run `node packages/extension/build.ts --test` first');
  }
  const userDataDir = mkdtempSync(join(tmpdir(), 'palisade-chromium-'));
  // Chromium's own download manager saves here (the extension's `palisade/` folder is inside).
  const downloadDir = join(userDataDir, 'downloads');
  mkdirSync(join(userDataDir, 'Default'), { recursive: true });
  mkdirSync(downloadDir);
  writeFileSync(join(userDataDir, 'Default', 'Preferences'), JSON.stringify({ download: { default_directory: downloadDir, prompt_for_download: false } }));
  const dirs = [EXTENSION_DIR, ...extraExtensions].join(',');
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: false,
    acceptDownloads: true,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--disable-extensions-except=${dirs}`,
      `--load-extension=${dirs}`,
      ...extraArgs,
    ],
  });
  // Playwright routes downloads to its own folder under random names; give them back to Chromium's
  // download manager, which honours the extension's `palisade/<name>` and saves into `downloadDir`.
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'default' });
  await cdp.detach();
  const worker = await findWorker(ctx, 'Palisade (test build)');
  const extensionId = new URL(worker.url()).host;
  const workerLog: string[] = [];
  worker.on('console', (m) => {
    workerLog.push(`@${performance.now().toFixed(0)} ${m.text()}`);
    if (workerLog.length > 40) workerLog.shift();
  });
  return {
    ctx,
    worker,
    extensionId,
    userDataDir,
    downloadDir,
    workerLog,
    close: async () => {
      await ctx.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Polls `probe` until it returns something other than `undefined`, and returns that; throws naming
 * `what` after `timeoutMs`. For state the browser reaches on its own time (a tab Playwright has not
 * reported yet, storage a worker writes after a round trip).
 */
export async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The service worker of the extension whose manifest name is `name`. */
export async function findWorker(ctx: BrowserContext, name: string): Promise<Worker> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    for (const w of ctx.serviceWorkers()) {
      const n = await w.evaluate(() => chrome.runtime.getManifest().name).catch(() => undefined);
      if (n === name) return w;
    }
    await ctx.waitForEvent('serviceworker', { timeout: 1000 }).catch(() => undefined);
  }
  throw new Error(`no service worker for extension "${name}"`);
}

/**
 * Puts the agent in the signed-in state as a test harness would: server URL, a fake refresh token
 * and a fake access token, and the granted sites, written into chrome.storage.
 */
export async function signInWithFakeToken(worker: Worker, server: string, sites: string[], token = 'fake-access-token'): Promise<void> {
  await worker.evaluate(
    async ({ server, sites, token }) => {
      await chrome.storage.local.set({ server, insecure: true, sites, refreshToken: 'fake-refresh-token' });
      await chrome.storage.session.set({ accessToken: token, accessTokenExpiresAt: Date.now() + 15 * 60_000 });
    },
    { server, sites, token },
  );
}

/** Tab URLs open in the browser, read from the extension's own view of tabs. */
export async function tabUrls(worker: Worker): Promise<string[]> {
  return worker.evaluate(async () => (await chrome.tabs.query({})).map((t) => t.pendingUrl ?? t.url ?? ''));
}

/** A signed-in agent in Chromium talking to a fake server, with the fixture site served. */
export interface AgentRig {
  browser: Browser;
  server: FakePalisade;
  fixtures: Awaited<ReturnType<typeof serveFixtures>>;
  /** The granted fixture origin (127.0.0.1). */
  origin: string;
  /** The same fixtures on `localhost`: never granted in the test build. */
  localhost: string;
  close(): Promise<void>;
}

/**
 * Serves the fixtures, starts the fake server, launches Chromium with the test build (and any
 * `extraExtensions`), signs the agent in with `storedSites(origin, localhost)` as its stored sites
 * (default: the granted origin only) and waits for its hello.
 */
export async function startAgentRig(o: { extraExtensions?: string[]; storedSites?: (origin: string, localhost: string) => string[] } = {}): Promise<AgentRig> {
  const fixtures = await serveFixtures();
  const origin = fixtures.origin;
  const localhost = `http://localhost:${fixtures.port}`;
  const server = await new FakePalisade().listen();
  const browser = await launch(o.extraExtensions ?? []);
  await signInWithFakeToken(browser.worker, server.origin, o.storedSites?.(origin, localhost) ?? [origin]);
  await server.waitFor((f) => f.type === 'hello');
  return {
    browser, server, fixtures, origin, localhost,
    async close() {
      await browser.close();
      await server.close();
      await fixtures.close();
    },
  };
}
