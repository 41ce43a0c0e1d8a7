/**
 * @module config — every setting of the server, its default, and where it comes from
 * (command-line flag, then `PALISADE_*` environment variable, then the default).
 */
import type { UpstreamProviderConfig } from './auth/upstream.ts';

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
  /** This node's name in presence records. Default `<hostname>:<pid>`. */
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
  /** URL callers use to reach the server; the OAuth issuer is `${publicUrl}/oauth2`. Default from host and port. */
  publicUrl?: string | undefined;
  /** Serve plain HTTP instead of TLS. Only with an explicit flag; a warning is printed. Default false. */
  insecureHttp: boolean;
  /** TLS key and certificate files; default: a development CA + certificate generated in `dataDir/tls`. */
  tlsKeyFile?: string | undefined;
  tlsCertFile?: string | undefined;
  /** Extra DNS names / IPs for the generated development certificate. */
  tlsNames: string[];
  /** Folders of recipe JSON files. Default: the built-in `recipes/`. */
  recipeDirs: string[];
  /** `Origin`s allowed to open agent/client WebSockets; `chrome-extension://*` allows any extension. Default that. */
  wsOrigins: string[];
  /** API audience (`aud`) of access tokens. Default `urn:palisade:api`. */
  audience: string;
  /** Access-token lifetime, seconds. Default 900 (15 minutes). */
  accessTokenTtl: number;
  /** Refresh-token lifetime, seconds. Default 2,592,000 (30 days). */
  refreshTokenTtl: number;
  /** Largest WebSocket frame, bytes. Default 1 MiB. */
  maxFrameBytes: number;
  /** Largest HTTP body, bytes. Default 1 MiB. */
  maxBodyBytes: number;
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
  /** Most unfinished (queued, dispatched, running) tasks one user may have. Default 1000. */
  maxUnfinishedTasksPerUser: number;
  /** Sign-in limits: attempts per account and per IP within `windowMs`, then locked for the rest of it. */
  loginLimits: LoginLimits;
  /** How often a node checks whether another node rotated the signing keys, ms. Default 30000. */
  keyReloadMs: number;
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

export const DEFAULTS: ServerConfig = {
  dataDir: '.palisade',
  host: '127.0.0.1',
  port: 8443,
  insecureHttp: false,
  upstream: [],
  upstreamInsecureHttp: false,
  extensionIds: [],
  tlsNames: [],
  recipeDirs: [new URL('../../../recipes/', import.meta.url).pathname],
  wsOrigins: ['chrome-extension://*'],
  audience: 'urn:palisade:api',
  accessTokenTtl: 900,
  refreshTokenTtl: 30 * 24 * 3600,
  maxFrameBytes: 1024 * 1024,
  maxBodyBytes: 1024 * 1024,
  authTimeoutMs: 5000,
  heartbeatMs: 30_000,
  acceptTimeoutMs: 10_000,
  defaultTaskTimeoutMs: 120_000,
  maxAttempts: 2,
  reconnectGraceMs: 15_000,
  maxUnfinishedTasksPerUser: 1000,
  loginLimits: { perAccount: 5, perIp: 20, windowMs: 15 * 60_000, freeFailures: 2, delayMs: 500, maxDelayMs: 4000 },
  keyReloadMs: 30_000,
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
