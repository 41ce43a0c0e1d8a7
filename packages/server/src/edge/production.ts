/**
 * @module edge/production — the start-up check of production mode (`--production`,
 * `PALISADE_ENV=production` or `NODE_ENV=production`): a server in production refuses to start on an
 * insecure configuration, and names every offending setting at once.
 *
 * Each rule is one small named check below; `PRODUCTION_RULES` is the whole list.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { ServerConfig } from '../config.ts';

/** One refusal: the setting (flag) and what is wrong with it. */
export interface ConfigProblem {
  setting: string;
  problem: string;
}

/** Thrown by `createPalisade` in production mode; `problems` lists every offending setting. */
export class InsecureConfigError extends Error {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(`production mode refuses to start on an insecure configuration:\n${problems.map((p) => `  - ${p.setting}: ${p.problem}`).join('\n')}`);
    this.name = 'InsecureConfigError';
    this.problems = problems;
  }
}

/** What the rules look at: the configuration and the TLS material actually loaded. */
export interface ProductionFacts {
  config: ServerConfig;
  /** PEM key and certificate in use; undefined with `--insecure-http`. */
  tls?: { key: string; cert: string; generated: boolean } | undefined;
}

type Rule = (f: ProductionFacts) => ConfigProblem | ConfigProblem[] | undefined;

/** Passwords that are defaults somewhere (database images, tutorials): never accepted in production. */
const DEFAULT_PASSWORDS = new Set(['', 'password', 'postgres', 'redis', 'admin', 'root', 'secret', 'changeme', 'palisade', 'test', '123456']);

const loopback = (host: string) => host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
const publicInterface = (host: string) => !loopback(host);

const plainHttpInPublic: Rule = ({ config }) => {
  if (!config.insecureHttp) return undefined;
  if (publicInterface(config.host)) return { setting: '--insecure-http', problem: `plain HTTP on ${config.host}, which is not a loopback interface; serve TLS (--tls-key/--tls-cert) or listen on 127.0.0.1 behind a TLS-terminating proxy` };
  if (!config.publicUrl?.startsWith('https://')) return { setting: '--public-url', problem: 'plain HTTP behind a proxy needs the https:// address callers use (--public-url https://…)' };
  return undefined;
};

const tlsMaterial: Rule = ({ config, tls }) => {
  if (config.insecureHttp) return undefined;
  if (!tls || tls.generated || !config.tlsKeyFile || !config.tlsCertFile) {
    return { setting: '--tls-key/--tls-cert', problem: 'missing: the generated development certificate is for development only; give a certificate and key (palisade certs can make them)' };
  }
  return undefined;
};

const tlsKeyStrength: Rule = ({ config, tls }) => {
  if (!tls || config.insecureHttp) return undefined;
  const out: ConfigProblem[] = [];
  const details = createPrivateKey(tls.key).asymmetricKeyDetails ?? {};
  if (details.modulusLength !== undefined && details.modulusLength < 2048) out.push({ setting: '--tls-key', problem: `RSA key of ${details.modulusLength} bits; at least 2048 are required` });
  if (details.namedCurve !== undefined && !['prime256v1', 'secp384r1', 'secp521r1'].includes(details.namedCurve)) out.push({ setting: '--tls-key', problem: `curve ${details.namedCurve} is too weak; use P-256 or stronger` });
  const cert = new X509Certificate(tls.cert);
  if (new Date(cert.validTo).getTime() <= Date.now()) out.push({ setting: '--tls-cert', problem: `the certificate expired on ${cert.validTo}` });
  return out;
};

const corsWildcard: Rule = ({ config }) => {
  const origins = config.corsOrigins;
  return origins.filter((o) => o.includes('*') || (o.startsWith('http://') && !loopback(new URL(o).hostname)))
    .map((o) => ({ setting: '--cors-origin', problem: `"${o}" is a wildcard or a plain-HTTP origin` }));
};

const wsOriginWildcard: Rule = ({ config }) => config.wsOrigins.filter((o) => o.includes('*'))
  .map((o) => ({ setting: '--ws-origin', problem: `"${o}" lets any extension connect; name your extension (--ws-origin chrome-extension://<id>)` }));

/** Passwords in connection strings: none of the defaults; a remote Redis needs one (and TLS). */
const storeSecrets: Rule = ({ config }) => {
  const out: ConfigProblem[] = [];
  for (const [setting, raw] of [['--database', config.databaseUrl], ['--redis', config.redisUrl]] as const) {
    if (!raw) continue;
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      out.push({ setting, problem: 'not a valid URL' });
      continue;
    }
    const password = decodeURIComponent(url.password);
    const remote = !loopback(url.hostname) && url.hostname !== '';
    if (url.password !== '' && DEFAULT_PASSWORDS.has(password.toLowerCase())) out.push({ setting, problem: 'the password is a well-known default' });
    if (setting === '--redis' && remote && url.password === '') out.push({ setting, problem: `no password for the Redis server at ${url.hostname}` });
    if (setting === '--redis' && remote && url.protocol !== 'rediss:') out.push({ setting, problem: `plain redis:// to ${url.hostname}; use rediss:// (TLS)` });
    if (setting === '--database' && remote && !/[?&]sslmode=(require|verify-ca|verify-full)/.test(raw) && !config.databaseCaFile) {
      out.push({ setting, problem: `no TLS to the database at ${url.hostname}; add sslmode=verify-full or --database-ca` });
    }
  }
  return out;
};

const upstreamHttp: Rule = ({ config }) => (config.upstreamInsecureHttp ? { setting: 'upstreamInsecureHttp', problem: 'plain-HTTP sign-in providers are for local testing only' } : undefined);

const rateLimitsOn: Rule = ({ config }) => (config.rateLimits.enabled ? undefined : { setting: 'rateLimits.enabled', problem: 'rate limits are off' });

const trustEveryone: Rule = ({ config }) => config.trustProxy.filter((p) => /^(0\.0\.0\.0|::)\/0$/.test(p.trim()) || (p.includes('/') && Number(p.split('/')[1]) < 8 && isIP(p.split('/')[0]!) === 4))
  .map((p) => ({ setting: '--trust-proxy', problem: `"${p}" trusts (nearly) every address to say who the client is` }));

const verboseLogs: Rule = ({ config }) => (['debug', 'trace'].includes(config.logLevel) ? { setting: '--log-level', problem: `${config.logLevel} logs request details; use info or above` } : undefined);

/** Every production rule, in the order problems are reported. */
export const PRODUCTION_RULES: readonly [string, Rule][] = [
  ['plainHttpInPublic', plainHttpInPublic],
  ['tlsMaterial', tlsMaterial],
  ['tlsKeyStrength', tlsKeyStrength],
  ['corsWildcard', corsWildcard],
  ['wsOriginWildcard', wsOriginWildcard],
  ['storeSecrets', storeSecrets],
  ['upstreamHttp', upstreamHttp],
  ['rateLimitsOn', rateLimitsOn],
  ['trustEveryone', trustEveryone],
  ['verboseLogs', verboseLogs],
];

/** Every problem production mode finds (empty: the configuration may start). */
export function productionProblems(facts: ProductionFacts): ConfigProblem[] {
  return PRODUCTION_RULES.flatMap(([, rule]) => {
    const r = rule(facts);
    return r === undefined ? [] : Array.isArray(r) ? r : [r];
  });
}
