/**
 * @module auth/passwords — argon2id hashing with OWASP's minimum parameters (19 MiB, t=2, p=1)
 * and the password rules Palisade enforces (at least 8 characters, up to 128, no composition rules).
 */
import argon2 from 'argon2';
import { PalisadeError } from '@palisade/protocol';

/** OWASP Password Storage Cheat Sheet minimum for argon2id. */
export const ARGON2_OPTIONS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 128;

export function checkPasswordRules(password: string): void {
  const n = [...password].length;
  if (n < PASSWORD_MIN) throw new PalisadeError('PAL_ERR_VALIDATION', `the password must have at least ${PASSWORD_MIN} characters`);
  if (n > PASSWORD_MAX) throw new PalisadeError('PAL_ERR_VALIDATION', `the password must have at most ${PASSWORD_MAX} characters`);
}

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, ARGON2_OPTIONS);
}

/** A hash of a random password, verified against when the account does not exist, so timing does not tell. */
let dummyHash: Promise<string> | undefined;

/** Verifies `password` against `hash`; with no hash, spends the same time and returns false. */
export async function verifyPassword(hash: string | undefined, password: string): Promise<boolean> {
  if (hash === undefined) {
    dummyHash ??= hashPassword(crypto.randomUUID());
    await argon2.verify(await dummyHash, password).catch(() => false);
    return false;
  }
  return argon2.verify(hash, password).catch(() => false);
}
