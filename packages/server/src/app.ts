/**
 * @module app — assembles one Palisade server node: store, secrets, TLS, the OAuth 2.1
 * authorization server, the REST API, the agent gateway and the task service, on one port.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import Fastify, { LogController, type FastifyInstance, type FastifyReply } from 'fastify';
import formbody from '@fastify/formbody';
import { pino, type Logger } from 'pino';
import type Provider from 'oidc-provider';
import type { JWK } from 'jose';
import { resolveConfig, type ServerConfig } from './config.ts';
import { openSqliteStore } from './store/sqlite.ts';
import { openPostgresStore } from './store/postgres.ts';
import type { DurableStore } from './store/types.ts';
import { createMemoryHotStore } from './hot/memory.ts';
import { openRedisHotStore, type RedisHotStoreOptions } from './hot/redis.ts';
import type { HotStore } from './hot/types.ts';
import { createSessionManager, type SessionManager } from './auth/sessions.ts';
import { createLoginGuard } from './auth/login-guard.ts';
import { createUpstreamLogin } from './auth/upstream.ts';
import { createClientDirectory } from './auth/clients.ts';
import { readLegacySecrets, sharedCookieKeys } from './auth/secrets.ts';
import { openKeyRing, type KeyRing, type KeyView } from './auth/keys.ts';
import { API_SCOPES, createProvider, FIRST_PARTY_CLIENTS, ID_TOKEN_TTL_S } from './auth/provider.ts';
import { createDirectTokenPath, type DirectTokenPath } from './auth/client-credentials.ts';
import { limitPasswordHashing } from './auth/passwords.ts';
import { createTokenVerifier, type TokenVerifier } from './auth/tokens.ts';
import { createSetupToken, interactionRoutes } from './auth/interactions.ts';
import { createSecurityEvents, type SecurityEvents } from './siem/events.ts';
import { toPalisadeError } from './edge/problem.ts';
import { responseHeaders, securityHeaders } from './edge/headers.ts';
import { cors } from './edge/cors.ts';
import { createClientIpResolver } from './edge/client-ip.ts';
import { InsecureConfigError, productionProblems } from './edge/production.ts';
import { createRateLimiter } from './edge/rate-limit.ts';
import { createRequestGuard, IP_CHECK_LATER, jsonDepthExceeds, onClientError } from './edge/request-guard.ts';
import { createMemoryGuard, OVERLOAD_RETRY_AFTER_S, type MemoryGuard, type MemorySampler } from './edge/memory-guard.ts';
import { exposedGc, startHeapTrim } from './heap-trim.ts';
import { PalisadeError } from '@palisade/protocol';
import { ensureDevTls, loadTlsFiles, spkiHash, type TlsMaterial } from './tls/devca.ts';
import { tlsServerOptions } from './tls/options.ts';
import { watchTls, type TlsWatch } from './tls/watch.ts';
import { postgresSslOptions, readCaFile, redisTlsOptions } from './tls/clients.ts';
import { createMetrics, type NodeMetrics } from './metrics.ts';
import { startInternalListener, type InternalListener } from './edge/internal.ts';
import { AgentRegistry } from './gateway/registry.ts';
import { attachAgentGateway, DRAINING_RETRY_AFTER_S, type ConnectionCaps } from './gateway/agents.ts';
import { loadRecipes, type RecipeRegistry } from './tasks/recipes.ts';
import { TaskService } from './tasks/service.ts';
import { apiRoutes } from './api/routes.ts';

/** Interval between deletions of expired OAuth records, ms. */
export const OIDC_SWEEP_INTERVAL_MS = 60_000;
/** How often a draining node looks whether its tasks have finished, ms. */
export const DRAIN_POLL_MS = 50;
/** How often a draining node logs how many tasks it still waits for, ms (`ShutdownOptions.progressMs`). */
export const DRAIN_PROGRESS_MS = 5000;
/** On close, HTTP requests still open (event streams, long polls) are cut after this long, ms. */
export const HTTP_CLOSE_GRACE_MS = 1000;

export interface ShutdownOptions {
  /** Longest wait for this node's running tasks, ms. Default `config.shutdownDrainMs`. */
  drainMs?: number | undefined;
  /** Interval of progress reports while tasks run, ms. Default {@link DRAIN_PROGRESS_MS}. */
  progressMs?: number | undefined;
  /** Called (besides the log line) when the wait starts and every `progressMs` while tasks run. */
  onProgress?: ((p: { running: number; remainingMs: number }) => void) | undefined;
}

export interface ShutdownResult {
  /** Every task this node's agents ran finished before the deadline (or `close()` ended the wait). */
  drained: boolean;
  /** Tasks still running when the wait ended: a cluster's other nodes take them back once this node stops beating; a lone node requeues them when it starts again. */
  running: number;
  /** How long the wait lasted, ms. */
  waitedMs: number;
}

/** A running (or ready to run) server node. */
export interface Palisade {
  readonly config: ServerConfig;
  readonly app: FastifyInstance;
  readonly store: DurableStore;
  readonly hot: HotStore;
  readonly sessions: SessionManager;
  readonly keys: KeyRing;
  readonly provider: Provider;
  readonly events: SecurityEvents;
  readonly verifier: TokenVerifier;
  readonly tasks: TaskService;
  readonly agents: AgentRegistry;
  /** This node's name in presence, the bus and task records (`config.nodeId`, or made up at start). */
  readonly nodeId: string;
  readonly recipes: RecipeRegistry;
  readonly log: Logger;
  readonly tls: (TlsMaterial & { generated?: boolean }) | undefined;
  /** This node's Prometheus registry (served by the internal listener's `GET /metrics`). */
  readonly metrics: NodeMetrics;
  /** Whether this node sheds new work because its heap is above `memoryHighWaterBytes` (edge/memory-guard.ts). */
  readonly memory: MemoryGuard;
  /** Open WebSocket connections and their caps (known after `listen()`). */
  readonly connections: ConnectionCaps | undefined;
  /** URL of the internal mutual-TLS listener (edge/internal.ts), when `internalPort` is set; known after `listen()`. */
  internalUrl?: string | undefined;
  /** Base URL, known after `listen()`. */
  url: string;
  /** OAuth issuer (`${url}/oauth2`). */
  issuer: string;
  /** The one-time admin setup link, when the server has no user yet. */
  setupUrl: string | undefined;
  listen(): Promise<string>;
  /** Rotates the token-signing keys for every node (see auth/keys.ts) and uses them here at once. */
  rotateKeys(): Promise<KeyView[]>;
  /** Whether the node is shutting down (stopped accepting; `/readyz` answers 503). */
  readonly draining: boolean;
  /**
   * Shuts down gracefully: 1) stops accepting — the port is closed (new connections are refused;
   * idle keep-alive ones closed, busy ones answered with `Connection: close`), `/readyz` answers 503,
   * agent upgrades get 503 with `Retry-After`, and no task is dispatched to this node's agents any
   * more; 2) waits until the tasks its agents run have finished, or `drainMs` passed, logging how
   * many still run; 3) closes every agent connection with 1012 (reconnect elsewhere); 4) closes the
   * stores (`close()`). Runs once; later calls return the first one's result.
   */
  shutdown(options?: ShutdownOptions): Promise<ShutdownResult>;
  /** Closes at once, without waiting for tasks (a running `shutdown()`'s wait ends here). Runs once; later calls return the same promise. */
  close(): Promise<void>;
}

export interface CreateOptions extends Partial<ServerConfig> {
  /** Use this logger instead of a new pino logger. */
  logger?: Logger;
  /** Reads memory for the memory guard instead of `process.memoryUsage()` (tests). */
  memorySampler?: MemorySampler;
}

/**
 * Creates a server node on the embedded defaults (SQLite in `dataDir`, in-process hot state,
 * generated development TLS) unless told otherwise. Call `listen()` to start it.
 */
export async function createPalisade(options: CreateOptions = {}): Promise<Palisade> {
  const { logger, memorySampler, ...partial } = options;
  const config = resolveConfig(partial);
  // Written asynchronously: a synchronous write per security event cost the token endpoint ~10 µs
  // a token. Flushed on close (and by pino on exit).
  const log = logger ?? pino({ level: config.logLevel, base: { svc: 'palisade' } }, pino.destination({ dest: 1, sync: false }));
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });

  // Production mode: refuse an insecure configuration before anything is generated or opened.
  if (config.production) {
    const files = !config.insecureHttp && config.tlsKeyFile && config.tlsCertFile ? loadTlsFiles(config.tlsKeyFile, config.tlsCertFile) : undefined;
    const problems = productionProblems({ config, tls: files && { ...files, generated: false } });
    if (problems.length > 0) throw new InsecureConfigError(problems);
  }
  const tls = config.insecureHttp
    ? undefined
    : config.tlsKeyFile && config.tlsCertFile
      ? loadTlsFiles(config.tlsKeyFile, config.tlsCertFile)
      : ensureDevTls(join(config.dataDir, 'tls'), config.tlsNames);
  // Checked before anything opens: the internal listener needs its client CA and TLS.
  if (config.internalPort !== undefined && !config.internalCaFile) throw new Error('--internal-port needs --internal-ca FILE (the CA that signs client certificates)');
  if (config.internalPort !== undefined && !tls) throw new Error('--internal-port needs TLS: it cannot be used with --insecure-http');
  const internalCa = config.internalCaFile ? readCaFile(config.internalCaFile, '--internal-ca') : undefined;
  const pgSsl = postgresSslOptions({ url: config.databaseUrl, caFile: config.databaseCaFile });
  const metrics = createMetrics();

  const store = config.databaseUrl ? await openPostgresStore({ connectionString: config.databaseUrl, schema: config.databaseSchema, maxConnections: config.databasePool, preparedStatements: config.databasePreparedStatements, ssl: pgSsl, onWarning: (m) => log.warn(m) }) : openSqliteStore(join(config.dataDir, 'palisade.db'));
  // A write the replicas did not confirm in time (Sentinel): it stands, and the operator hears of it
  // (`events` is in place before any request can write).
  const onReplicaShortfall = (i: { write: string; replicas: number; wanted: number }) =>
    events.emit({ class: 'api_activity', activity: 'store.replication.lag', outcome: 'failure', severity: 'medium', code: 'PAL_ERR_UNAVAILABLE', message: `a ${i.write} write reached ${i.replicas} of ${i.wanted} Redis replicas in time: a failover now could lose it` });
  const hot = await openHotStore(config, onReplicaShortfall).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  // With Redis, OAuth records (sessions, grants, refresh tokens) live there; otherwise in the durable store.
  const records = hot.oidc ?? store.oidc;
  const legacy = readLegacySecrets(config.dataDir);
  const cookieKeys = await sharedCookieKeys(store.meta, legacy.cookieKeys);
  const keys = await openKeyRing({ meta: store.meta, seed: legacy.signingKey, keepRetiredMs: (Math.max(config.accessTokenTtl, ID_TOKEN_TTL_S) + 60) * 1000 });
  limitPasswordHashing(config.passwordHashConcurrency, config.passwordHashQueue);
  const events = createSecurityEvents(log);
  // Where `--expose-gc` allows, the guard collects once before it sheds (heap in use may be garbage).
  const memory = createMemoryGuard({ highWaterBytes: config.memoryHighWaterBytes, sampleMs: config.memorySampleMs, sampler: memorySampler, events, metrics, collect: exposedGc() });
  // Only where a collection can be asked for (`--expose-gc`: workers run so).
  const heapTrim = startHeapTrim({
    onTrim: (before, after) => log.info({ heapUsedBefore: before, heapUsedAfter: after }, 'quiet after a burst: collected the heap'),
  });
  const ips = createClientIpResolver(config.trustProxy);
  const limiter = createRateLimiter({
    config: config.rateLimits, rates: hot.rates, remote: hot.kind === 'redis', events,
    onFallback: (e) => log.error({ err: e }, 'rate-limit store unreachable: limiting with this node\'s own counters until it returns'),
  });
  const guard = createRequestGuard({ config, limiter, ips, memory, onError: (e) => log.error({ err: e }, 'request guard failed') });
  const clients = createClientDirectory({ clients: store.clients, revocations: hot.revocations, noticeMs: (config.accessTokenTtl + 60) * 1000 });
  // A suffix of its own per start: a restarted process (in a container, always pid 1 on the same
  // hostname) must not inherit the presence its previous run left in Redis (entries live minutes).
  const nodeId = config.nodeId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const sessions = createSessionManager({ records, revocations: hot.revocations, events, accessTokenTtl: config.accessTokenTtl });
  const recipes = loadRecipes(config.recipeDirs);
  const agents = new AgentRegistry();
  // With Redis, other nodes may share the stores: tasks then reach agents connected to any of them.
  const tasks = new TaskService({
    config, store, recipes, agents, events, log, presence: hot.presence,
    cluster: hot.kind === 'redis' ? { nodeId, bus: hot.bus, nodes: hot.nodes, counters: hot.counters } : undefined,
  });

  // The authorization server (oidc-provider, a Koa app) answers `/oauth2/*` itself, before Fastify's
  // routing: passing through Fastify's hooks, parsers and router cost the token endpoint ~30 µs of a
  // ~450 µs request (bench/token.bench.ts). Everything else is Fastify's.
  let oauthHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  let directToken: DirectTokenPath | undefined;
  // Security headers on every response (edge/headers.ts); HSTS when browsers reach the server over TLS (here, or at a proxy).
  const setSecurityHeaders = responseHeaders({ hsts: tls !== undefined || config.publicUrl?.startsWith('https://') === true });
  const dispatch = (fastify: (req: IncomingMessage, res: ServerResponse) => void) => (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    setSecurityHeaders(res, url);
    // Shutting down: a keep-alive connection gets this one answer, then the client reconnects (elsewhere).
    if (draining) res.setHeader('connection', 'close');
    if (oauthHandler && (url === '/oauth2' || url.startsWith('/oauth2/') || url.startsWith('/oauth2?'))) {
      guard.raw(req, res, (ip) => {
        // The address the guard resolved, for the security events of either token path (auth/provider.ts `ip`).
        (req as IncomingMessage & { clientIp?: string }).clientIp = ip;
        const toProvider = () => {
          (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
          // `/oauth2?x` → `/?x`: oidc-provider's router needs a path that starts with a slash.
          const rest = url.slice('/oauth2'.length);
          req.url = rest.startsWith('/') ? rest : `/${rest}`;
          oauthHandler!(req, res);
        };
        // An API client's token: answered directly when oidc-provider would surely grant it (auth/client-credentials.ts).
        if (config.tokenDirectPath && directToken && url === '/oauth2/token') directToken.handle(req, res, ip, toProvider);
        else toProvider();
      });
      return;
    }
    fastify(req, res);
  };
  const app = Fastify({
    loggerInstance: log.child({ mod: 'http' }),
    logController: new LogController({ disableRequestLogging: config.logLevel !== 'debug' && config.logLevel !== 'trace' }),
    bodyLimit: config.maxBodyBytes,
    trustProxy: config.trustProxy.length > 0 ? (address: string) => ips.trusted(address) : false,
    clientErrorHandler: onClientError,
    // The router's own refusals (a bad percent-escape, an over-long path parameter) as problem details too.
    frameworkErrors: (err, _req, reply) => {
      const e = toPalisadeError(err);
      void (reply as FastifyReply).code(e.status).type('application/problem+json').header('cache-control', 'no-store').send(e.toProblem());
    },
    // Only tells Fastify the server speaks TLS (for its own log lines); serverFactory builds it.
    ...(tls ? { https: tlsServerOptions(tls, config.tlsMinVersion) } : {}),
    serverFactory: (handler) => {
      const server = tls
        ? createHttpsServer({ ...tlsServerOptions(tls, config.tlsMinVersion), maxHeaderSize: config.maxHeaderBytes }, dispatch(handler))
        : createHttpServer({ maxHeaderSize: config.maxHeaderBytes }, dispatch(handler));
      server.keepAliveTimeout = 72_000;
      return server;
    },
    return503OnClosing: true,
  }) as unknown as FastifyInstance;

  // The issuer depends on the port, which is known after listen(); the provider is created lazily once.
  const self: Palisade = {
    config, app, store, hot, sessions, keys, events, tasks, agents, nodeId, recipes, log, tls, metrics, memory,
    url: '', issuer: '', setupUrl: undefined, connections: undefined,
    provider: undefined as unknown as Provider,
    verifier: undefined as unknown as TokenVerifier,
    async listen() {
      await app.listen({ host: config.host, port: config.port, ...(config.reusePort ? { reusePort: true } : {}) });
      const port = (app.server.address() as AddressInfo).port;
      const host = config.host.includes(':') ? `[${config.host}]` : config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
      self.url = config.publicUrl ?? `${tls ? 'https' : 'http'}://${host}:${port}`;
      self.issuer = `${self.url}/oauth2`;
      wire();
      await tasks.start();
      const token = await createSetupToken(store);
      self.setupUrl = token ? `${self.url}/setup?token=${token}` : undefined;
      // Expired OAuth records (device codes, sessions, tokens) are deleted, not left to pile up.
      sweeper = setInterval(() => {
        records.sweep(Math.floor(Date.now() / 1000)).catch((e: unknown) => log.warn({ err: e }, 'sweeping expired OAuth records failed'));
      }, OIDC_SWEEP_INTERVAL_MS);
      sweeper.unref();
      // Another node may rotate the signing keys: pick its ring up.
      keyPoll = setInterval(() => {
        keys.reload().then((changed) => changed && applyKeys(), (e: unknown) => log.warn({ err: e }, 'reloading the signing keys failed'));
      }, config.keyReloadMs);
      keyPoll.unref();
      if (tls && internalCa && config.internalPort !== undefined) {
        internal = await startInternalListener({
          host: config.internalHost, port: config.internalPort, key: tls.key, cert: tls.cert, ca: internalCa, metrics, events, log: log.child({ mod: 'internal' }),
          rotateKeys: () => self.rotateKeys(), keyView: () => keys.view(), health: () => ({ status: draining ? 'draining' : memory.shedding ? 'shedding' : 'ok', node: nodeId, store: store.kind, hot: hot.kind, agents: agents.size }),
        });
        self.internalUrl = internal.url;
        metrics.enableProcessMetrics();
      }
      // Operator TLS files are reloaded when they change; the certificate's expiry is watched either way.
      if (tls) {
        tlsWatch = watchTls({
          files: config.tlsKeyFile && config.tlsCertFile ? { keyFile: config.tlsKeyFile, certFile: config.tlsCertFile } : undefined,
          material: tls, events, metrics, log, pollMs: config.tlsReloadMs, warnDays: config.tlsExpiryWarnDays,
          apply: (m) => {
            (app.server as unknown as HttpsServer).setSecureContext(tlsServerOptions(m, config.tlsMinVersion));
            internal?.setSecureContext(m);
            Object.assign(tls, { key: m.key, cert: m.cert, spki: spkiHash(m.cert) });
          },
        });
      }
      return self.url;
    },
    async rotateKeys() {
      await keys.rotate();
      applyKeys();
      return keys.view();
    },
    get draining() {
      return draining;
    },
    shutdown(options = {}) {
      return (shuttingDown ??= drainAndClose(options));
    },
    close() {
      return (closing ??= closeNow());
    },
  };

  let draining = false;
  let shuttingDown: Promise<ShutdownResult> | undefined;
  let closing: Promise<void> | undefined;
  /** Ends a shutdown's wait early (set while it waits). */
  let wakeDrain: (() => void) | undefined;
  let gatewayClose: (() => Promise<void>) | undefined;
  let gatewayDrain: (() => void) | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let keyPoll: NodeJS.Timeout | undefined;
  let tlsWatch: TlsWatch | undefined;
  let internal: InternalListener | undefined;
  let ready!: () => void;
  const wired = new Promise<void>((r) => (ready = r));

  /** An authorization server for the current key ring (rebuilt when the ring changes; it holds no other state). */
  const newProvider = (jwks: JWK[]) => createProvider({
    config, issuer: self.issuer, store, records, clients, jwks, cookieKeys, events, log: log.child({ mod: 'oauth' }),
    onGrantRevoked: (grantId) => void sessions.markRevoked(grantId).catch((e: unknown) => log.error({ err: e }, 'recording a revoked grant failed')),
  });

  function wire(): void {
    const verifier = createTokenVerifier({ issuer: self.issuer, audience: config.audience, publicKeys: keys.publicKeys(), store, clients, sessions });
    Object.assign(self, { verifier });
    useProvider();
    const gateway = attachAgentGateway(app.server as unknown as HttpServer, { config, verifier, sessions, presence: hot.presence, tallies: hot.tallies, nodeId, store, tasks, agents, events, log: log.child({ mod: 'gateway' }), limiter, ips, memory });
    gatewayClose = gateway.close;
    gatewayDrain = gateway.drain;
    Object.assign(self, { connections: gateway.caps });
    ready();
  }

  /** Shutdown step 1: nothing new reaches this node (see `shutdown`). Idempotent. */
  function stopAccepting(): void {
    if (draining) return;
    draining = true;
    tasks.drain();
    gatewayDrain?.();
    // The port closes (with SO_REUSEPORT the other workers take the new connections); Node closes
    // idle keep-alive connections, and `dispatch` answers requests on busy ones with `Connection: close`.
    if (app.server.listening) app.server.close();
  }

  /** Steps 1–2 of a shutdown, then `close()`. */
  async function drainAndClose(o: ShutdownOptions): Promise<ShutdownResult> {
    const drainMs = o.drainMs ?? config.shutdownDrainMs;
    const progressMs = o.progressMs ?? DRAIN_PROGRESS_MS;
    const started = Date.now();
    const deadline = started + drainMs;
    stopAccepting();
    let running = tasks.running;
    const report = () => {
      const remainingMs = Math.max(0, deadline - Date.now());
      log.info({ running, remainingMs }, `draining: ${running} task(s) still running, ${Math.ceil(remainingMs / 1000)} s left`);
      o.onProgress?.({ running, remainingMs });
    };
    if (running > 0 && !closing) {
      report();
      let nextReport = started + progressMs;
      while (running > 0 && !closing && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(DRAIN_POLL_MS, Math.max(0, deadline - Date.now())));
          wakeDrain = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wakeDrain = undefined;
        running = tasks.running;
        if (running > 0 && Date.now() >= nextReport) {
          report();
          nextReport += progressMs;
        }
      }
    }
    const result: ShutdownResult = { drained: running === 0, running, waitedMs: Date.now() - started };
    if (running > 0) {
      const fate = hot.kind === 'redis' ? 'another node takes them back once this node stops beating' : 'they are requeued when the server starts again';
      log.warn({ ...result }, `drain ${closing ? 'cut short' : 'deadline passed'} with ${running} task(s) still running: ${fate}`);
    } else {
      log.info({ waitedMs: result.waitedMs }, 'drained: no task running');
    }
    await self.close();
    return result;
  }

  /** Closes everything at once (ending a shutdown's wait); agents are told 1012, then the stores close. */
  async function closeNow(): Promise<void> {
    stopAccepting();
    wakeDrain?.();
    memory.close();
    heapTrim?.close();
    clearInterval(sweeper);
    clearInterval(keyPoll);
    tlsWatch?.close();
    await internal?.close();
    // Agents before the task service: their connections closing start grace timers there, which stop() clears.
    await gatewayClose?.();
    // What still runs here is left for the next start: the store should say it runs.
    await tasks.recordRunningNow();
    tasks.stop();
    // Requests still open now (event streams, long polls) had their chance: cut rather than waited for.
    const cut = setTimeout(() => app.server.closeAllConnections(), HTTP_CLOSE_GRACE_MS);
    await app.close();
    clearTimeout(cut);
    await hot.close();
    await store.close();
    if (!logger) log.flush();
  }

  /** Serves `/oauth2/*` with a provider on the ring's current keys from now on (and the token endpoint's direct path beside it). */
  function useProvider(): void {
    const jwks = keys.providerJwks();
    const provider = newProvider(jwks);
    // Behind trusted proxies, Koa reads the client's address and scheme from X-Forwarded-* (which the
    // request guard leaves only on requests from a trusted proxy).
    provider.proxy = config.trustProxy.length > 0;
    Object.assign(self, { provider });
    oauthHandler = provider.callback();
    directToken = createDirectTokenPath({
      issuer: self.issuer, audience: config.audience, ttlS: config.accessTokenTtl, clients, events, signingKey: jwks[0]!,
      isStatic: (id) => Object.hasOwn(FIRST_PARTY_CLIENTS, id), resourceScopes: new Set(API_SCOPES.split(' ')),
    });
  }

  /** The key ring changed (rotated here or on another node): sign and verify with the new one. */
  function applyKeys(): void {
    self.verifier.setPublicKeys(keys.publicKeys());
    useProvider();
    events.emit({ class: 'account_change', activity: 'keys.applied', outcome: 'success', message: `signing keys v${keys.set.version} in use`, data: { keys: keys.view() } });
  }

  app.setErrorHandler((err, req, reply) => {
    const e = toPalisadeError(err);
    for (const [k, v] of (err as { headers?: [string, string][] }).headers ?? []) void reply.header(k, v);
    if (e.code === 'PAL_ERR_INTERNAL') req.log.error({ err: e.internal ?? err }, 'unhandled error');
    if (e.code === 'PAL_ERR_UNAVAILABLE') {
      // Fail closed: nothing is allowed while a store is unreachable; callers are told to retry.
      events.emit({ class: 'api_activity', activity: 'store.unavailable', outcome: 'failure', severity: 'high', code: e.code, message: e.message, src: { ip: req.ip } });
      void reply.header('retry-after', '1');
    }
    if (e.code === 'PAL_ERR_VALIDATION' || e.code === 'PAL_ERR_FORBIDDEN') {
      events.emit({ class: 'api_activity', activity: 'api.request', outcome: 'failure', code: e.code, message: e.message, src: { ip: req.ip }, actor: { userId: req.principal?.userId, clientId: req.principal?.clientId } });
    }
    void reply.code(e.status).type('application/problem+json').header('cache-control', 'no-store').send(e.toProblem());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).type('application/problem+json').send(toPalisadeError({ statusCode: 404 }).toProblem());
    void req;
  });

  securityHeaders(app);
  // Every request first passes the edge checks (URL length, rate limits by IP); see edge/request-guard.ts.
  // The API's routes check the IP's rate with the principal's, after the token (api/routes.ts).
  app.addHook('onRequest', async (req, reply) => {
    const verdict = await guard.check(req.raw, req.ip, req.routeOptions.url, req.routeOptions.config.ipRateAfterAuth);
    if (verdict === IP_CHECK_LATER) req.ipCheckLater = true;
    else if (verdict) for (const [k, v] of verdict.headers) void reply.header(k, v);
  });
  // Until listen() has wired the provider, requests wait for it (the server is not reachable before anyway).
  app.addHook('onRequest', async () => wired);
  cors(app, { origins: config.corsOrigins, events });

  // JSON bodies: nesting past maxJsonDepth is refused before parsing; then Fastify's own parser
  // (which refuses __proto__ and constructor.prototype keys).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonDepthExceeds(body as string, config.maxJsonDepth)) {
      done(new PalisadeError('PAL_ERR_VALIDATION', `the JSON body nests deeper than ${config.maxJsonDepth} levels`), undefined);
      return;
    }
    parseJson(req, body as string, done);
  });


  await app.register(async (pages) => {
    await pages.register(formbody, { bodyLimit: 16 * 1024 });
    await pages.register(async (s) => interactionRoutes(s, {
      provider: lazy(() => self.provider), store, events, loginGuard: createLoginGuard(hot.counters, config.loginLimits),
      baseUrl: () => self.url, formKey: cookieKeys[0]!,
      upstream: config.upstream.length === 0 ? undefined : {
        login: createUpstreamLogin(config.upstream, { allowInsecureHttp: config.upstreamInsecureHttp }),
        configs: config.upstream, transient: hot.transient, baseUrl: () => self.url,
      },
    }));
  });

  await app.register(async (api) => apiRoutes(api, { limiter, verifier: lazy(() => self.verifier), store, sessions, clients, tasks, recipes, agents, events, rotateKeys: () => self.rotateKeys(), keyView: () => keys.view() }), { prefix: '/api/v1' });

  // Liveness: the process answers. Readiness: it can serve (stores reachable, not shutting down).
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    // Shutting down: out of rotation at once, without asking the stores.
    if (draining) {
      const problem = new PalisadeError('PAL_ERR_UNAVAILABLE', 'not ready: shutting down').toProblem();
      return reply.code(503).type('application/problem+json').header('cache-control', 'no-store').header('retry-after', String(DRAINING_RETRY_AFTER_S)).send(problem);
    }
    const checks = await Promise.all([
      store.meta.get('readiness-probe').then(() => 'ok', () => 'unreachable'),
      hot.counters.peek('readiness-probe').then(() => 'ok', () => 'unreachable'),
    ]);
    const [durable, hotState] = checks;
    if (durable !== 'ok' || hotState !== 'ok') {
      void reply.header('retry-after', '1');
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `not ready: durable store ${durable}, hot store ${hotState}`);
    }
    // Above the memory high-water mark the node takes no new work: the balancer is sent elsewhere.
    if (memory.shedding) {
      void reply.header('retry-after', String(OVERLOAD_RETRY_AFTER_S));
      throw new PalisadeError('PAL_ERR_OVERLOADED', 'not ready: memory shedding (heap above the high-water mark); new work is refused');
    }
    return { status: 'ready', checks: { durableStore: durable, hotStore: hotState, memory: 'ok' } };
  });
  app.get('/', async (_req, reply) => reply.type('application/json').send({ name: 'Palisade', issuer: self.issuer, api: `${self.url}/api/v1`, agents: `${self.url.replace(/^http/, 'ws')}/ws/agent` }));

  return self;
}

/** The hot store the configuration names: Redis (standalone or Sentinel) or in-process. */
async function openHotStore(config: ServerConfig, onReplicaShortfall: RedisHotStoreOptions['onReplicaShortfall']): Promise<HotStore> {
  const redisTls = redisTlsOptions({ url: config.redisUrl, sentinels: config.redisSentinels, caFile: config.redisCaFile });
  if (config.redisSentinels?.length) {
    const sentinels = config.redisSentinels.map((s) => {
      const m = /^(.+):(\d+)$/.exec(s);
      if (!m) throw new Error(`invalid Redis Sentinel address "${s}" (expected host:port)`);
      return { host: m[1]!, port: Number(m[2]) };
    });
    return openRedisHotStore({ sentinels, sentinelName: config.redisSentinelName, prefix: config.redisPrefix, redisOptions: redisTls, replicaWaits: config.redisReplicaWaits, onReplicaShortfall });
  }
  if (config.redisUrl) return openRedisHotStore({ url: config.redisUrl, prefix: config.redisPrefix, redisOptions: redisTls, replicaWaits: config.redisReplicaWaits, onReplicaShortfall });
  return createMemoryHotStore();
}

/** A stand-in that forwards every property access to the value `get()` returns at that time. */
function lazy<T extends object>(get: () => T): T {
  return new Proxy({} as T, {
    get: (_t, prop) => {
      const target = get();
      const v = Reflect.get(target, prop, target) as unknown;
      // Methods (no `prototype`) are bound to the current target; classes such as `provider.Grant`
      // are returned as they are (a bound class loses its static methods, e.g. `Grant.find`).
      return typeof v === 'function' && !Object.hasOwn(v, 'prototype') ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
