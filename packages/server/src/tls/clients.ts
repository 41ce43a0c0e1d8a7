/**
 * @module tls/clients — TLS of the node's own connections to Redis and PostgreSQL: a private CA
 * read from a file, certificate and host-name verification always on. Only the options are made
 * here; hot/redis.ts and store/postgres.ts pass them to ioredis and pg.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { RedisOptions } from 'ioredis';

/** Reads a CA certificate file (PEM, one or more certificates); `flag` names the setting in errors. */
export function readCaFile(file: string, flag: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${flag}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    new X509Certificate(pem);
  } catch {
    throw new Error(`${flag}: ${file} is not a PEM certificate`);
  }
  return pem;
}

/**
 * ioredis options for TLS with the CA in `caFile`: the data connection (`rediss://`, or the
 * primary Sentinel names), and the Sentinel connections too. Undefined without a CA file.
 * A plain `redis://` URL with a CA is refused: the CA would silently do nothing.
 */
export function redisTlsOptions(o: { url?: string | undefined; sentinels?: readonly string[] | undefined; caFile?: string | undefined }): RedisOptions | undefined {
  if (!o.caFile) return undefined;
  const ca = readCaFile(o.caFile, '--redis-ca');
  if (o.sentinels?.length) return { tls: { ca }, enableTLSForSentinelMode: true, sentinelTLS: { ca } };
  if (!o.url?.startsWith('rediss://')) throw new Error(`--redis-ca needs a rediss:// URL (TLS); ${o.url ? `"${o.url.replace(/\/\/[^@/]*@/, '//…@')}" is plain TCP` : 'no --redis URL is set'}`);
  return { tls: { ca } };
}

/** Connection-string parameters by which pg sets its own TLS (they would override ours). */
const PG_SSL_PARAMS = ['ssl', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey'];

/**
 * pg's `ssl` option for TLS with the CA in `caFile`, verification on. Undefined without a CA file.
 * A connection string that sets TLS itself (`sslmode=`, `sslrootcert=`, …) as well is refused:
 * pg lets the string win, which would drop the CA or the verification.
 */
export function postgresSslOptions(o: { url?: string | undefined; caFile?: string | undefined }): { ca: string; rejectUnauthorized: true } | undefined {
  if (!o.caFile) return undefined;
  if (!o.url) throw new Error('--database-ca needs --database (a PostgreSQL connection string)');
  let params: URLSearchParams;
  try {
    params = new URL(o.url).searchParams;
  } catch {
    throw new Error('--database is not a valid connection URL');
  }
  const clash = PG_SSL_PARAMS.filter((p) => params.has(p));
  if (clash.length > 0) throw new Error(`--database-ca: the connection string sets TLS itself (${clash.join(', ')}); give the CA one way only`);
  return { ca: readCaFile(o.caFile, '--database-ca'), rejectUnauthorized: true };
}
