/**
 * The load side of `login.bench.ts`, in its own process so the server under test does not share
 * its event loop. It opens `warmup + n` sign-in interactions the way a person does (device code →
 * verification page → confirm the code → sign-in form), untimed, each with a cookie jar of its
 * own, signs in on the `warmup` first ones and says `ready`. Then, each time the parent sends
 * `{ run: count }`, it signs in on the next `count` interactions, `concurrency` at a time, and
 * answers with that slice (so the parent can interleave slices of sign-ins with slices of the
 * bound). Only the login POSTs are timed; each must answer with the 303 that resumes the
 * authorization (towards the consent page). On `{ stop: true }` it follows a few of those redirects
 * to the consent page, untimed, as a check, and exits.
 *
 * With `mode: 'burst'` it instead opens `n` interactions, posts all `n` sign-ins at once on the
 * first account, prints each answer's status and latency as JSON, and exits.
 */
import { Agent, request } from 'undici';
import { readForm } from '../packages/server/test/support/harness.ts';
import type { Slice, SliceCommand } from './login.bound.ts';

interface DriverInput {
  mode?: 'load' | 'burst';
  url: string;
  ca: string;
  /** The accounts to sign in as: worker `i` uses `accounts[i % accounts.length]`. */
  accounts: { username: string; password: string }[];
  concurrency: number;
  warmup: number;
  n: number;
}

/** Each answer of a burst: status, what the page said, latency (ms). */
export interface BurstResult {
  answers: { status: number; outcome: 'signed in' | 'locked' | 'wrong password' | 'other'; ms: number }[];
}

const input = JSON.parse(process.env.BENCH_DRIVER ?? '{}') as DriverInput;
const dispatcher = new Agent({ connect: { ca: input.ca }, connections: 16 });
const DEVICE_SCOPE = 'openid offline_access tasks admin';

/** One browser's cookies (our own pages only; sent on every path, as the test harness does). */
class Jar {
  readonly #cookies = new Map<string, string>();
  header(): string {
    return [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  take(setCookie: string | string[] | undefined): void {
    for (const c of setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair] = c.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i);
      const value = pair!.slice(i + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }
}

/** One request, no redirect followed. */
async function send(jar: Jar, url: string, method = 'GET', form?: Record<string, string>): Promise<{ status: number; location: string | undefined; body: string }> {
  const headers: Record<string, string> = { cookie: jar.header() };
  if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await request(url, { method: method as 'GET', headers, body: form ? new URLSearchParams(form).toString() : undefined, dispatcher });
  jar.take(res.headers['set-cookie']);
  const location = res.headers.location;
  return { status: res.statusCode, location: typeof location === 'string' ? new URL(location, url).href : undefined, body: await res.body.text() };
}

/** Like a browser: follows redirects (as GET), keeping cookies. */
async function go(jar: Jar, url: string, method = 'GET', form?: Record<string, string>): Promise<{ status: number; url: string; body: string }> {
  for (let hop = 0; hop < 10; hop++) {
    const r = await send(jar, url, method, form);
    if (r.status >= 300 && r.status < 400 && r.location) {
      url = r.location;
      method = 'GET';
      form = undefined;
      continue;
    }
    return { status: r.status, url, body: r.body };
  }
  throw new Error('too many redirects');
}

interface Pending { jar: Jar; action: string; fields: Record<string, string> }

/** A fresh device code, opened up to the sign-in form (as `openSignIn` in the test harness does). */
async function openSignIn(): Promise<Pending> {
  const jar = new Jar();
  const start = await send(jar, `${input.url}/oauth2/device/auth`, 'POST', { client_id: 'palisade-cli', scope: DEVICE_SCOPE });
  if (start.status !== 200) throw new Error(`device/auth failed: ${start.status} ${start.body.slice(0, 300)}`);
  const device = JSON.parse(start.body) as { verification_uri_complete: string };
  let page = await go(jar, device.verification_uri_complete);
  if (page.body.includes('<title>Submitting Callback</title>')) {
    const auto = readForm(page.body);
    page = await go(jar, new URL(auto.action, page.url).href, 'POST', auto.fields);
  }
  const confirm = readForm(page.body, 'op.deviceConfirmForm');
  page = await go(jar, new URL(confirm.action, page.url).href, 'POST', confirm.fields);
  const login = readForm(page.body);
  if (!login.action.includes('/login')) throw new Error(`expected the sign-in form, got ${page.status}: ${page.body.slice(0, 300)}`);
  return { jar, action: new URL(login.action, page.url).href, fields: login.fields };
}

/** Opens `count` interactions, `parallel` at a time. */
async function openMany(count: number, parallel = 8): Promise<Pending[]> {
  const out: Pending[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < count) {
      next++;
      out.push(await openSignIn());
    }
  }));
  return out;
}

const now = () => Number(process.hrtime.bigint()) / 1e6;
const signIn = (p: Pending, account: { username: string; password: string }) => send(p.jar, p.action, 'POST', { ...p.fields, username: account.username, password: account.password });

if (input.mode === 'burst') {
  const pending = await openMany(input.n);
  const answers = await Promise.all(pending.map(async (p) => {
    const t0 = now();
    const r = await signIn(p, input.accounts[0]!);
    const ms = now() - t0;
    // A refusal is the sign-in form again, with the reason (its status is not the signal: the form may come back with 200).
    const outcome = r.status === 303 ? 'signed in' : r.body.includes('Too many failed sign-ins') ? 'locked' : r.body.includes('Wrong username or password') ? 'wrong password' : 'other';
    return { status: r.status, outcome, ms } as const;
  }));
  await dispatcher.close();
  process.stdout.write(JSON.stringify({ answers } satisfies BurstResult));
  process.exit(0);
}

const all = await openMany(input.warmup + input.n);
const redirects: { p: Pending; location: string }[] = [];
let next = 0;

/** Signs in on the next `count` interactions, `concurrency` at a time; the right password must answer with the resume redirect. */
async function run(count: number): Promise<Slice> {
  const samples: number[] = [];
  const last = Math.min(all.length, next + count);
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await Promise.all(Array.from({ length: input.concurrency }, async (_, worker) => {
    const account = input.accounts[worker % input.accounts.length]!;
    while (next < last) {
      const p = all[next++]!;
      const start = now();
      const r = await signIn(p, account);
      samples.push(now() - start);
      if (r.status !== 303 || !r.location?.includes('/oauth2/')) throw new Error(`sign-in as ${account.username} answered ${r.status} ${r.location ?? ''}: ${r.body.slice(0, 300)}`);
      redirects.push({ p, location: r.location });
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  return { samples, seconds: (now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
}

await run(input.warmup);
process.on('message', (m: SliceCommand) => {
  void (async () => {
    if ('stop' in m) {
      // Untimed check: a few of the redirects lead to the consent page.
      for (const { p, location } of redirects.slice(-3)) {
        const page = await go(p.jar, location);
        if (!page.body.includes('id="approve"')) throw new Error(`the sign-in did not lead to the consent page: ${page.status} ${page.body.slice(0, 300)}`);
      }
      await dispatcher.close();
      process.exit(0);
    }
    process.send!({ slice: await run(m.run) });
  })();
});
process.send!({ ready: true });
