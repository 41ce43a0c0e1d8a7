/**
 * @module config — every setting of the server, its default, and where it comes from
 * (command-line flag, then `PALISADE_*` environment variable, then the default).
 */
import type { UpstreamProviderConfig } from './auth/upstream.ts';
import type { TlsMinVersion } from './tls/options.ts';
import type { Escalation } from './hot/types.ts';
import { getHeapStatistics } from 'node:v8';
import { availableParallelism } from 'node:os';

export interface ServerConfig {
  /** Folder for the SQLite database, keys, secrets and generated TLS material. Default `.palisade`. */
  dataDir: string;
  /** PostgreSQL connection string; unset = the embedded SQLite store in `dataDir`. */
  databaseUrl?: string | undefined;
  /** PostgreSQL schema holding Palisade's tables. Default `palisade`. */
  databaseSchema?: string | undefined;
  /** Redis URL (`redis://`, `rediss://`) for hot state shared by many nodes; unset = in-process. */
  redisUrl?: string | undefined;
  /** Redis Sentinel addresses (`host:port`); with them, hot state follows the primary `redisSentinelName` names. */
  redisSentinels?: string[] | undefined;
  /** The primary's name in Sentinel. Default `mymaster`. */
  redisSentinelName?: string | undefined;
  /** Prefix of every Redis key. Default `palisade`. */
  redisPrefix?: string | undefined;
  /** Sessions, tokens and revocations are acknowledged once this many Redis replicas have them (WAIT, at most 1 s). Default 1 with Sentinel, else 0. */
  redisReplicaWaits?: number | undefined;
  /** This node's name in presence records. Default `<hostname>:<pid>:<random>`, new at every start. */
  nodeId?: string | undefined;
  /** Extension ids allowed the authorization-code flow (`https://<id>.chromiumapp.org/` redirects). Default none: device flow only. */
  extensionIds: string[];
  /** Upstream sign-in providers (Google, GitHub, other OpenID Connect), from `--sign-in-config`. */
  upstream: UpstreamProviderConfig[];
  /** Allow `http://` upstream providers (local testing only). Default false. */
  upstreamInsecureHttp: boolean;
  /** Interface to listen on. Default `127.0.0.1`. */
  host: string;
  /** Port. Default `8443` (`0` picks a free one). */
  port: number;
  /** Bind the port with `SO_REUSEPORT`, so several worker processes share it (`--workers`, workers.ts). Default false. */
  reusePort?: boolean | undefined;
  /** URL callers use to reach the server; the OAuth issuer is `${publicUrl}/oauth2`. Default from host and port. */
  publicUrl?: string | undefined;
  /** Serve plain HTTP instead of TLS. Only with an explicit flag; a warning is printed. Default false. */
  insecureHttp: boolean;
  /** TLS key and certificate files; default: a development CA + certificate generated in `dataDir/tls`. */
  tlsKeyFile?: string | undefined;
  tlsCertFile?: string | undefined;
  /** Extra DNS names / IPs for the generated development certificate. */
  tlsNames: string[];
  /** Lowest TLS version accepted: `1.3` (default) or `1.2` (then AEAD, forward-secret suites only; tls/options.ts). */
  tlsMinVersion: TlsMinVersion;
  /** How often the TLS key and certificate files are checked for a change (reloaded without restart), ms. Default 5000. */
  tlsReloadMs: number;
  /** Days ahead of the certificate's expiry that a warning event is emitted (checked at start and hourly). Default 14. */
  tlsExpiryWarnDays: number;
  /** Port of the internal mutual-TLS listener (metrics, health, admin; edge/internal.ts). Default none: off. */
  internalPort?: number | undefined;
  /** Interface of the internal listener. Default `127.0.0.1`. */
  internalHost: string;
  /** CA certificate (PEM file) that signs the internal listener's client certificates; required with `internalPort`. */
  internalCaFile?: string | undefined;
  /** CA certificate (PEM file) that verifies Redis's TLS certificate (`rediss://`; with Sentinel, Sentinel's too). */
  redisCaFile?: string | undefined;
  /** CA certificate (PEM file) that verifies PostgreSQL's TLS certificate; turns TLS on for the connection. */
  databaseCaFile?: string | undefined;
  /** Most pooled PostgreSQL connections of this process (2 more for relaxed writes). Default 10. */
  databasePool: number;
  /**
   * PostgreSQL statements prepared once per connection (parsed and planned once, then only bound and
   * run). Default true; false behind a pooler that cannot carry prepared statements between
   * transactions (PgBouncer in transaction mode before 1.21, or with `max_prepared_statements = 0`).
   */
  databasePreparedStatements: boolean;
  /** Folders of recipe JSON files. Default: the built-in `recipes/`. */
  recipeDirs: string[];
  /** `Origin`s allowed to open agent/client WebSockets; `chrome-extension://*` allows any extension. Default that. */
  wsOrigins: string[];
  /**
   * Origins (`https://app.example.com`, exactly as browsers send them) whose web pages may call the
   * REST API cross-origin (CORS, see edge/cors.ts). `*` is refused. Default none: no CORS.
   */
  corsOrigins: string[];
  /** API audience (`aud`) of access tokens. Default `urn:palisade:api`. */
  audience: string;
  /** Access-token lifetime, seconds. Default 900 (15 minutes). */
  accessTokenTtl: number;
  /** Refresh-token lifetime, seconds. Default 2,592,000 (30 days). */
  refreshTokenTtl: number;
  /**
   * Password hashes (argon2id) computed at once in this process; the rest wait their turn. More
   * than the cores only slows each and holds libuv's thread pool (shared with file writes and the
   * token signer). Process-wide: the last server created in a process sets it. Default: the cores.
   */
  passwordHashConcurrency: number;
  /** Password hashes waiting for a turn before a sign-in is answered "busy, try again" (uncounted). Default 256. */
  passwordHashQueue: number;
  /**
   * An API client's client-credentials request that oidc-provider would surely grant is answered
   * by Palisade directly (the same token, response and security event; auth/client-credentials.ts):
   * ~1.7× the tokens per second of the same server through oidc-provider (bench/token.bench.ts).
   * Anything else, and every refusal, is oidc-provider's. Default true.
   */
  tokenDirectPath: boolean;
  /** Largest WebSocket frame, bytes. Default 1 MiB. */
  maxFrameBytes: number;
  /** Largest HTTP body, bytes. Default 1 MiB. */
  maxBodyBytes: number;
  /** Most WebSocket connections this node holds; past it upgrades get 503. Default 19000 (this machine's 20,000 open files per process). */
  maxConnections: number;
  /** Most WebSocket connections of one user (on this node). Default 50. */
  maxConnectionsPerUser: number;
  /** Most WebSocket connections from one client IP (on this node). Default 200. */
  maxConnectionsPerIp: number;
  /** Frames per second one WebSocket connection may send on average, and at once (token bucket). Default 100/s, burst 500. */
  wsMessageRate: number;
  wsMessageBurst: number;
  /** Unsent bytes a WebSocket peer may leave queued before it is closed as a slow consumer. Default 4 MiB. */
  maxSendBufferBytes: number;
  /** Time an agent has to authenticate and say hello, ms. Default 5000. */
  authTimeoutMs: number;
  /** WebSocket ping interval, ms; a peer that misses one pong is dropped. Default 30000. */
  heartbeatMs: number;
  /** Time an agent has to accept a dispatched task before it is offered again, ms. Default 10000. */
  acceptTimeoutMs: number;
  /** Default task deadline, ms. Default 120000. */
  defaultTaskTimeoutMs: number;
  /** Attempts a task gets when its agent disconnects (1 original + re-dispatches). Default 2. */
  maxAttempts: number;
  /** How long a disconnected agent has to come back and keep its running tasks, ms. Default 15000. */
  reconnectGraceMs: number;
  /**
   * How long after its agent accepted a task the store is told it runs, ms. A task that ends sooner
   * goes from `dispatched` straight to its end: one write, and one round trip before the end, fewer.
   * Watchers hear `running` at once, and reads on the nodes that dispatched or follow the task say
   * `running`; another node's read says `dispatched` meanwhile. 0 writes it at once. Default 200.
   */
  runningRecordMs: number;
  /**
   * With several nodes (Redis): how long a task's events wait to go to the other nodes together, ms.
   * A task's first event not yet sent starts the wait; those waiting go when its end is about to be
   * stored (so a node that reads the task ended has heard them), and its end or its return to the
   * queue at once (a short task's dispatched, running and progress go in one message, its end in a
   * second, instead of one each). Watchers on this node hear every event at once; those on other
   * nodes hear events before the end up to this late, and not at all those still waiting when the
   * task ends on another node (a cancel, its deadline). 0 sends each at once. Default 10.
   */
  taskEventBatchMs: number;
  /**
   * With several nodes (Redis): how often a node says it is alive, ms. One that has not for three
   * beats is dead, and the tasks its agents were running are re-dispatched or failed. Default 2000.
   */
  nodeBeatMs: number;
  /**
   * How often a connected agent's presence (which node holds it, its grants) is written again, ms;
   * an entry lives three of these. Other nodes ignore an entry at once when its node stops beating,
   * so this only bounds what a lost entry costs (Redis restarted empty: entries are written again
   * when the node's bus reconnects). Default 300000; never more often than `heartbeatMs`.
   */
  presenceRefreshMs: number;
  /** Most unfinished (queued, dispatched, running) tasks one user may have. Default 1000. */
  maxUnfinishedTasksPerUser: number;
  /** Most tasks one agent runs at once; more wait queued for it (or go to another agent). Default 4. */
  maxInFlightPerAgent: number;
  /**
   * V8 heap bytes in use above which this node sheds new work: task submissions and agent
   * connections get 503 `PAL_ERR_OVERLOADED`, `/readyz` 503, until the heap is back under 90 % of
   * it (edge/memory-guard.ts). Default 85 % of the V8 heap limit (`--max-old-space-size`).
   */
  memoryHighWaterBytes: number;
  /** How often the heap is sampled against `memoryHighWaterBytes`, ms. Default 1000. */
  memorySampleMs: number;
  /** Sign-in limits: attempts per account and per IP within `windowMs`, then locked for the rest of it. */
  loginLimits: LoginLimits;
  /** Production mode: refuse to start on an insecure configuration (edge/production.ts). Default false. */
  production: boolean;
  /** Request-rate limits by endpoint class, per client IP and per principal (see edge/rate-limit.ts). */
  rateLimits: RateLimitConfig;
  /** Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed. Default none. */
  trustProxy: string[];
  /** Longest request URL (path and query), bytes. Default 4096. */
  maxUrlBytes: number;
  /** Largest request head (request line and headers), bytes. Default 16384. */
  maxHeaderBytes: number;
  /** Deepest nesting of a JSON body (objects and arrays). Default 32. */
  maxJsonDepth: number;
  /** How often a node checks whether another node rotated the signing keys, ms. Default 30000. */
  keyReloadMs: number;
  /**
   * Longest wait, on a graceful shutdown (SIGTERM), for the tasks this node's agents are running to
   * finish before the agents are told to reconnect elsewhere (app.ts `shutdown`), ms. Default 25000:
   * with the close after it, inside the 30 s a container orchestrator waits before SIGKILL.
   */
  shutdownDrainMs: number;
  /** Log level. Default `info`. */
  logLevel: string;
}

export interface LoginLimits {
  /** Failed sign-ins per account within the window before it is locked. Default 5. */
  perAccount: number;
  /** Failed sign-ins per IP within the window before it is locked. Default 20. */
  perIp: number;
  /** Window (and longest lock), ms. Default 15 minutes. */
  windowMs: number;
  /** Failures that cost no delay; each further one doubles the wait before the answer. Default 2. */
  freeFailures: number;
  /** First progressive delay, ms (then doubled, up to `maxDelayMs`). Default 500. */
  delayMs: number;
  /** Longest progressive delay, ms. Default 4000. */
  maxDelayMs: number;
}

/** A rate: on average `limit` requests per `periodMs`, up to `burst` at once. */
export interface RateSpec {
  limit: number;
  periodMs: number;
  burst: number;
}

/**
 * Endpoint classes: `token` (token, PAR, revocation, introspection, device authorization),
 * `signin` (form posts: sign-in, consent, device code, setup), `web` (other pages and OAuth GETs),
 * `api` (`/api/v1`), `ws` (WebSocket upgrades). Each has a per-IP rate (checked before anything
 * else) and a per-principal rate (the client of a token request; the user or client of an API
 * call or connection, once its token is verified).
 */
export type RateClass = 'token' | 'signin' | 'web' | 'api' | 'ws';

export interface RateLimitConfig {
  /** Off only for benchmarks that measure something else. Default true. */
  enabled: boolean;
  classes: Record<RateClass, { ip?: RateSpec | undefined; principal?: RateSpec | undefined }>;
  /** Refusals of one key that turn into a temporary block. Default 20 within 60 s → blocked 5 minutes. */
  escalation: Escalation;
}

const perMinute = (limit: number, burst: number): RateSpec => ({ limit, periodMs: 60_000, burst });

export const DEFAULT_RATE_LIMITS: RateLimitConfig = {
  enabled: true,
  classes: {
    token: { ip: perMinute(120, 30), principal: perMinute(120, 30) },
    signin: { ip: perMinute(30, 10) },
    web: { ip: perMinute(600, 120) },
    api: { ip: perMinute(6000, 600), principal: perMinute(3000, 300) },
    ws: { ip: perMinute(120, 30), principal: perMinute(60, 20) },
  },
  escalation: { strikes: 20, windowMs: 60_000, blockMs: 5 * 60_000 },
};

/**
 * Password hashes at once for a process with `cores` cores of its own: one more than the cores, so
 * that when a hash ends its core takes the next at once instead of idling until the event loop has
 * handled the end and started the next (measured: 1.74 cores busy with 2 at once on 2 cores, 1.89
 * with 3; docs/BENCHMARKS.md). At most libuv's pool less one thread (`UV_THREADPOOL_SIZE`, 4 by
 * default), which file writes, DNS and the token signer share; at least one.
 */
export function hashConcurrencyFor(cores: number, poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4): number {
  return Math.max(1, Math.min(Math.floor(cores) + 1, poolSize - 1));
}

export const DEFAULTS: ServerConfig = {
  dataDir: '.palisade',
  host: '127.0.0.1',
  port: 8443,
  insecureHttp: false,
  upstream: [],
  upstreamInsecureHttp: false,
  extensionIds: [],
  tlsNames: [],
  tlsMinVersion: '1.3',
  tlsReloadMs: 5000,
  tlsExpiryWarnDays: 14,
  internalHost: '127.0.0.1',
  recipeDirs: [new URL('../../../recipes/', import.meta.url).pathname],
  wsOrigins: ['chrome-extension://*'],
  corsOrigins: [],
  audience: 'urn:palisade:api',
  accessTokenTtl: 900,
  tokenDirectPath: true,
  passwordHashConcurrency: hashConcurrencyFor(availableParallelism()),
  passwordHashQueue: 256,
  refreshTokenTtl: 30 * 24 * 3600,
  maxFrameBytes: 1024 * 1024,
  maxBodyBytes: 1024 * 1024,
  maxConnections: 19_000,
  maxConnectionsPerUser: 50,
  maxConnectionsPerIp: 200,
  wsMessageRate: 100,
  wsMessageBurst: 500,
  maxSendBufferBytes: 4 * 1024 * 1024,
  authTimeoutMs: 5000,
  heartbeatMs: 30_000,
  acceptTimeoutMs: 10_000,
  defaultTaskTimeoutMs: 120_000,
  maxAttempts: 2,
  reconnectGraceMs: 15_000,
  runningRecordMs: 200,
  taskEventBatchMs: 10,
  nodeBeatMs: 2000,
  presenceRefreshMs: 300_000,
  maxUnfinishedTasksPerUser: 1000,
  databasePool: 10,
  databasePreparedStatements: true,
  maxInFlightPerAgent: 4,
  memoryHighWaterBytes: Math.floor(getHeapStatistics().heap_size_limit * 0.85),
  memorySampleMs: 1000,
  loginLimits: { perAccount: 5, perIp: 20, windowMs: 15 * 60_000, freeFailures: 2, delayMs: 500, maxDelayMs: 4000 },
  production: false,
  rateLimits: DEFAULT_RATE_LIMITS,
  trustProxy: [],
  maxUrlBytes: 4096,
  maxHeaderBytes: 16 * 1024,
  maxJsonDepth: 32,
  keyReloadMs: 30_000,
  shutdownDrainMs: 25_000,
  logLevel: 'info',
};

/** Fills in defaults. */
export function resolveConfig(partial: Partial<ServerConfig> = {}): ServerConfig {
  const cfg: ServerConfig = { ...DEFAULTS };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (cfg as unknown as Record<string, unknown>)[k] = v;
  return cfg;
}

/** Whether `origin` is allowed by a list that may hold `scheme://*` wildcards for a whole scheme. */
export function originAllowed(origin: string, allowed: readonly string[]): boolean {
  for (const a of allowed) {
    if (a === origin) return true;
    if (a.endsWith('://*') && origin.startsWith(a.slice(0, -1)) && origin.length > a.length - 1) return true;
  }
  return false;
}
