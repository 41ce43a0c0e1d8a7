/**
 * @module app — assembles one Palisade server node: store, secrets, TLS, the OAuth 2.1
 * authorization server, the REST API, the agent gateway and the task service, on one port.
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import formbody from '@fastify/formbody';
import { pino, type Logger } from 'pino';
import type Provider from 'oidc-provider';
import { resolveConfig, type ServerConfig } from './config.ts';
import { openSqliteStore } from './store/sqlite.ts';
import { openPostgresStore } from './store/postgres.ts';
import type { DurableStore } from './store/types.ts';
import { createMemoryHotStore } from './hot/memory.ts';
import { openRedisHotStore } from './hot/redis.ts';
import type { HotStore } from './hot/types.ts';
import { createSessionManager, type SessionManager } from './auth/sessions.ts';
import { createLoginGuard } from './auth/login-guard.ts';
import { createUpstreamLogin } from './auth/upstream.ts';
import { createClientDirectory } from './auth/clients.ts';
import { readLegacySecrets, sharedCookieKeys } from './auth/secrets.ts';
import { openKeyRing, type KeyRing, type KeyView } from './auth/keys.ts';
import { ID_TOKEN_TTL_S } from './auth/provider.ts';
import { createProvider } from './auth/provider.ts';
import { createTokenVerifier, type TokenVerifier } from './auth/tokens.ts';
import { createSetupToken, interactionRoutes } from './auth/interactions.ts';
import { createSecurityEvents, type SecurityEvents } from './siem/events.ts';
import { toPalisadeError } from './edge/problem.ts';
import { ensureDevTls, loadTlsFiles, type TlsMaterial } from './tls/devca.ts';
import { AgentRegistry } from './gateway/registry.ts';
import { attachAgentGateway } from './gateway/agents.ts';
import { loadRecipes, type RecipeRegistry } from './tasks/recipes.ts';
import { TaskService } from './tasks/service.ts';
import { apiRoutes } from './api/routes.ts';

/** Interval between deletions of expired OAuth records, ms. */
export const OIDC_SWEEP_INTERVAL_MS = 60_000;

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
  readonly recipes: RecipeRegistry;
  readonly log: Logger;
  readonly tls: (TlsMaterial & { generated?: boolean }) | undefined;
  /** Base URL, known after `listen()`. */
  url: string;
  /** OAuth issuer (`${url}/oauth2`). */
  issuer: string;
  /** The one-time admin setup link, when the server has no user yet. */
  setupUrl: string | undefined;
  listen(): Promise<string>;
  /** Rotates the token-signing keys for every node (see auth/keys.ts) and uses them here at once. */
  rotateKeys(): Promise<KeyView[]>;
  close(): Promise<void>;
}

export interface CreateOptions extends Partial<ServerConfig> {
  /** Use this logger instead of a new pino logger. */
  logger?: Logger;
}

/**
 * Creates a server node on the embedded defaults (SQLite in `dataDir`, in-process hot state,
 * generated development TLS) unless told otherwise. Call `listen()` to start it.
 */
export async function createPalisade(options: CreateOptions = {}): Promise<Palisade> {
  const { logger, ...partial } = options;
  const config = resolveConfig(partial);
  // Written asynchronously: a synchronous write per security event cost the token endpoint ~10 µs
  // a token. Flushed on close (and by pino on exit).
  const log = logger ?? pino({ level: config.logLevel, base: { svc: 'palisade' } }, pino.destination({ dest: 1, sync: false }));
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });

  const tls = config.insecureHttp
    ? undefined
    : config.tlsKeyFile && config.tlsCertFile
      ? loadTlsFiles(config.tlsKeyFile, config.tlsCertFile)
      : ensureDevTls(join(config.dataDir, 'tls'), config.tlsNames);

  const store = config.databaseUrl ? await openPostgresStore({ connectionString: config.databaseUrl, schema: config.databaseSchema }) : openSqliteStore(join(config.dataDir, 'palisade.db'));
  const hot = await openHotStore(config).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  // With Redis, OAuth records (sessions, grants, refresh tokens) live there; otherwise in the durable store.
  const records = hot.oidc ?? store.oidc;
  const legacy = readLegacySecrets(config.dataDir);
  const cookieKeys = await sharedCookieKeys(store.meta, legacy.cookieKeys);
  const keys = await openKeyRing({ meta: store.meta, seed: legacy.signingKey, keepRetiredMs: (Math.max(config.accessTokenTtl, ID_TOKEN_TTL_S) + 60) * 1000 });
  const events = createSecurityEvents(log);
  const clients = createClientDirectory({ clients: store.clients, revocations: hot.revocations, noticeMs: (config.accessTokenTtl + 60) * 1000 });
  const nodeId = config.nodeId ?? `${hostname()}:${process.pid}`;
  const sessions = createSessionManager({ records, revocations: hot.revocations, events, accessTokenTtl: config.accessTokenTtl });
  const recipes = loadRecipes(config.recipeDirs);
  const agents = new AgentRegistry();
  const tasks = new TaskService({ config, store, recipes, agents, events, log });

  // The authorization server (oidc-provider, a Koa app) answers `/oauth2/*` itself, before Fastify's
  // routing: passing through Fastify's hooks, parsers and router cost the token endpoint ~30 µs of a
  // ~450 µs request (bench/token.bench.ts). Everything else is Fastify's.
  let oauthHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const dispatch = (fastify: (req: IncomingMessage, res: ServerResponse) => void) => (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    if (oauthHandler && (url === '/oauth2' || url.startsWith('/oauth2/') || url.startsWith('/oauth2?'))) {
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
      req.url = url.slice('/oauth2'.length) || '/';
      oauthHandler(req, res);
      return;
    }
    fastify(req, res);
  };
  const app = Fastify({
    loggerInstance: log.child({ mod: 'http' }),
    logController: new LogController({ disableRequestLogging: config.logLevel !== 'debug' && config.logLevel !== 'trace' }),
    bodyLimit: config.maxBodyBytes,
    // Only tells Fastify the server speaks TLS (for its own log lines); serverFactory builds it.
    ...(tls ? { https: { key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3' as const } } : {}),
    serverFactory: (handler) => {
      const server = tls
        ? createHttpsServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3' }, dispatch(handler))
        : createHttpServer(dispatch(handler));
      server.keepAliveTimeout = 72_000;
      return server;
    },
    return503OnClosing: true,
  }) as unknown as FastifyInstance;

  // The issuer depends on the port, which is known after listen(); the provider is created lazily once.
  const self: Palisade = {
    config, app, store, hot, sessions, keys, events, tasks, agents, recipes, log, tls,
    url: '', issuer: '', setupUrl: undefined,
    provider: undefined as unknown as Provider,
    verifier: undefined as unknown as TokenVerifier,
    async listen() {
      await app.listen({ host: config.host, port: config.port });
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
      return self.url;
    },
    async rotateKeys() {
      await keys.rotate();
      applyKeys();
      return keys.view();
    },
    async close() {
      clearInterval(sweeper);
      clearInterval(keyPoll);
      tasks.stop();
      await gatewayClose?.();
      await app.close();
      await hot.close();
      await store.close();
      if (!logger) log.flush();
    },
  };

  let gatewayClose: (() => Promise<void>) | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let keyPoll: NodeJS.Timeout | undefined;
  let ready!: () => void;
  const wired = new Promise<void>((r) => (ready = r));

  /** An authorization server for the current key ring (rebuilt when the ring changes; it holds no other state). */
  const newProvider = () => createProvider({
    config, issuer: self.issuer, store, records, clients, jwks: keys.providerJwks(), cookieKeys, events,
    onGrantRevoked: (grantId) => void sessions.markRevoked(grantId).catch((e: unknown) => log.error({ err: e }, 'recording a revoked grant failed')),
  });

  function wire(): void {
    const verifier = createTokenVerifier({ issuer: self.issuer, audience: config.audience, publicKeys: keys.publicKeys(), store, clients, sessions });
    Object.assign(self, { verifier });
    useProvider(newProvider());
    gatewayClose = attachAgentGateway(app.server as unknown as HttpServer, { config, verifier, sessions, presence: hot.presence, nodeId, store, tasks, agents, events, log: log.child({ mod: 'gateway' }) }).close;
    ready();
  }

  /** Serves `/oauth2/*` with `provider` from now on. */
  function useProvider(provider: Provider): void {
    Object.assign(self, { provider });
    oauthHandler = provider.callback();
  }

  /** The key ring changed (rotated here or on another node): sign and verify with the new one. */
  function applyKeys(): void {
    self.verifier.setPublicKeys(keys.publicKeys());
    useProvider(newProvider());
    events.emit({ class: 'account_change', activity: 'keys.applied', outcome: 'success', message: `signing keys v${keys.set.version} in use`, data: { keys: keys.view() } });
  }

  app.setErrorHandler((err, req, reply) => {
    const e = toPalisadeError(err);
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

  // Until listen() has wired the provider, requests wait for it (the server is not reachable before anyway).
  app.addHook('onRequest', async () => wired);


  await app.register(async (pages) => {
    await pages.register(formbody, { bodyLimit: 16 * 1024 });
    await pages.register(async (s) => interactionRoutes(s, {
      provider: lazy(() => self.provider), store, events, loginGuard: createLoginGuard(hot.counters, config.loginLimits),
      upstream: config.upstream.length === 0 ? undefined : {
        login: createUpstreamLogin(config.upstream, { allowInsecureHttp: config.upstreamInsecureHttp }),
        configs: config.upstream, transient: hot.transient, baseUrl: () => self.url,
      },
    }));
  });

  await app.register(async (api) => apiRoutes(api, { verifier: lazy(() => self.verifier), store, sessions, clients, presence: hot.presence, tasks, recipes, agents, events, rotateKeys: () => self.rotateKeys(), keyView: () => keys.view() }), { prefix: '/api/v1' });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/', async (_req, reply) => reply.type('application/json').send({ name: 'Palisade', issuer: self.issuer, api: `${self.url}/api/v1`, agents: `${self.url.replace(/^http/, 'ws')}/ws/agent` }));

  return self;
}

/** The hot store the configuration names: Redis (standalone or Sentinel) or in-process. */
async function openHotStore(config: ServerConfig): Promise<HotStore> {
  if (config.redisSentinels?.length) {
    const sentinels = config.redisSentinels.map((s) => {
      const m = /^(.+):(\d+)$/.exec(s);
      if (!m) throw new Error(`invalid Redis Sentinel address "${s}" (expected host:port)`);
      return { host: m[1]!, port: Number(m[2]) };
    });
    return openRedisHotStore({ sentinels, sentinelName: config.redisSentinelName, prefix: config.redisPrefix });
  }
  if (config.redisUrl) return openRedisHotStore({ url: config.redisUrl, prefix: config.redisPrefix });
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
