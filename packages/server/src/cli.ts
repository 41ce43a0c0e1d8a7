#!/usr/bin/env node
/**
 * @module cli — `palisade-server start`: runs one server node on its embedded defaults.
 *
 *   npm start                         # https://127.0.0.1:8443, data in ./.palisade
 *   npm start -- --port 9443 --data-dir /var/lib/palisade
 *   npm start -- --insecure-http      # plain HTTP (development only; prints a warning)
 *   npm start -- --workers auto --redis redis://127.0.0.1:6379   # one worker process per core (workers.ts)
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { createPalisade, type Palisade } from './app.ts';
import { createSetupToken } from './auth/interactions.ts';
import { DEFAULT_RATE_LIMITS, DEFAULTS, hashConcurrencyFor, type RateLimitConfig, type RateSpec } from './config.ts';
import { parseUpstreamConfig } from './auth/upstream.ts';
import { createClientIpResolver } from './edge/client-ip.ts';
import { InsecureConfigError } from './edge/production.ts';
import { checkCorsOrigin } from './edge/cors.ts';
import { heapLimitBytes } from './edge/memory-guard.ts';
import { forkWorker, MAX_WORKERS, parseWorkerCount, reportReady, REUSE_PORT_PLATFORMS, superviseWorkers, workerRole } from './workers.ts';

const MIB = 1024 * 1024;
/** `--heartbeat` bounds, seconds: often enough to notice a dead peer, never so often it is the load. */
const MIN_HEARTBEAT_S = 5;
const MAX_HEARTBEAT_S = 600;
/** Longest `--drain-timeout`, seconds. */
const MAX_DRAIN_TIMEOUT_S = 3600;
/** With `--workers`: time a worker has past its drain timeout to close before the primary kills it, ms. */
const WORKER_STOP_MARGIN_MS = 15_000;
/** After a second signal: longest wait for the immediate close before the process exits anyway, ms. */
const FORCE_EXIT_MS = 5000;

const HELP = `Usage: palisade-server start [options]

Options (environment variable in brackets):
  --data-dir DIR       data folder: SQLite database, keys, generated TLS  [PALISADE_DATA_DIR] (default ${DEFAULTS.dataDir})
  --database URL       PostgreSQL connection string (default: SQLite in the data folder) [PALISADE_DATABASE_URL]
  --redis URL          Redis for hot state shared by many nodes (redis:// or rediss://) [PALISADE_REDIS_URL]
                       (default: in-process, one node)
  --redis-sentinel H:P Redis Sentinel address (repeatable; instead of --redis) [PALISADE_REDIS_SENTINELS, comma-separated]
  --redis-sentinel-name NAME  the primary's name in Sentinel           [PALISADE_REDIS_SENTINEL_NAME] (default mymaster)
  --redis-prefix P     prefix of every Redis key                          [PALISADE_REDIS_PREFIX] (default palisade)
  --redis-replica-waits N  sessions, tokens and revocations are acknowledged once N replicas have
                       them (Redis WAIT, at most 1 s)                     [PALISADE_REDIS_REPLICA_WAITS] (default 1 with Sentinel, else 0)
  --sign-in-config FILE  Google/GitHub/OpenID Connect sign-in providers (JSON; see docs/SIGN-IN.md) [PALISADE_SIGN_IN_CONFIG]
  --host HOST          interface to listen on                             [PALISADE_HOST] (default ${DEFAULTS.host})
  --port PORT          port                                               [PALISADE_PORT] (default ${DEFAULTS.port})
  --public-url URL     URL callers use to reach this server               [PALISADE_PUBLIC_URL]
  --tls-key FILE       TLS private key (PEM); default: generated dev CA   [PALISADE_TLS_KEY]
  --tls-cert FILE      TLS certificate chain (PEM)                        [PALISADE_TLS_CERT]
  --tls-name NAME      extra DNS name or IP for the generated certificate (repeatable)
  --tls-min-version V  lowest TLS version: 1.3, or 1.2 (AEAD + ECDHE suites only) [PALISADE_TLS_MIN_VERSION] (default 1.3)
                       (--tls-key/--tls-cert are reloaded when the files change; see docs/TLS.md)
  --internal-port PORT internal mutual-TLS listener: /metrics, health, admin [PALISADE_INTERNAL_PORT] (default: off)
  --internal-host HOST its interface                                      [PALISADE_INTERNAL_HOST] (default ${DEFAULTS.internalHost})
  --internal-ca FILE   CA (PEM) of its client certificates; required with --internal-port [PALISADE_INTERNAL_CA]
  --redis-ca FILE      CA (PEM) that verifies Redis's certificate (rediss://, Sentinel) [PALISADE_REDIS_CA]
  --database-ca FILE   CA (PEM) that verifies PostgreSQL's certificate; turns TLS on [PALISADE_DATABASE_CA]
  --database-pool N    most PostgreSQL connections per process (+2 for relaxed writes; with
                       --workers, per worker)                             [PALISADE_DATABASE_POOL] (default ${DEFAULTS.databasePool})
  --database-no-prepare  send every PostgreSQL statement unprepared (for PgBouncer in transaction
                       mode before 1.21); by default each connection prepares a statement once
                                                                          [PALISADE_DATABASE_NO_PREPARE=1]
  --recipes DIR        recipe folder (repeatable; default: built-in recipes/)
  --extension-id ID    extension id allowed to sign in with launchWebAuthFlow (repeatable) [PALISADE_EXTENSION_IDS, comma-separated]
  --ws-origin ORIGIN   Origin allowed to open agent WebSockets (repeatable; default chrome-extension://*)
  --cors-origin ORIGIN web origin allowed to call the API cross-origin, e.g. https://app.example.com
                       (repeatable; never *; default none) [PALISADE_CORS_ORIGINS, comma-separated]
  --access-token-ttl S   access-token lifetime in seconds                [PALISADE_ACCESS_TOKEN_TTL] (default ${DEFAULTS.accessTokenTtl})
  --refresh-token-ttl S  refresh-token lifetime in seconds               [PALISADE_REFRESH_TOKEN_TTL] (default ${DEFAULTS.refreshTokenTtl})
  --insecure-http      serve plain HTTP instead of TLS (development only)
  --production         refuse to start on an insecure configuration, naming each offending setting
                       [PALISADE_ENV=production or NODE_ENV=production] (see docs/PRODUCTION.md)
  --trust-proxy ADDR   proxy address or CIDR range whose X-Forwarded-For is believed (repeatable;
                       default none) [PALISADE_TRUST_PROXY, comma-separated]
  --max-connections N  WebSocket connections this node holds             [PALISADE_MAX_CONNECTIONS] (default ${DEFAULTS.maxConnections})
  --max-connections-per-user N                                            [PALISADE_MAX_CONNECTIONS_PER_USER] (default ${DEFAULTS.maxConnectionsPerUser})
  --max-connections-per-ip N                                              [PALISADE_MAX_CONNECTIONS_PER_IP] (default ${DEFAULTS.maxConnectionsPerIp})
  --max-tasks-per-user N   unfinished tasks one user may have            [PALISADE_MAX_TASKS_PER_USER] (default ${DEFAULTS.maxUnfinishedTasksPerUser})
  --max-tasks-per-agent N  tasks one agent runs at once (more wait)      [PALISADE_MAX_TASKS_PER_AGENT] (default ${DEFAULTS.maxInFlightPerAgent})
  --rate-limits FILE   request-rate limits (JSON) merged over the defaults, e.g. {"classes":{"ws":{"ip":
                       {"limit":6000,"periodMs":60000,"burst":600}}}}; a class's ip/principal null = no
                       limit; "enabled": false turns them off (refused in production) [PALISADE_RATE_LIMITS]
  --memory-high-water MB  V8 heap in use (MiB) above which new tasks and agent connections get 503
                       and /readyz 503, until it is under 90 % of it      [PALISADE_MEMORY_HIGH_WATER_MB]
                       (default ${Math.floor(DEFAULTS.memoryHighWaterBytes / MIB)}: 85 % of the heap limit; see docs/PRODUCTION.md)
  --drain-timeout S    on SIGTERM/SIGINT, longest wait for running tasks before agents are told to
                       reconnect elsewhere and the node stops; a second signal stops at once
                       (see docs/PRODUCTION.md)                            [PALISADE_DRAIN_TIMEOUT] (default ${DEFAULTS.shutdownDrainMs / 1000})
  --heartbeat S        seconds between pings to each agent connection; one that missed the last
                       pong is dropped. Longer: less idle work per connection (many agents)
                       behind a proxy whose idle timeout is longer still   [PALISADE_HEARTBEAT] (default ${DEFAULTS.heartbeatMs / 1000})
  --workers N          worker processes on this machine, all on one port: a number from 1 to ${MAX_WORKERS},
                       or auto (one per core); more than 1 needs --redis or --redis-sentinel
                       (see docs/WORKERS.md)                               [PALISADE_WORKERS] (default 1)
  --log-level LEVEL    trace|debug|info|warn|error                        [PALISADE_LOG_LEVEL] (default info)
  -h, --help           show this help

Secrets: PALISADE_DATABASE_URL_FILE and PALISADE_REDIS_URL_FILE read a connection string (with its
password) from a file instead of the environment; in production a password never comes on the command line.
`;

/** A bad flag value: printed with the help hint, exit code 2. */
class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' }, database: { type: 'string' }, redis: { type: 'string' }, 'redis-sentinel': { type: 'string', multiple: true },
      'redis-sentinel-name': { type: 'string' }, 'redis-prefix': { type: 'string' }, 'redis-replica-waits': { type: 'string' }, 'sign-in-config': { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'public-url': { type: 'string' },
      'tls-key': { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-name': { type: 'string', multiple: true },
      'tls-min-version': { type: 'string' }, 'internal-port': { type: 'string' }, 'internal-host': { type: 'string' }, 'internal-ca': { type: 'string' },
      'redis-ca': { type: 'string' }, 'database-ca': { type: 'string' }, 'database-pool': { type: 'string' },
      'database-no-prepare': { type: 'boolean' }, recipes: { type: 'string', multiple: true }, 'ws-origin': { type: 'string', multiple: true }, 'extension-id': { type: 'string', multiple: true },
      'cors-origin': { type: 'string', multiple: true },
      'access-token-ttl': { type: 'string' }, 'refresh-token-ttl': { type: 'string' },
      'insecure-http': { type: 'boolean' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      production: { type: 'boolean' }, 'trust-proxy': { type: 'string', multiple: true },
      'max-connections': { type: 'string' }, 'max-connections-per-user': { type: 'string' }, 'max-connections-per-ip': { type: 'string' },
      'memory-high-water': { type: 'string' }, 'rate-limits': { type: 'string' }, 'max-tasks-per-user': { type: 'string' }, 'max-tasks-per-agent': { type: 'string' },
      workers: { type: 'string' }, 'drain-timeout': { type: 'string' }, heartbeat: { type: 'string' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const command = positionals[0] ?? 'start';
  if (command !== 'start') {
    process.stderr.write(`unknown command "${command}"\n\n${HELP}`);
    return 2;
  }
  const env = process.env;
  const portText = values.port ?? env.PALISADE_PORT;
  const port = portText === undefined ? undefined : Number(portText);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    process.stderr.write(`--port must be a number from 0 to 65535, not "${portText}"\n`);
    return 2;
  }
  const ttl = (flag: string, raw: string | undefined, min: number, max: number): number | undefined => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${flag} must be a whole number of seconds from ${min} to ${max}, not "${raw}"`);
    return n;
  };
  const accessTokenTtl = ttl('access-token-ttl', values['access-token-ttl'] ?? env.PALISADE_ACCESS_TOKEN_TTL, 60, 24 * 3600);
  const refreshTokenTtl = ttl('refresh-token-ttl', values['refresh-token-ttl'] ?? env.PALISADE_REFRESH_TOKEN_TTL, 3600, 365 * 24 * 3600);
  const drainTimeout = ttl('drain-timeout', values['drain-timeout'] ?? env.PALISADE_DRAIN_TIMEOUT, 0, MAX_DRAIN_TIMEOUT_S);
  const shutdownDrainMs = drainTimeout === undefined ? undefined : drainTimeout * 1000;
  const heartbeat = ttl('heartbeat', values.heartbeat ?? env.PALISADE_HEARTBEAT, MIN_HEARTBEAT_S, MAX_HEARTBEAT_S);
  const insecureHttp = values['insecure-http'] ?? env.PALISADE_INSECURE_HTTP === '1';
  const production = values.production ?? (env.PALISADE_ENV === 'production' || env.NODE_ENV === 'production');
  const count = (flag: string, raw: string | undefined): number | undefined => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 10_000_000) throw new UsageError(`--${flag} must be a whole number from 1 to 10000000, not "${raw}"`);
    return n;
  };
  const maxConnections = count('max-connections', values['max-connections'] ?? env.PALISADE_MAX_CONNECTIONS);
  const maxConnectionsPerUser = count('max-connections-per-user', values['max-connections-per-user'] ?? env.PALISADE_MAX_CONNECTIONS_PER_USER);
  const maxConnectionsPerIp = count('max-connections-per-ip', values['max-connections-per-ip'] ?? env.PALISADE_MAX_CONNECTIONS_PER_IP);
  const maxUnfinishedTasksPerUser = count('max-tasks-per-user', values['max-tasks-per-user'] ?? env.PALISADE_MAX_TASKS_PER_USER);
  const maxInFlightPerAgent = count('max-tasks-per-agent', values['max-tasks-per-agent'] ?? env.PALISADE_MAX_TASKS_PER_AGENT);
  const databasePool = count('database-pool', values['database-pool'] ?? env.PALISADE_DATABASE_POOL);
  // A mark above the V8 heap limit could never be reached: refused, with the limit named.
  const memoryText = values['memory-high-water'] ?? env.PALISADE_MEMORY_HIGH_WATER_MB;
  const heapMib = Math.floor(heapLimitBytes() / MIB);
  if (memoryText !== undefined && (!/^\d{1,9}$/.test(memoryText) || Number(memoryText) < 1 || Number(memoryText) > heapMib)) {
    throw new UsageError(`--memory-high-water must be a whole number of MiB from 1 to ${heapMib} (this process's V8 heap limit; node --max-old-space-size raises it), not "${memoryText}"`);
  }
  const memoryHighWaterBytes = memoryText === undefined ? undefined : Number(memoryText) * MIB;
  const rateLimitsFile = values['rate-limits'] ?? env.PALISADE_RATE_LIMITS;
  let rateLimits: RateLimitConfig | undefined;
  if (rateLimitsFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(rateLimitsFile, 'utf8');
    } catch (e) {
      throw new UsageError(`--rate-limits: cannot read ${rateLimitsFile} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      rateLimits = parseRateLimits(text);
    } catch (e) {
      throw new UsageError(`--rate-limits ${rateLimitsFile}: ${(e as Error).message}`);
    }
  }
  const trustProxy = values['trust-proxy'] ?? env.PALISADE_TRUST_PROXY?.split(',').map((x) => x.trim()).filter(Boolean);
  try {
    createClientIpResolver(trustProxy ?? []);
  } catch (e) {
    throw new UsageError(`--trust-proxy: ${(e as Error).message}`);
  }
  // A secret in a flag is visible to every user of the machine (ps); in production it must come from the environment or a file.
  const secretFrom = (flag: string, value: string | undefined, envName: string): string | undefined => {
    if (value !== undefined && production && /^[a-z]+:\/\/[^/@]*:[^/@]+@/i.test(value)) throw new UsageError(`--${flag}: in production a password never comes on the command line (every user sees it in ps); use ${envName} or ${envName}_FILE`);
    if (value !== undefined) return value;
    const file = env[`${envName}_FILE`];
    if (file === undefined) return env[envName];
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`${envName}_FILE: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  };
  const signInFile = values['sign-in-config'] ?? env.PALISADE_SIGN_IN_CONFIG;
  let upstream;
  if (signInFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(signInFile, 'utf8');
    } catch (e) {
      throw new UsageError(`--sign-in-config: cannot read ${signInFile} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      upstream = parseUpstreamConfig(text);
    } catch (e) {
      throw new UsageError(`--sign-in-config ${signInFile}: ${(e as Error).message}`);
    }
  }
  const sentinels = values['redis-sentinel'] ?? env.PALISADE_REDIS_SENTINELS?.split(',').map((x) => x.trim()).filter(Boolean);
  for (const a of sentinels ?? []) if (!/^[^\s:]+:\d{1,5}$/.test(a)) throw new UsageError(`--redis-sentinel must be host:port, not "${a}"`);
  const extensionIds = values['extension-id'] ?? env.PALISADE_EXTENSION_IDS?.split(',').map((x) => x.trim()).filter(Boolean);
  for (const id of extensionIds ?? []) if (!/^[a-p]{32}$/.test(id)) throw new UsageError(`--extension-id must be a Chrome extension id (32 letters a–p), not "${id}"`);
  const corsOrigins = values['cors-origin'] ?? env.PALISADE_CORS_ORIGINS?.split(',').map((x) => x.trim()).filter(Boolean);
  for (const o of corsOrigins ?? []) {
    const bad = checkCorsOrigin(o);
    if (bad) throw new UsageError(`--cors-origin ${bad}`);
  }
  const redisUrl = secretFrom('redis', values.redis, 'PALISADE_REDIS_URL');
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) throw new UsageError(`--redis must be a redis:// or rediss:// URL, not "${redisUrl}"`);
  const tlsMinText = values['tls-min-version'] ?? env.PALISADE_TLS_MIN_VERSION;
  if (tlsMinText !== undefined && tlsMinText !== '1.3' && tlsMinText !== '1.2') throw new UsageError(`--tls-min-version must be 1.3 or 1.2, not "${tlsMinText}"`);
  const internalPortText = values['internal-port'] ?? env.PALISADE_INTERNAL_PORT;
  const internalPort = internalPortText === undefined ? undefined : Number(internalPortText);
  if (internalPort !== undefined && (!/^\d+$/.test(internalPortText ?? '') || internalPort > 65535)) throw new UsageError(`--internal-port must be a number from 0 to 65535, not "${internalPortText}"`);
  const internalCaFile = values['internal-ca'] ?? env.PALISADE_INTERNAL_CA;
  if (internalPort !== undefined && !internalCaFile) throw new UsageError('--internal-port needs --internal-ca FILE (the CA that signs the client certificates)');
  if (internalPort === undefined && internalCaFile) throw new UsageError('--internal-ca goes with --internal-port');
  const redisCaFile = values['redis-ca'] ?? env.PALISADE_REDIS_CA;
  if (redisCaFile !== undefined && !redisUrl?.startsWith('rediss://') && !sentinels?.length) throw new UsageError('--redis-ca needs a rediss:// URL in --redis (or --redis-sentinel)');
  const databaseCaFile = values['database-ca'] ?? env.PALISADE_DATABASE_CA;
  const databaseUrl = secretFrom('database', values.database, 'PALISADE_DATABASE_URL');
  if (databaseCaFile !== undefined && databaseUrl === undefined) throw new UsageError('--database-ca goes with --database');
  if (databasePool !== undefined && databaseUrl === undefined) throw new UsageError('--database-pool goes with --database');
  const replicaWaitsText = values['redis-replica-waits'] ?? env.PALISADE_REDIS_REPLICA_WAITS;
  const redisReplicaWaits = replicaWaitsText === undefined ? undefined : Number(replicaWaitsText);
  if (redisReplicaWaits !== undefined && (!Number.isInteger(redisReplicaWaits) || redisReplicaWaits < 0 || redisReplicaWaits > 16)) {
    throw new UsageError(`--redis-replica-waits must be a whole number from 0 to 16, not "${replicaWaitsText}"`);
  }
  if (redisReplicaWaits !== undefined && redisUrl === undefined && !sentinels?.length) throw new UsageError('--redis-replica-waits goes with --redis or --redis-sentinel');
  const databaseNoPrepare = values['database-no-prepare'] ?? env.PALISADE_DATABASE_NO_PREPARE === '1';
  if (databaseNoPrepare && databaseUrl === undefined) throw new UsageError('--database-no-prepare goes with --database');
  const workersText = values.workers ?? env.PALISADE_WORKERS;
  let workers: number;
  try {
    workers = parseWorkerCount(workersText);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (workers > 1 && !REUSE_PORT_PLATFORMS.has(process.platform)) {
    throw new UsageError(`--workers ${workersText}: the workers share one port with SO_REUSEPORT, which Node supports on Linux 3.9+, FreeBSD 12+, Solaris and AIX, not on ${process.platform}; run one process per port behind a load balancer instead`);
  }
  // Several processes cannot share in-process hot state (sessions, revocations, rate limits, presence).
  if (workers > 1 && redisUrl === undefined && !sentinels?.length) {
    throw new UsageError(`--workers ${workersText} needs --redis URL or --redis-sentinel: the workers share sessions, token revocations, rate limits and presence there (the in-process default would give each worker its own)`);
  }
  // Each worker has an internal listener of its own (its own /metrics): ports internal-port … internal-port + N - 1.
  if (workers > 1 && internalPort !== undefined && internalPort !== 0) {
    if (internalPort + workers - 1 > 65535) throw new UsageError(`--internal-port ${internalPort} with --workers ${workers}: the workers' internal ports would pass 65535`);
    if (port !== undefined && port >= internalPort && port < internalPort + workers) throw new UsageError(`--port ${port} falls in the workers' internal ports ${internalPort}–${internalPort + workers - 1}`);
  }
  const role = workerRole();
  if (workers > 1 && !role) {
    // Workers drain before they stop: they are killed only once the drain and the close after it had their time.
    const stopTimeoutMs = (shutdownDrainMs ?? DEFAULTS.shutdownDrainMs) + WORKER_STOP_MARGIN_MS;
    return superviseWorkers({ count: workers, start: (index, sharedPort) => forkWorker(index, sharedPort), write: (text) => process.stderr.write(text), stopTimeoutMs });
  }
  const server = await createPalisade({
    dataDir: values['data-dir'] ?? env.PALISADE_DATA_DIR,
    databaseUrl,
    databaseCaFile,
    databasePool,
    ...(databaseNoPrepare ? { databasePreparedStatements: false } : {}),
    databaseSchema: env.PALISADE_DATABASE_SCHEMA,
    redisUrl,
    redisSentinels: sentinels,
    redisSentinelName: values['redis-sentinel-name'] ?? env.PALISADE_REDIS_SENTINEL_NAME,
    redisPrefix: values['redis-prefix'] ?? env.PALISADE_REDIS_PREFIX,
    redisReplicaWaits,
    upstream,
    host: values.host ?? env.PALISADE_HOST,
    port: role?.port ?? port,
    // Workers share the port: each binds it with SO_REUSEPORT and the kernel spreads connections.
    reusePort: role ? true : undefined,
    publicUrl: values['public-url'] ?? env.PALISADE_PUBLIC_URL,
    tlsKeyFile: values['tls-key'] ?? env.PALISADE_TLS_KEY,
    tlsCertFile: values['tls-cert'] ?? env.PALISADE_TLS_CERT,
    tlsNames: values['tls-name'],
    tlsMinVersion: tlsMinText,
    internalPort: role && internalPort ? internalPort + role.index - 1 : internalPort,
    internalHost: values['internal-host'] ?? env.PALISADE_INTERNAL_HOST,
    internalCaFile,
    redisCaFile,
    recipeDirs: values.recipes,
    wsOrigins: values['ws-origin'],
    corsOrigins,
    extensionIds,
    insecureHttp,
    production,
    trustProxy,
    maxConnections,
    maxConnectionsPerUser,
    maxConnectionsPerIp,
    maxUnfinishedTasksPerUser,
    maxInFlightPerAgent,
    memoryHighWaterBytes,
    rateLimits,
    accessTokenTtl,
    refreshTokenTtl,
    shutdownDrainMs,
    // Workers share the machine's cores: each hashes passwords on its share of them.
    ...(role ? { passwordHashConcurrency: hashConcurrencyFor(availableParallelism() / workers) } : {}),
    ...(heartbeat === undefined ? {} : { heartbeatMs: heartbeat * 1000 }),
    logLevel: values['log-level'] ?? env.PALISADE_LOG_LEVEL,
  });
  // Signals are handled before anything is printed, so a stop right after start is still clean.
  const stopper = gracefulStop(server, role?.index);
  process.on('SIGINT', () => stopper.signal('SIGINT'));
  process.on('SIGTERM', () => stopper.signal('SIGTERM'));
  const stop = (why: string) => stopper.signal(why);
  const url = await server.listen();
  if (role) {
    reportReady({
      type: 'ready', index: role.index, pid: process.pid, nodeId: server.nodeId, url,
      port: (server.app.server.address() as AddressInfo).port,
      internalUrl: server.internalUrl, setupUrl: server.setupUrl, banner: banner(server, insecureHttp),
    }, {
      freshSetupLink: async () => {
        const token = await createSetupToken(server.store);
        return token ? `${server.url}/setup?token=${token}` : undefined;
      },
      onPrimaryGone: () => void stop('primary gone'),
    });
    return -1;
  }
  process.stderr.write(banner(server, insecureHttp));
  if (server.setupUrl) process.stderr.write(`\n  No admin account yet. Open this one-time link to create it:\n\n    ${server.setupUrl}\n\n`);
  return -1;
}

/**
 * `--rate-limits`: a JSON object merged over DEFAULT_RATE_LIMITS — `enabled`, `classes` (per class,
 * `ip` and `principal`: a rate, or null for none) and `escalation`. Anything else is refused.
 */
function parseRateLimits(text: string): RateLimitConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error('not valid JSON');
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const onlyKeys = (v: Record<string, unknown>, keys: readonly string[], where: string) => {
    for (const k of Object.keys(v)) if (!keys.includes(k)) throw new Error(`${where}: unknown key "${k}" (expected ${keys.join(', ')})`);
  };
  const whole = (v: unknown, where: string, min: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 1e12) throw new Error(`${where} must be a whole number from ${min}, not ${JSON.stringify(v)}`);
    return v;
  };
  if (!isObject(raw)) throw new Error('expected a JSON object');
  onlyKeys(raw, ['enabled', 'classes', 'escalation'], 'the file');
  const out: RateLimitConfig = { ...DEFAULT_RATE_LIMITS, classes: { ...DEFAULT_RATE_LIMITS.classes }, escalation: { ...DEFAULT_RATE_LIMITS.escalation } };
  if (raw.enabled !== undefined) {
    if (typeof raw.enabled !== 'boolean') throw new Error('enabled must be true or false');
    out.enabled = raw.enabled;
  }
  if (raw.classes !== undefined) {
    if (!isObject(raw.classes)) throw new Error('classes must be an object');
    const names = Object.keys(DEFAULT_RATE_LIMITS.classes) as (keyof RateLimitConfig['classes'])[];
    onlyKeys(raw.classes, names, 'classes');
    for (const name of names) {
      const cls = raw.classes[name];
      if (cls === undefined) continue;
      if (!isObject(cls)) throw new Error(`classes.${name} must be an object`);
      onlyKeys(cls, ['ip', 'principal'], `classes.${name}`);
      const merged = { ...out.classes[name] };
      for (const dim of ['ip', 'principal'] as const) {
        const spec = cls[dim];
        if (spec === undefined) continue;
        if (spec === null) {
          merged[dim] = undefined;
          continue;
        }
        const where = `classes.${name}.${dim}`;
        if (!isObject(spec)) throw new Error(`${where} must be {"limit","periodMs","burst"} or null`);
        onlyKeys(spec, ['limit', 'periodMs', 'burst'], where);
        const r: RateSpec = { limit: whole(spec.limit, `${where}.limit`, 1), periodMs: whole(spec.periodMs, `${where}.periodMs`, 1), burst: whole(spec.burst, `${where}.burst`, 1) };
        merged[dim] = r;
      }
      out.classes[name] = merged;
    }
  }
  if (raw.escalation !== undefined) {
    if (!isObject(raw.escalation)) throw new Error('escalation must be an object');
    onlyKeys(raw.escalation, ['strikes', 'windowMs', 'blockMs'], 'escalation');
    for (const k of ['strikes', 'windowMs', 'blockMs'] as const) if (raw.escalation[k] !== undefined) out.escalation[k] = whole(raw.escalation[k], `escalation.${k}`, 1);
  }
  return out;
}

/**
 * What SIGTERM/SIGINT do: the first drains the node (`Palisade.shutdown`: stop accepting, wait up to
 * the drain timeout for running tasks, tell agents to reconnect, close) and exits 0; a second stops
 * at once (`close()`) and exits 1, or is cut after {@link FORCE_EXIT_MS}. In a worker (`index`), one
 * Ctrl-C brings the terminal's SIGINT and the primary's SIGTERM together: only a signal it has
 * already had forces.
 */
function gracefulStop(server: Palisade, index: number | undefined): { signal(name: string): void } {
  const say = (text: string) => process.stderr.write(index === undefined ? text : `worker ${index}: ${text}`);
  const seen = new Set<string>();
  let forced = false;
  return {
    signal(name) {
      const again = seen.has(name);
      if (seen.size === 0) {
        seen.add(name);
        const drainS = server.config.shutdownDrainMs / 1000;
        if (index === undefined) say(`\n${name}: shutting down…\n`);
        server.shutdown({
          onProgress: ({ running, remainingMs }) => say(`  draining: ${running} task(s) still running, ${Math.ceil(remainingMs / 1000)} s left (of ${drainS} s; a second signal stops at once)\n`),
        }).then(
          (r) => {
            if (r.running > 0) say(`  stopped with ${r.running} task(s) still running: ${server.hot.kind === 'redis' ? 'another node takes them back' : 'they are requeued when the server starts again'}\n`);
            else if (r.waitedMs > 0) say(`  drained: every task finished (${(r.waitedMs / 1000).toFixed(1)} s)\n`);
            process.exit(forced ? 1 : 0);
          },
          (e: unknown) => {
            say(`  shutdown failed: ${(e as Error).message}\n`);
            process.exit(1);
          },
        );
        return;
      }
      seen.add(name);
      if (forced || (index !== undefined && !again)) return;
      forced = true;
      say(`second signal (${name}): stopping now, without waiting for running tasks\n`);
      setTimeout(() => process.exit(1), FORCE_EXIT_MS).unref();
      server.close().finally(() => process.exit(1));
    },
  };
}

/** The start banner: where the server listens, what it stores where, how to trust its TLS. */
function banner(server: Palisade, insecureHttp: boolean): string {
  const url = server.url;
  const lines: string[] = [];
  const out = { write: (text: string) => void lines.push(text) };
  out.write(`\nPalisade is running at ${url}\n`);
  out.write(`  OAuth issuer   ${server.issuer}\n  API            ${url}/api/v1\n  Agents         ${url.replace(/^http/, 'ws')}/ws/agent (a ping every ${server.config.heartbeatMs / 1000} s)\n`);
  out.write(`  Data           ${server.store.kind === 'postgres' ? 'PostgreSQL' : `${server.config.dataDir} (SQLite)`}, ${server.recipes.list().length} recipe(s)\n`);
  out.write(`  Hot state      ${server.hot.kind === 'redis' ? `Redis${server.config.redisSentinels?.length ? ` via Sentinel (${server.config.redisSentinelName ?? 'mymaster'})` : ''}, sessions and tokens kept there` : 'in this process (one node)'}\n`);
  if (server.internalUrl) out.write(`  Internal       ${server.internalUrl} (mutual TLS: /metrics, /internal/v1/*)\n`);
  if (server.config.upstream.length > 0) out.write(`  Sign-in        password, ${server.config.upstream.map((u) => u.name).join(', ')}\n`);
  if (server.tls?.caFile) {
    out.write(`  TLS            development CA at ${server.tls.caFile}${server.tls.generated ? ' (generated now)' : ''}\n`);
    out.write(`                 trust it in the CLI/SDK with --ca ${server.tls.caFile} (or PALISADE_CA_FILE)\n`);
  }
  if (insecureHttp) out.write('\n  WARNING: plain HTTP. Tokens and task data cross the network unencrypted. Use only on this machine, for development.\n');
  return lines.join('');
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`palisade-server: ${(err as Error).message}\n`);
    process.exit(err instanceof UsageError || err instanceof InsecureConfigError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1);
  },
);
