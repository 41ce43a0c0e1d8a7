/**
 * @module auth/secrets — key material shared by every node, kept in the durable store and created
 * on first start: the cookie-signing keys here, the token-signing key ring in `keys.ts`. Never
 * committed, never logged.
 *
 * Earlier versions kept them in `<data dir>/secrets.json`; if that file exists, its keys seed the
 * store, so sessions and tokens from before the upgrade stay valid.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MetaRepo } from '../store/types.ts';
import type { PrivateJwk } from './keys.ts';

/** What an earlier version kept in `secrets.json`. */
export interface LegacySecrets {
  signingKey?: PrivateJwk;
  cookieKeys?: string[];
}

/** Reads `dir/secrets.json` if an earlier version wrote one. */
export function readLegacySecrets(dir: string): LegacySecrets {
  const file = join(dir, 'secrets.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as LegacySecrets) : {};
}

/** The cookie-signing keys every node uses, created once (atomically) on first start. */
export async function sharedCookieKeys(meta: MetaRepo, seed?: string[]): Promise<string[]> {
  const fresh = JSON.stringify(seed ?? [randomBytes(32).toString('base64url')]);
  await meta.compareAndSet('cookie_keys', undefined, fresh);
  const stored = await meta.get('cookie_keys');
  if (!stored) throw new Error('the cookie keys could not be stored');
  return JSON.parse(stored) as string[];
}
