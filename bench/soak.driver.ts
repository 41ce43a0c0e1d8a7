/**
 * The load side of `soak.bench.ts`, in its own process: until told to stop,
 *
 * - connection churn: synthetic agents (the real agent protocol over real WebSockets) connect to a
 *   random node at `connRate` a second, say hello, stay a random `lifeMin`–`lifeMax` seconds and
 *   disconnect (a pool of about connRate × mean life alive); each reuses a free instance id from a
 *   fixed set, as reinstalled-but-same browsers do, so the agents table does not grow;
 * - task traffic at `taskRate` a second, submitted to a random node by an API client: succeeding
 *   (half waited for with `Prefer: wait`, half watched over SSE to the end), failing, cancelled
 *   while running, and expiring (accepted, never answered, past a 1 s deadline);
 * - token refreshes: the agents' access token through the rotating refresh token, and the API
 *   client's token through client credentials, every `refreshSeconds`.
 *
 * Answers `{ ask: 'stats' }` with its counters; `{ ask: 'stop' }` stops new work, waits for work in
 * flight, closes every agent and answers `{ stopped: stats }`.
 */
import { randomUUID } from 'node:crypto';
import { Agent, fetch as ufetch, request, type Dispatcher } from 'undici';
import { deviceLogin, type TestServer } from '../packages/server/test/support/harness.ts';
import { PROTOCOL_VERSION } from '@palisade/protocol';
import { SyntheticAgent, type SyntheticAgentOptions } from '../packages/server/test/support/agent.ts';

export interface SoakDriverInput {
  nodes: { url: string; ca: string }[];
  agentToken: string;
  agentRefresh: string;
  clientId: string;
  clientSecret: string;
  connRate: number;
  lifeMin: number;
  lifeMax: number;
  taskRate: number;
  refreshSeconds: number;
}

export interface SoakStats {
  connects: number;
  connectErrors: number;
  alive: number;
  tasks: number;
  ended: Record<string, number>;
  sse: number;
  cancels: number;
  waitedThenWatched: number;
  httpErrors: number;
  refreshes: number;
  relogins: number;
  firstErrors: string[];
  driverRss: number;
}

const input = JSON.parse(process.env.BENCH_DRIVER ?? '{}') as SoakDriverInput;
const SITE = 'http://127.0.0.1:9';
const nodes = input.nodes.map((n) => ({ ...n, dispatcher: new Agent({ connect: { ca: n.ca }, connections: 32 }) as Dispatcher }));
const pick = () => nodes[Math.floor(Math.random() * nodes.length)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stats: SoakStats = { connects: 0, connectErrors: 0, alive: 0, tasks: 0, ended: {}, sse: 0, cancels: 0, waitedThenWatched: 0, httpErrors: 0, refreshes: 0, relogins: 0, firstErrors: [], driverRss: 0 };
const fail = (what: string, e: unknown) => {
  if (stats.firstErrors.length < 20) stats.firstErrors.push(`${what}: ${e instanceof Error ? e.message : String(e)}`.slice(0, 300));
};

let agentToken = input.agentToken;
let agentRefresh = input.agentRefresh;
let clientTokenValue = '';
let stopping = false;
const inFlight = new Set<Promise<unknown>>();
const track = (p: Promise<unknown>) => {
  inFlight.add(p);
  void p.finally(() => inFlight.delete(p));
};

// ---- tokens ---------------------------------------------------------------------------------------

async function token(form: Record<string, string>, basic?: string): Promise<{ access_token: string; refresh_token?: string }> {
  const a = nodes[0]!;
  const res = await request(`${a.url}/oauth2/token`, {
    method: 'POST', dispatcher: a.dispatcher, body: new URLSearchParams(form).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(basic ? { authorization: `Basic ${basic}` } : {}) },
  });
  const body = (await res.body.json()) as { access_token: string; refresh_token?: string };
  if (res.statusCode !== 200) throw new Error(`token ${form.grant_type}: ${res.statusCode} ${JSON.stringify(body)}`);
  return body;
}

/**
 * One refresh at a time (a refresh slower than the interval must not start another with the same,
 * soon rotated, refresh token: that is reuse, and revokes the whole grant). Should the grant be
 * lost all the same, the agents' owner signs in again (the device grant, through the real pages),
 * counted in `relogins`.
 */
let refreshing: Promise<void> | undefined;
function refreshTokens(): Promise<void> {
  refreshing ??= (async () => {
    try {
      try {
        const agent = await token({ grant_type: 'refresh_token', refresh_token: agentRefresh, client_id: 'palisade-extension' });
        agentToken = agent.access_token;
        if (agent.refresh_token) agentRefresh = agent.refresh_token;
      } catch (e) {
        if (!String(e).includes('invalid_grant')) throw e;
        fail('refresh (signing in again)', e);
        const fresh = await deviceLogin(signInTarget(), 'palisade-extension', 'openid offline_access agent');
        agentToken = fresh.access_token;
        agentRefresh = fresh.refresh_token!;
        stats.relogins++;
      }
      const basic = Buffer.from(`${encodeURIComponent(input.clientId)}:${encodeURIComponent(input.clientSecret)}`).toString('base64');
      clientTokenValue = (await token({ grant_type: 'client_credentials', scope: 'tasks' }, basic)).access_token;
      stats.refreshes++;
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

/** The test harness's server shape, enough for its device sign-in against node a. */
function signInTarget(): TestServer {
  const a = nodes[0]!;
  return {
    server: undefined as never, url: a.url, dispatcher: a.dispatcher, securityEvents: [],
    fetch: (path, init = {}) => {
      const { token: bearer, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (bearer) headers.set('authorization', `Bearer ${bearer}`);
      return ufetch(new URL(path, a.url), { ...(rest as object), headers, dispatcher: a.dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    close: async () => {},
  };
}

// ---- connection churn -----------------------------------------------------------------------------

/** Instance ids not in use by a live connection (twice the expected pool). */
const freeIds = Array.from({ length: Math.ceil(input.connRate * input.lifeMax * 2) }, () => randomUUID());
const agents = new Set<SyntheticAgent>();

/** What an agent does with a task: the mode rides in the first step's URL path. */
async function onTask(f: { steps: { type: string; url?: string }[] }) {
  const mode = new URL(f.steps[0]?.url ?? SITE).pathname.slice(1);
  if (mode === 'hang') return 'ignore' as const;
  await sleep(20 + Math.random() * 300);
  if (mode === 'fail') return { outcome: 'failed' as const, error: { code: 'PAL_ERR_STEP_FAILED', message: 'synthetic failure' } as never };
  return { outcome: 'succeeded' as const, result: { outputs: { x: 'soak' } } };
}

/**
 * `SyntheticAgent.connect`, but closing the socket when the upgrade or the welcome fails (a loaded
 * machine can take longer than the 5 s it waits), so that a failed attempt leaves no connection
 * open that the soak would then count against the server; waits up to 30 s for the welcome.
 */
async function connectAgent(o: SyntheticAgentOptions): Promise<SyntheticAgent> {
  const a = new (SyntheticAgent as unknown as new (o: SyntheticAgentOptions) => SyntheticAgent)(o);
  try {
    await new Promise<void>((resolve, reject) => {
      a.ws.once('open', () => resolve());
      a.ws.once('error', reject);
      a.ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    a.send({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'synthetic', version: '0.0.0', instanceId: o.instanceId }, grants: o.grants });
    const welcome = await a.next((f) => f.type === 'welcome', 30_000);
    a.agentId = (welcome as { agentId: string }).agentId;
    return a;
  } catch (e) {
    a.ws.on('error', () => undefined);
    a.ws.terminate();
    throw e;
  }
}

async function connectOne(): Promise<void> {
  const instanceId = freeIds.pop();
  if (!instanceId) return;
  const n = pick();
  try {
    const a = await connectAgent({ url: n.url, token: agentToken, ca: n.ca, grants: [SITE], instanceId, onTask });
    stats.connects++;
    agents.add(a);
    stats.alive = agents.size;
    const life = (input.lifeMin + Math.random() * (input.lifeMax - input.lifeMin)) * 1000;
    const closed = a.closed();
    const timer = setTimeout(() => a.close(), life);
    await closed;
    clearTimeout(timer);
    agents.delete(a);
    stats.alive = agents.size;
  } catch (e) {
    stats.connectErrors++;
    fail('connect', e);
  } finally {
    freeIds.push(instanceId);
  }
}

// ---- task traffic ---------------------------------------------------------------------------------

const body = (mode: string, timeoutMs?: number) => JSON.stringify({
  site: SITE, steps: [{ type: 'navigate', url: `${SITE}/${mode}` }, { type: 'extract', name: 'x', selectors: ['h1'] }], ...(timeoutMs ? { timeoutMs } : {}),
});

async function api(n: (typeof nodes)[number], method: 'GET' | 'POST', path: string, payload?: string, extra: Record<string, string> = {}) {
  return request(`${n.url}/api/v1${path}`, {
    method, dispatcher: n.dispatcher, body: payload,
    headers: { authorization: `Bearer ${clientTokenValue}`, ...(payload ? { 'content-type': 'application/json' } : {}), ...extra },
  });
}

const FINAL = new Set(['succeeded', 'failed', 'cancelled', 'expired']);
const end = (state: string) => (stats.ended[state] = (stats.ended[state] ?? 0) + 1);

/** Tasks submitted and not yet seen to end (cancelled when the load stops). */
const pending = new Set<string>();
const streams = new Set<{ destroy(e: Error): void }>();

async function oneTask(): Promise<void> {
  const r = Math.random();
  const n = pick();
  stats.tasks++;
  let id: string | undefined;
  try {
    const mode = r < 0.6 ? 'ok' : r < 0.7 ? 'fail' : 'hang';
    const expire = mode === 'hang' && r >= 0.85;
    // 30 %: succeeds, and the client waits on the submitting request (then follows it over SSE if
    // it has not ended within the wait, e.g. because its agent left and it was dispatched again).
    const waited = r < 0.3;
    const res = await api(n, 'POST', '/tasks', body(mode, expire ? 1000 : undefined), waited ? { prefer: 'wait=10' } : {});
    const t = (await res.body.json()) as { id?: string; state?: string };
    if (res.statusCode >= 300 || !t.id) throw new Error(`submit ${res.statusCode} ${JSON.stringify(t)}`);
    id = t.id;
    if (waited && FINAL.has(t.state ?? '')) return void end(t.state!);
    pending.add(id);
    if (waited) stats.waitedThenWatched++;
    // Cancelled from a random node while it runs, or watched over SSE (to its end) from a random node.
    if (mode === 'hang' && !expire) {
      await sleep(200 + Math.random() * 1300);
      const c = await api(pick(), 'POST', `/tasks/${t.id}/cancel`);
      await c.body.dump();
      stats.cancels++;
    }
    const sse = await api(pick(), 'GET', `/tasks/${t.id}/events`, undefined, { accept: 'text/event-stream' });
    if (sse.statusCode !== 200) throw new Error(`events ${sse.statusCode} ${await sse.body.text()}`);
    stats.sse++;
    let text = '';
    const stream = { destroy: (e: Error) => sse.body.destroy(e) };
    streams.add(stream);
    // A task's deadline is 120 s at most here: an end event must come before 150 s.
    const timer = setTimeout(() => sse.body.destroy(new Error('no end event within 150 s')), 150_000);
    try {
      for await (const chunk of sse.body) text += String(chunk);
    } finally {
      clearTimeout(timer);
      streams.delete(stream);
    }
    const m = /event: end\ndata: (.*)\n/.exec(text);
    if (!m) throw new Error(`stream ended without an end event: ${text.slice(-200)}`);
    end((JSON.parse(m[1]!) as { task: { state: string } }).task.state);
  } catch (e) {
    if (stopping) return;
    stats.httpErrors++;
    fail('task', e);
  } finally {
    if (id) pending.delete(id);
  }
}

// ---- pacing ---------------------------------------------------------------------------------------

/** Calls `f` at `rate` a second (paced on a 50 ms tick, carrying fractions over). */
function paced(rate: number, f: () => Promise<void>): NodeJS.Timeout {
  let due = 0;
  let last = performance.now();
  return setInterval(() => {
    const now = performance.now();
    due += ((now - last) / 1000) * rate;
    last = now;
    for (; due >= 1 && !stopping; due--) track(f());
  }, 50);
}

await refreshTokens();
const timers = [
  paced(input.connRate, connectOne),
  paced(input.taskRate, oneTask),
  setInterval(() => track(refreshTokens().catch((e: unknown) => { stats.httpErrors++; fail('refresh', e); })), input.refreshSeconds * 1000),
];

process.on('message', (m: { ask?: string }) => {
  stats.driverRss = process.memoryUsage().rss;
  if (m.ask === 'stats') process.send!({ stats });
  else if (m.ask === 'stop') {
    void (async () => {
      // No new work; every agent leaves; tasks still open are cancelled (as a client that gives up
      // would), so the nodes can be checked for leftovers soon after.
      stopping = true;
      for (const t of timers) clearInterval(t);
      for (const a of agents) a.close();
      const open = [...pending];
      await Promise.all(open.map(async (id) => {
        try {
          await (await api(pick(), 'POST', `/tasks/${id}/cancel`)).body.dump();
        } catch (e) {
          fail('cancel on stop', e);
        }
      }));
      const deadline = Date.now() + 30_000;
      while (inFlight.size > 0 && Date.now() < deadline) await sleep(100);
      for (const s of streams) s.destroy(new Error('stopped'));
      for (const n of nodes) await n.dispatcher.close().catch(() => undefined);
      process.send!({ stopped: { ...stats, cancelledOnStop: open.length, inFlight: inFlight.size } }, () => process.exit(0));
    })();
  }
});
// The parent gone (its IPC channel closed) ends the load too.
process.on('disconnect', () => process.exit(1));
process.send!({ started: true });
