/**
 * @module auth/secrets — key material created on first start and kept in the data folder at mode
 * 0600: the ES256 token-signing key (a private JWK) and the cookie-signing keys. Never committed,
 * never logged.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, type JWK } from 'jose';

export interface ServerSecrets {
  /** Private signing key (ES256) with its `kid`. */
  signingKey: JWK & { kid: string; alg: 'ES256' };
  cookieKeys: string[];
}

/** Loads the server's secrets from `dir/secrets.json`, creating them on first use. */
export async function loadOrCreateSecrets(dir: string): Promise<ServerSecrets> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as ServerSecrets;
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const secrets: ServerSecrets = {
    signingKey: { ...jwk, kid: randomBytes(12).toString('base64url'), alg: 'ES256', use: 'sig' } as ServerSecrets['signingKey'],
    cookieKeys: [randomBytes(32).toString('base64url')],
  };
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

/** The public half of a private JWK. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
  return pub;
}
