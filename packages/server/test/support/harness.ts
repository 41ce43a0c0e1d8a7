/**
 * Test harness for the server: a real server node in a temporary data folder (TLS by default, with
 * the generated development CA trusted by this harness only), an admin created through the real
 * setup page, device-grant sign-in driven through the real HTML pages with a cookie jar, and
 * client-credentials tokens from the real token endpoint.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { Agent, fetch as ufetch, type Dispatcher } from 'undici';
import { pino } from 'pino';
import { createPalisade, type Palisade, type CreateOptions } from '../../src/app.ts';
import type { SecurityEvent } from '../../src/siem/events.ts';
import { DEFAULT_RATE_LIMITS, type RateLimitConfig } from '../../src/config.ts';

export const ADMIN = { username: 'admin', password: 'correct horse battery staple' };

export interface TestServer {
  server: Palisade;
  url: string;
  dispatcher: Dispatcher;
  /** Security events emitted so far. */
  securityEvents: SecurityEvent[];
  fetch(path: string, init?: RequestInit & { token?: string }): Promise<Response>;
  close(): Promise<void>;
}

/**
 * Rate limits for tests that exercise something else: the default policy with every rate and burst
 * ×1000 (a whole test file's requests come from one address). Tests of the limits set their own.
 */
export const ROOMY_RATE_LIMITS: RateLimitConfig = scaledRateLimits(1000);

/** The default rate limits with every rate and burst `factor` times larger (still checked on every request). */
export function scaledRateLimits(factor: number): RateLimitConfig {
  return {
    ...DEFAULT_RATE_LIMITS,
    classes: Object.fromEntries(Object.entries(DEFAULT_RATE_LIMITS.classes).map(([cls, specs]) => [cls, Object.fromEntries(
      Object.entries(specs).map(([dim, spec]) => [dim, spec && { ...spec, limit: spec.limit * factor, burst: spec.burst * factor }]),
    )])) as RateLimitConfig['classes'],
  };
}

/** A port nobody listens on right now on 127.0.0.1 (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts a server node on a free port in a fresh data folder. */
export async function startTestServer(options: CreateOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'palisade-test-'));
  const server = await createPalisade({
    port: 0,
    logger: pino({ level: process.env.PALISADE_TEST_LOG ?? 'silent' }),
    recipeDirs: [new URL('../../../../recipes/', import.meta.url).pathname],
    rateLimits: ROOMY_RATE_LIMITS,
    ...options,
    dataDir,
  });
  const publicUrl = await server.listen();
  // Nodes of one deployment share a public URL (and so an issuer); requests go to this node itself.
  const url = options.publicUrl ? `${server.tls ? 'https' : 'http'}://127.0.0.1:${(server.app.server.address() as { port: number }).port}` : publicUrl;
  const dispatcher = new Agent({ connect: server.tls?.ca ? { ca: server.tls.ca } : {} });
  const securityEvents: SecurityEvent[] = [];
  server.events.subscribe((e) => securityEvents.push(e));
  return {
    server, url, dispatcher, securityEvents,
    fetch: (path, init = {}) => {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return ufetch(new URL(path, url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    async close() {
      await server.close();
      await dispatcher.close();
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Creates the first admin through the one-time setup page. */
export async function createAdmin(t: TestServer, user = ADMIN): Promise<void> {
  const setup = t.server.setupUrl;
  if (!setup) throw new Error('the server has no setup link (an account exists already)');
  const token = new URL(setup).searchParams.get('token')!;
  const res = await t.fetch('/setup', { method: 'POST', body: new URLSearchParams({ token, ...user }), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  if (res.status !== 201) throw new Error(`setup failed: ${res.status} ${await res.text()}`);
}

/** A minimal browser: follows redirects by hand and keeps cookies. */
export class Browser {
  readonly #t: TestServer;
  readonly #jar = new Map<string, string>();
  /** Hidden inputs of the forms on the pages seen so far, by the form's absolute action URL. */
  readonly #hidden = new Map<string, Record<string, string>>();
  constructor(t: TestServer) {
    this.#t = t;
  }
  /**
   * Follows redirects on this server; a redirect elsewhere (an upstream provider) is returned as
   * `location`. A POST to the action of a form on a page seen before sends that form's hidden
   * inputs (anti-forgery tokens…) with `form`, as a browser would, unless `hidden` is false;
   * `headers` are added to the first request only.
   */
  async request(path: string, init: { method?: string; form?: Record<string, string>; hidden?: boolean; headers?: Record<string, string> } = {}): Promise<{ status: number; url: string; body: string; location?: string }> {
    let url = new URL(path, this.#t.url).href;
    let method = init.method ?? 'GET';
    const hidden = method === 'POST' && init.hidden !== false ? this.#hidden.get(url) : undefined;
    const form = hidden ? { ...hidden, ...init.form } : init.form;
    let body: string | undefined = form ? new URLSearchParams(form).toString() : undefined;
    for (let hop = 0; hop < 10; hop++) {
      const headers: Record<string, string> = { ...(hop === 0 ? init.headers : {}), cookie: [...this.#jar].map(([k, v]) => `${k}=${v}`).join('; ') };
      if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = (await ufetch(url, { method, headers, body, dispatcher: this.#t.dispatcher, redirect: 'manual' })) as unknown as Response;
      for (const c of res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const i = pair!.indexOf('=');
        const name = pair!.slice(0, i);
        const value = pair!.slice(i + 1);
        if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.#jar.delete(name);
        else this.#jar.set(name, value);
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        const next = new URL(location, url);
        if (next.origin !== new URL(this.#t.url).origin) {
          await res.arrayBuffer();
          return { status: res.status, url, body: '', location: next.href };
        }
        url = next.href;
        method = 'GET';
        body = undefined;
        await res.arrayBuffer();
        continue;
      }
      const text = await res.text();
      for (const f of text.matchAll(/<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)) {
        const fields: Record<string, string> = {};
        for (const i of f[2]!.matchAll(/<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields[i[1]!] = i[2]!;
        this.#hidden.set(new URL(f[1]!.replace(/&amp;/g, '&'), url).href, fields);
      }
      return { status: res.status, url, body: text };
    }
    throw new Error('too many redirects');
  }
}

/** Reads a form's action and hidden inputs from HTML (only what our own pages produce). */
export function readForm(html: string, id?: string): { action: string; fields: Record<string, string> } {
  const formRe = id ? new RegExp(`<form[^>]*id="${id.replace('.', '\\.')}"[^>]*>([\\s\\S]*?)</form>`) : /<form[^>]*>([\s\S]*?)<\/form>/;
  const m = formRe.exec(html);
  if (!m) throw new Error(`no form${id ? ` ${id}` : ''} in page: ${html.slice(0, 500)}`);
  const action = /action="([^"]*)"/.exec(m[0])![1]!.replace(/&amp;/g, '&');
  const fields: Record<string, string> = {};
  for (const i of m[1]!.matchAll(/<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields[i[1]!] = i[2]!;
  return { action, fields };
}

export interface DeviceTokens {
  access_token: string;
  refresh_token?: string;
  expires_in: number;
  scope: string;
}

/** Runs the whole device grant: start, approve through the HTML pages as `user`, poll the token. */
export async function deviceLogin(t: TestServer, clientId: string, scope: string, user = ADMIN): Promise<DeviceTokens> {
  const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: clientId, scope }) });
  if (start.status !== 200) throw new Error(`device/auth failed: ${start.status} ${await start.text()}`);
  const device = (await start.json()) as { device_code: string; verification_uri_complete: string; interval: number };
  await approveDevice(t, device.verification_uri_complete, user);
  return pollDeviceToken(t, clientId, device.device_code);
}

/**
 * Opens a verification link as a person would and confirms the code; returns the browser, on the
 * sign-in form, and that form.
 */
export async function openSignIn(t: TestServer, verificationUri: string): Promise<{ browser: Browser; login: { action: string; fields: Record<string, string> } }> {
  const b = new Browser(t);
  let page = await b.request(verificationUri);
  if (page.body.includes('<title>Submitting Callback</title>')) {
    // The code in the link is posted by the page's own (hash-allowed) script; a browser without script clicks Continue.
    const auto = readForm(page.body);
    page = await b.request(auto.action, { method: 'POST', form: auto.fields });
  }
  const confirm = readForm(page.body, 'op.deviceConfirmForm');
  page = await b.request(confirm.action, { method: 'POST', form: confirm.fields });
  return { browser: b, login: readForm(page.body) };
}

/** Approves a device code as a person would: confirm code, sign in, approve. */
export async function approveDevice(t: TestServer, verificationUri: string, user = ADMIN): Promise<void> {
  const { browser: b, login } = await openSignIn(t, verificationUri);
  let page = await b.request(login.action, { method: 'POST', form: { username: user.username, password: user.password } });
  if (!page.body.includes('id="approve"')) throw new Error(`expected the consent page, got ${page.status}: ${page.body.slice(0, 400)}`);
  const consent = readForm(page.body);
  page = await b.request(consent.action, { method: 'POST', form: {} });
  if (!page.body.includes('device-success')) throw new Error(`device approval did not succeed: ${page.status} ${page.body.slice(0, 400)}`);
}

export async function pollDeviceToken(t: TestServer, clientId: string, deviceCode: string): Promise<DeviceTokens> {
  const res = await t.fetch('/oauth2/token', {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: deviceCode, client_id: clientId }),
  });
  const body = (await res.json()) as DeviceTokens & { error?: string };
  if (res.status !== 200) throw new Error(`token exchange failed: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** A client-credentials access token. */
export async function clientToken(t: TestServer, clientId: string, secret: string, scope = 'tasks'): Promise<string> {
  const res = await t.fetch('/oauth2/token', {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`client credentials failed: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

/** Admin signs in with the CLI client and creates an API client; returns its id, secret and a token. */
export async function apiClient(t: TestServer, name = 'test client'): Promise<{ clientId: string; clientSecret: string; token: string; adminToken: string }> {
  const admin = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin');
  const res = await t.fetch('/api/v1/clients', { method: 'POST', token: admin.access_token, body: JSON.stringify({ name }), headers: { 'content-type': 'application/json' } });
  if (res.status !== 201) throw new Error(`client create failed: ${res.status} ${await res.text()}`);
  const c = (await res.json()) as { clientId: string; clientSecret: string };
  return { ...c, token: await clientToken(t, c.clientId, c.clientSecret), adminToken: admin.access_token };
}
