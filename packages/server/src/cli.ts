#!/usr/bin/env node
/**
 * @module cli — `palisade-server start`: runs one server node on its embedded defaults.
 *
 *   npm start                         # https://127.0.0.1:8443, data in ./.palisade
 *   npm start -- --port 9443 --data-dir /var/lib/palisade
 *   npm start -- --insecure-http      # plain HTTP (development only; prints a warning)
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createPalisade } from './app.ts';
import { DEFAULTS } from './config.ts';
import { parseUpstreamConfig } from './auth/upstream.ts';

const HELP = `Usage: palisade-server start [options]

Options (environment variable in brackets):
  --data-dir DIR       data folder: SQLite database, keys, generated TLS  [PALISADE_DATA_DIR] (default ${DEFAULTS.dataDir})
  --database URL       PostgreSQL connection string (default: SQLite in the data folder) [PALISADE_DATABASE_URL]
  --redis URL          Redis for hot state shared by many nodes (redis:// or rediss://) [PALISADE_REDIS_URL]
                       (default: in-process, one node)
  --redis-sentinel H:P Redis Sentinel address (repeatable; instead of --redis) [PALISADE_REDIS_SENTINELS, comma-separated]
  --redis-sentinel-name NAME  the primary's name in Sentinel           [PALISADE_REDIS_SENTINEL_NAME] (default mymaster)
  --redis-prefix P     prefix of every Redis key                          [PALISADE_REDIS_PREFIX] (default palisade)
  --sign-in-config FILE  Google/GitHub/OpenID Connect sign-in providers (JSON; see docs/SIGN-IN.md) [PALISADE_SIGN_IN_CONFIG]
  --host HOST          interface to listen on                             [PALISADE_HOST] (default ${DEFAULTS.host})
  --port PORT          port                                               [PALISADE_PORT] (default ${DEFAULTS.port})
  --public-url URL     URL callers use to reach this server               [PALISADE_PUBLIC_URL]
  --tls-key FILE       TLS private key (PEM); default: generated dev CA   [PALISADE_TLS_KEY]
  --tls-cert FILE      TLS certificate chain (PEM)                        [PALISADE_TLS_CERT]
  --tls-name NAME      extra DNS name or IP for the generated certificate (repeatable)
  --recipes DIR        recipe folder (repeatable; default: built-in recipes/)
  --extension-id ID    extension id allowed to sign in with launchWebAuthFlow (repeatable) [PALISADE_EXTENSION_IDS, comma-separated]
  --ws-origin ORIGIN   Origin allowed to open agent WebSockets (repeatable; default chrome-extension://*)
  --access-token-ttl S   access-token lifetime in seconds                [PALISADE_ACCESS_TOKEN_TTL] (default ${DEFAULTS.accessTokenTtl})
  --refresh-token-ttl S  refresh-token lifetime in seconds               [PALISADE_REFRESH_TOKEN_TTL] (default ${DEFAULTS.refreshTokenTtl})
  --insecure-http      serve plain HTTP instead of TLS (development only)
  --log-level LEVEL    trace|debug|info|warn|error                        [PALISADE_LOG_LEVEL] (default info)
  -h, --help           show this help
`;

/** A bad flag value: printed with the help hint, exit code 2. */
class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' }, database: { type: 'string' }, redis: { type: 'string' }, 'redis-sentinel': { type: 'string', multiple: true },
      'redis-sentinel-name': { type: 'string' }, 'redis-prefix': { type: 'string' }, 'sign-in-config': { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'public-url': { type: 'string' },
      'tls-key': { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-name': { type: 'string', multiple: true },
      recipes: { type: 'string', multiple: true }, 'ws-origin': { type: 'string', multiple: true }, 'extension-id': { type: 'string', multiple: true },
      'access-token-ttl': { type: 'string' }, 'refresh-token-ttl': { type: 'string' },
      'insecure-http': { type: 'boolean' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' },
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
  const insecureHttp = values['insecure-http'] ?? env.PALISADE_INSECURE_HTTP === '1';
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
  const redisUrl = values.redis ?? env.PALISADE_REDIS_URL;
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) throw new UsageError(`--redis must be a redis:// or rediss:// URL, not "${redisUrl}"`);
  const server = await createPalisade({
    dataDir: values['data-dir'] ?? env.PALISADE_DATA_DIR,
    databaseUrl: values.database ?? env.PALISADE_DATABASE_URL,
    databaseSchema: env.PALISADE_DATABASE_SCHEMA,
    redisUrl,
    redisSentinels: sentinels,
    redisSentinelName: values['redis-sentinel-name'] ?? env.PALISADE_REDIS_SENTINEL_NAME,
    redisPrefix: values['redis-prefix'] ?? env.PALISADE_REDIS_PREFIX,
    upstream,
    host: values.host ?? env.PALISADE_HOST,
    port,
    publicUrl: values['public-url'] ?? env.PALISADE_PUBLIC_URL,
    tlsKeyFile: values['tls-key'] ?? env.PALISADE_TLS_KEY,
    tlsCertFile: values['tls-cert'] ?? env.PALISADE_TLS_CERT,
    tlsNames: values['tls-name'],
    recipeDirs: values.recipes,
    wsOrigins: values['ws-origin'],
    extensionIds,
    insecureHttp,
    accessTokenTtl,
    refreshTokenTtl,
    logLevel: values['log-level'] ?? env.PALISADE_LOG_LEVEL,
  });
  // Signals are handled before anything is printed, so a stop right after start is still clean.
  const stop = async (signal: string) => {
    process.stderr.write(`\n${signal}: shutting down…\n`);
    await server.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  const url = await server.listen();
  const out = process.stderr;
  out.write(`\nPalisade is running at ${url}\n`);
  out.write(`  OAuth issuer   ${server.issuer}\n  API            ${url}/api/v1\n  Agents         ${url.replace(/^http/, 'ws')}/ws/agent\n`);
  out.write(`  Data           ${server.store.kind === 'postgres' ? 'PostgreSQL' : `${server.config.dataDir} (SQLite)`}, ${server.recipes.list().length} recipe(s)\n`);
  out.write(`  Hot state      ${server.hot.kind === 'redis' ? `Redis${server.config.redisSentinels?.length ? ` via Sentinel (${server.config.redisSentinelName ?? 'mymaster'})` : ''}, sessions and tokens kept there` : 'in this process (one node)'}\n`);
  if (server.config.upstream.length > 0) out.write(`  Sign-in        password, ${server.config.upstream.map((u) => u.name).join(', ')}\n`);
  if (server.tls?.caFile) {
    out.write(`  TLS            development CA at ${server.tls.caFile}${server.tls.generated ? ' (generated now)' : ''}\n`);
    out.write(`                 trust it in the CLI/SDK with --ca ${server.tls.caFile} (or PALISADE_CA_FILE)\n`);
  }
  if (insecureHttp) out.write('\n  WARNING: plain HTTP. Tokens and task data cross the network unencrypted. Use only on this machine, for development.\n');
  if (server.setupUrl) out.write(`\n  No admin account yet. Open this one-time link to create it:\n\n    ${server.setupUrl}\n\n`);
  return -1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`palisade-server: ${(err as Error).message}\n`);
    process.exit(err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1);
  },
);
