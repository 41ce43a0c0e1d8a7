/**
 * Token endpoint throughput: client-credentials grants per second, with p50/p99, for Palisade's
 * whole stack (Fastify, the SQLite store behind the OAuth adapter, security events written through
 * the logger) against a bare `oidc-provider` configured the same way (ES256 JWT access tokens for the
 * same audience, `client_secret_basic`, in-memory adapter), both over HTTPS with the same
 * certificate, in the same run.
 *
 * Each server runs in a child process of its own; the load comes from a third process
 * (`bench/token.driver.ts`) holding `--connections` kept-alive connections, so on this 2-core
 * machine the server has one core and the load generator the other. Both servers start once and stay
 * up; rounds alternate which target goes first, each with a warm-up of its own.
 *
 *   node bench/token.bench.ts [--seconds 10] [--warmup 3] [--rounds 3] [--connections 32] [--cpu-prof DIR] [--write]
 *
 * `--cpu-prof DIR` writes a V8 CPU profile of each server's timed window to DIR (`<target>-round<n>.cpuprofile`)
 * and prints where the main thread's time went, per request, Palisade beside the bare provider. Profiling
 * slows both servers: take figures from a run without it.
 */
import { parseArgs } from 'node:util';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { tmpdir, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Agent, fetch as ufetch } from 'undici';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { createPalisade } from '../packages/server/src/app.ts';
import { ensureDevTls } from '../packages/server/src/tls/devca.ts';
import { apiClient, createAdmin, ROOMY_RATE_LIMITS, type TestServer } from '../packages/server/test/support/harness.ts';
import type { DriverResult } from './token.driver.ts';
import { addProfile, answerAsks, ask, type Ask, machine, machineBusy, nextMessage, table, writeSection } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' }, warmup: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' }, 'cpu-prof': { type: 'string' }, write: { type: 'boolean', default: false },
    serve: { type: 'string' },
  },
});
const AUDIENCE = 'urn:palisade:api';
const TOKEN_PATH = '/oauth2/token';

type Target = 'palisade' | 'bare';
interface Ready { url: string; clientId: string; clientSecret: string }
interface ServeInput { tlsDir: string }

// ---- server side (a child process: `--serve palisade|bare`) ----------------------------------------

/** Palisade on its embedded defaults (SQLite in a fresh data folder, dev TLS, logger at `info` on stdout). */
async function servePalisade(input: ServeInput): Promise<{ ready: Ready; close: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'palisade-bench-'));
  cpSync(input.tlsDir, join(dataDir, 'tls'), { recursive: true });
  // Rate limits on and checked on every request, with rates no load generator here reaches.
  const server = await createPalisade({ dataDir, port: 0, rateLimits: ROOMY_RATE_LIMITS });
  const url = await server.listen();
  const dispatcher = new Agent({ connect: { ca: server.tls!.ca! } });
  // The test harness's shape, without its in-memory list of every security event (which would grow
  // by one object per token here, as production does not).
  const t: TestServer = {
    server, url, dispatcher, securityEvents: [],
    fetch: (path, init = {}) => {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return ufetch(new URL(path, url), { ...(rest as object), headers, dispatcher, redirect: 'manual' } as never) as unknown as Promise<Response>;
    },
    close: async () => {},
  };
  await createAdmin(t);
  const { clientId, clientSecret } = await apiClient(t, 'token bench');
  await dispatcher.close();
  return {
    ready: { url, clientId, clientSecret },
    close: async () => {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A bare oidc-provider with the same grant, key type, audience, token format and client auth; in-memory adapter. */
async function serveBare(input: ServeInput): Promise<{ ready: Ready; close: () => Promise<void> }> {
  const tls = ensureDevTls(input.tlsDir);
  let handle: (req: IncomingMessage, res: ServerResponse) => void = () => {};
  const server = createServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3' }, (req, res) => handle(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: randomBytes(12).toString('base64url'), alg: 'ES256', use: 'sig' };
  // The same shapes of id and secret as Palisade's API clients, so requests and tokens are the same size.
  const clientId = `pal_${randomBytes(12).toString('base64url')}`;
  const clientSecret = `pal_sk_${randomBytes(32).toString('base64url')}`;
  const provider = new Provider(`${url}/oauth2`, {
    clients: [{
      client_id: clientId, client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'tasks',
    }],
    clientDefaults: { id_token_signed_response_alg: 'ES256', grant_types: [], response_types: [] },
    jwks: { keys: [signingKey] },
    scopes: ['tasks'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => AUDIENCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({ scope: 'tasks agent admin', audience: AUDIENCE, accessTokenTTL: 900, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    ttl: { ClientCredentials: 900 },
    enabledJWA: { authorizationSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
  });
  // Mounted at /oauth2 the way Palisade mounts it, so both serve the same path and issuer.
  const callback = provider.callback();
  handle = (req, res) => {
    (req as typeof req & { originalUrl?: string }).originalUrl = req.url;
    req.url = (req.url ?? '/').slice('/oauth2'.length) || '/';
    callback(req, res);
  };
  return { ready: { url, clientId, clientSecret }, close: () => new Promise((r) => server.close(() => r())) };
}

async function serve(target: Target): Promise<void> {
  const input = JSON.parse(process.env.BENCH_SERVE ?? '{}') as ServeInput;
  const { ready, close } = target === 'palisade' ? await servePalisade(input) : await serveBare(input);
  answerAsks(close);
  process.send!({ ready });
}

// ---- load side (this process and the driver) --------------------------------------------------------

interface Measured extends DriverResult {
  /** CPU time of the server process over the timed window, as a fraction of one core. */
  serverCpu: number;
  /** CPU time of every other process on the machine over the window (Linux; `NaN` elsewhere), in cores. */
  otherCpu: number;
  /** The window's CPU profile, with `--cpu-prof`. */
  profile?: string | undefined;
}

const SELF = new URL(import.meta.url).pathname;
const DRIVER = new URL('./token.driver.ts', import.meta.url).pathname;

interface Snapshot { cpu: NodeJS.CpuUsage; busy: number }

interface Server { target: Target; child: ChildProcess; ready: Ready; log: string }

/** Starts a server process; its stdout (Palisade's log) goes to a file. */
async function startServer(target: Target, work: string, tlsDir: string): Promise<Server> {
  const log = join(work, `${target}.log`);
  const logFd = openSync(log, 'w');
  const child = fork(SELF, ['--serve', target], {
    env: { ...process.env, BENCH_SERVE: JSON.stringify({ tlsDir } satisfies ServeInput) },
    stdio: ['ignore', logFd, 'inherit', 'ipc'],
  });
  closeSync(logFd);
  return { target, child, log, ready: await nextMessage(child, (m) => (m as { ready?: Ready }).ready) };
}

async function stopServer(s: Server): Promise<void> {
  s.child.send({ ask: 'stop' } satisfies Ask);
  await once(s.child, 'exit');
}

/** One timed window against `server`, from a fresh load-generator process. */
async function measure({ target, child: server, ready }: Server, round: number, ca: string): Promise<Measured> {
  const seconds = Number(values.seconds);
  const driver = fork(DRIVER, [], {
    env: { ...process.env, BENCH_DRIVER: JSON.stringify({ ...ready, path: TOKEN_PATH, ca, connections: Number(values.connections), warmupSeconds: Number(values.warmup), seconds }) },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  let out = '';
  driver.stdout!.on('data', (d: Buffer) => (out += d));
  const profile = values['cpu-prof'] ? join(resolve(values['cpu-prof']), `${target}-round${round}.cpuprofile`) : undefined;
  const snapshots: Promise<Snapshot>[] = [];
  const snapshot = async (): Promise<Snapshot> => {
    const busy = machineBusy();
    return { cpu: await ask(server, { ask: 'cpu' }, (m) => (m as { cpu?: NodeJS.CpuUsage }).cpu), busy };
  };
  driver.on('message', (m: { phase: string }) => {
    if (m.phase === 'window-open') {
      snapshots.push(snapshot().then(async (s) => {
        if (profile) server.send({ ask: 'profile-start' } satisfies Ask);
        return s;
      }));
    } else if (m.phase === 'window-closed') {
      snapshots.push(snapshot().then(async (s) => {
        if (profile) await ask(server, { ask: 'profile-stop', file: profile }, (x) => (x as { profiled?: string }).profiled);
        return s;
      }));
    }
  });
  const [code] = (await once(driver, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${target} driver failed (exit ${code})`);
  const [open, closed] = await Promise.all(snapshots);

  const result = JSON.parse(out) as DriverResult;
  const serverCpu = (closed!.cpu.user + closed!.cpu.system - open!.cpu.user - open!.cpu.system) / 1e6 / seconds;
  const otherCpu = (closed!.busy - open!.busy) / seconds - serverCpu - result.driverCpu;
  return { ...result, serverCpu, otherCpu, profile };
}

async function main(): Promise<void> {
  const ROUNDS = Number(values.rounds);
  const SECONDS = Number(values.seconds);
  const CONNECTIONS = Number(values.connections);
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes a positive integer');
  if (!(SECONDS > 0) || !(Number(values.warmup) >= 0)) throw new Error('--seconds takes a positive number, --warmup a number ≥ 0');
  if (!Number.isInteger(CONNECTIONS) || CONNECTIONS < 1) throw new Error('--connections takes a positive integer');
  if (values['cpu-prof']) mkdirSync(values['cpu-prof'], { recursive: true });

  const work = mkdtempSync(join(tmpdir(), 'palisade-token-bench-'));
  const tlsDir = join(work, 'tls');
  const { ca } = ensureDevTls(tlsDir);
  const load = loadavg()[0]!.toFixed(2);
  process.stderr.write(`token benchmark: ${ROUNDS} rounds × (Palisade, bare oidc-provider) alternating, ${SECONDS} s timed after ${values.warmup} s warm-up, ${CONNECTIONS} connections${values['cpu-prof'] ? ', profiling the servers (figures perturbed)' : ''}\n`);

  const servers = { bare: await startServer('bare', work, tlsDir), palisade: await startServer('palisade', work, tlsDir) };
  const rounds: { pal: Measured; bare: Measured }[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const order: Target[] = r % 2 === 1 ? ['bare', 'palisade'] : ['palisade', 'bare'];
    const got: Partial<Record<Target, Measured>> = {};
    for (const target of order) {
      const m = await measure(servers[target], r, ca!);
      got[target] = m;
      process.stderr.write(`  round ${r} ${target.padEnd(8)}: ${Math.round(m.rps)} req/s, p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms; CPU: server ${pct(m.serverCpu)} (${cpuPerToken(m).toFixed(0)} µs/token), load generator ${pct(m.driverCpu)}, other processes ${pct(m.otherCpu)}${m.errors ? `; ${m.errors} failed requests` : ''}\n`);
    }
    rounds.push({ pal: got.palisade!, bare: got.bare! });
  }
  await stopServer(servers.bare);
  await stopServer(servers.palisade);
  const eventsLogged = readFileSync(servers.palisade.log, 'utf8').split('"activity_name":"oauth.token"').length - 1;
  process.stderr.write(`  Palisade logged ${eventsLogged} oauth.token security events (${rounds.reduce((n, r) => n + r.pal.requests, 0)} tokens counted in the timed windows, the rest in warm-ups)\n`);
  rmSync(work, { recursive: true, force: true });

  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = (pick: (r: { pal: Measured; bare: Measured }) => Measured) => {
    const ms = rounds.map(pick);
    const m = (f: (x: Measured) => number) => med(ms.map(f));
    return {
      rps: m((x) => x.rps), p50: m((x) => x.p50), p99: m((x) => x.p99), p999: m((x) => x.p999),
      serverCpu: m((x) => x.serverCpu), cpuPerToken: m(cpuPerToken), driverCpu: m((x) => x.driverCpu), otherCpu: m((x) => x.otherCpu),
    };
  };
  const P = summary((r) => r.pal);
  const B = summary((r) => r.bare);
  const ratios = rounds.map((r) => r.pal.rps / r.bare.rps);
  const ratio = med(ratios);
  const cpuRatios = rounds.map((r) => cpuPerToken(r.bare) / cpuPerToken(r.pal));
  const cpuRatio = med(cpuRatios);
  const errors = rounds.reduce((n, r) => n + r.pal.errors + r.bare.errors, 0);
  const row = (label: string, s: typeof P) => [label, String(Math.round(s.rps)), s.p50.toFixed(2), s.p99.toFixed(2), s.p999.toFixed(2), pct(s.serverCpu), s.cpuPerToken.toFixed(0), pct(s.driverCpu), pct(s.otherCpu)];
  const cmd = `node bench/token.bench.ts --seconds ${SECONDS} --warmup ${values.warmup} --rounds ${ROUNDS} --connections ${CONNECTIONS}`;

  const out = `- command: \`${cmd}\`
- ${machine()}; 1-minute load average at start ${load}
- \`POST /oauth2/token\`, \`grant_type=client_credentials&scope=tasks\`, \`client_secret_basic\`; answer: an ES256 JWT access token for \`${AUDIENCE}\`
- ${CONNECTIONS} kept-alive HTTPS (TLS 1.3) connections from a separate load-generator process (\`bench/token.driver.ts\`, undici), one request in flight on each; ${values.warmup} s warm-up, then ${SECONDS} s timed; latency is per request, at the client. The load is closed-loop and saturating, so latency is mostly queueing: p50 ≈ ${CONNECTIONS} ÷ throughput, and p99 adds garbage-collector pauses and scheduling
- Palisade: its whole stack on the embedded defaults — the node's HTTPS server handing \`/oauth2\` to oidc-provider ahead of Fastify, the SQLite-backed adapter, API clients through the node's 30-second client cache (revocations reach it at once through the hot store), a security event per token written by the logger at \`info\` (asynchronously, to a file); the token endpoint has no rate limit yet, so none is measured
- bare: \`oidc-provider\` ${providerVersion()} alone on \`node:https\`, the same certificate, key type (ES256), audience, token format, client authentication and path, in-memory adapter
- **one process each**: Palisade has no multi-worker mode yet, so this is the single-process figure (the bare provider is one process too); of the 2 cores, the server has one and the load generator the other. Server CPU above 100% is libuv's thread pool signing (WebCrypto ECDSA) beside the main thread
- "other processes" is the CPU everything else on the machine used during the window (from \`/proc/stat\`): the noise the figures were measured under
- budget: Palisade ≥ 0.9× the bare provider's throughput, p99 ≤ 25 ms. Medians over ${ROUNDS} rounds; both servers start once, and rounds alternate which one goes first, each round with its own warm-up

${table(['target', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'server CPU', 'server CPU µs / token', 'load-generator CPU', 'other processes CPU'], [row('Palisade (full stack)', P), row('bare oidc-provider', B)])}

Throughput Palisade / bare: **${ratio.toFixed(2)}×** (median of the rounds' ratios: ${ratios.map((x) => x.toFixed(2)).join(', ')}) — ${ratio >= 0.9 ? 'within' : '**short of**'} the ≥ 0.9× budget.
Server CPU per token, bare / Palisade: ${cpuRatio.toFixed(2)}× (${cpuRatios.map((x) => x.toFixed(2)).join(', ')}) — the throughput each would reach with a core to itself, relative to the bare provider; less disturbed by the other processes than the throughput ratio.
Palisade p99: ${P.p99.toFixed(2)} ms — ${P.p99 <= 25 ? 'within' : '**over**'} the 25 ms budget (bare oidc-provider under the same load: ${B.p99.toFixed(2)} ms).${errors ? `\nFailed requests (not counted): ${errors}.` : ''}

Every round:

${table(['round', 'Palisade req/s', 'p50 ms', 'p99 ms', 'CPU µs / token', 'bare req/s', 'p50 ms', 'p99 ms', 'CPU µs / token', 'throughput ratio', 'other processes CPU (Palisade / bare window)'],
    rounds.map((r, i) => [`round ${i + 1}`, String(Math.round(r.pal.rps)), r.pal.p50.toFixed(2), r.pal.p99.toFixed(2), cpuPerToken(r.pal).toFixed(0),
      String(Math.round(r.bare.rps)), r.bare.p50.toFixed(2), r.bare.p99.toFixed(2), cpuPerToken(r.bare).toFixed(0), ratios[i]!.toFixed(2), `${pct(r.pal.otherCpu)} / ${pct(r.bare.otherCpu)}`]))}
`;
  process.stdout.write(`\n${out}\n`);
  if (values['cpu-prof']) process.stdout.write(`${hotspots(rounds)}\n`);
  if (values.write) writeSection('token', 'Token endpoint (client credentials): throughput against a bare oidc-provider', out);
}

/**
 * Where the server's main thread spent the timed window, per request: by package (native code
 * charged to the JavaScript that called it) and by function, Palisade beside the bare provider.
 */
function hotspots(rounds: { pal: Measured; bare: Measured }[]): string {
  const tally = (pick: (r: { pal: Measured; bare: Measured }) => Measured) => {
    const areas = new Map<string, number>();
    const fns = new Map<string, number>();
    let requests = 0;
    for (const r of rounds) {
      const m = pick(r);
      requests += m.requests;
      addProfile(m.profile!, areas, fns);
    }
    return { areas, fns, requests };
  };
  const P = tally((r) => r.pal);
  const B = tally((r) => r.bare);
  const per = (m: Map<string, number>, k: string, n: number) => (m.get(k) ?? 0) / n;
  const busy = (t: typeof P) => ([...t.areas].reduce((s, [k, v]) => s + (k === '(idle)' ? 0 : v), 0)) / t.requests;
  const keys = [...new Set([...P.areas.keys(), ...B.areas.keys()])].filter((k) => k !== '(idle)');
  keys.sort((x, y) => Math.abs(per(P.areas, y, P.requests) - per(B.areas, y, B.requests)) - Math.abs(per(P.areas, x, P.requests) - per(B.areas, x, B.requests)));
  const areaRows = keys.slice(0, 25).map((k) => [k, per(P.areas, k, P.requests).toFixed(1), per(B.areas, k, B.requests).toFixed(1), (per(P.areas, k, P.requests) - per(B.areas, k, B.requests)).toFixed(1)]);
  const top = (t: typeof P) => [...t.fns].filter(([k]) => !k.startsWith('(idle)')).sort((x, y) => y[1] - x[1]).slice(0, 25)
    .map(([k, v]) => [k, (v / t.requests).toFixed(1), `${((100 * v) / (busy(t) * t.requests)).toFixed(1)}%`]);
  return `CPU profiles of the timed windows (main thread; µs of CPU per token request, summed over rounds):

main thread busy per request: Palisade ${busy(P).toFixed(1)} µs, bare ${busy(B).toFixed(1)} µs

By package, largest differences first (native code charged to its JavaScript caller):

${table(['package / area', 'Palisade µs/req', 'bare µs/req', 'difference'], areaRows)}

Palisade, top functions by self time:

${table(['function', 'µs/req', 'share of busy'], top(P))}

bare oidc-provider, top functions by self time:

${table(['function', 'µs/req', 'share of busy'], top(B))}
`;
}

/** Server CPU time (all its threads) per token issued in the window, µs. */
function cpuPerToken(m: Measured): number {
  return (m.serverCpu * m.seconds * 1e6) / m.requests;
}

/** A CPU fraction as a percentage; the machine-wide figure can dip a little below 0 (clock ticks), shown as 0. */
function pct(x: number): string {
  return Number.isNaN(x) ? 'n/a' : `${Math.max(0, Math.round(x * 100))}%`;
}

function providerVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../node_modules/oidc-provider/package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

if (values.serve === 'palisade' || values.serve === 'bare') await serve(values.serve);
else if (values.serve !== undefined) throw new Error('--serve takes palisade or bare');
else await main();
