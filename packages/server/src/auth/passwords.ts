/**
 * @module auth/passwords — argon2id hashing with OWASP's minimum parameters (19 MiB, t=2, p=1)
 * and the password rules Palisade enforces (ASVS 5.0 V6.2: at least 8 characters, up to 128,
 * no composition rules, and none of the most common breached passwords). See docs/PASSWORDS.md.
 */
import { readFileSync } from 'node:fs';
import argon2 from 'argon2';
import { PalisadeError } from '@palisade/protocol';

/** OWASP Password Storage Cheat Sheet minimum for argon2id. */
export const ARGON2_OPTIONS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;
/** Fewest characters (Unicode code points) a password may have. */
export const PASSWORD_MIN = 8;
/** Most characters (Unicode code points) a password may have; ASVS asks that at least 64 be accepted. */
export const PASSWORD_MAX = 128;
/**
 * The shipped list of common breached passwords: one a line, NFKC-normalised, lower-cased,
 * only entries of at least {@link PASSWORD_MIN} code points. Its source is in docs/PASSWORDS.md.
 */
export const COMMON_PASSWORDS_FILE = new URL('../../data/common-passwords.txt', import.meta.url);

let commonList: ReadonlySet<string> | undefined;

/** The common-password list, read from {@link COMMON_PASSWORDS_FILE} on first use and kept. */
export function commonPasswords(): ReadonlySet<string> {
  if (commonList) return commonList;
  let text: string;
  try {
    text = readFileSync(COMMON_PASSWORDS_FILE, 'utf8');
  } catch (e) {
    throw new PalisadeError('PAL_ERR_INTERNAL', 'the common-password list could not be read', { internal: e });
  }
  commonList = new Set(text.split(/\r?\n/).map(normalise).filter((line) => line !== ''));
  return commonList;
}

/** The form passwords are compared with the list in: NFKC, then lower case. */
function normalise(password: string): string {
  return password.normalize('NFKC').toLowerCase();
}

/**
 * Throws `PAL_ERR_VALIDATION` unless `password` follows the rules: 8 to 128 code points, not on
 * the common-password list (compared case-insensitively after NFKC). No composition rules.
 * The messages never repeat the password.
 */
export function checkPasswordRules(password: string): void {
  const n = [...password].length;
  if (n < PASSWORD_MIN) throw new PalisadeError('PAL_ERR_VALIDATION', `the password must have at least ${PASSWORD_MIN} characters`);
  if (n > PASSWORD_MAX) throw new PalisadeError('PAL_ERR_VALIDATION', `the password must have at most ${PASSWORD_MAX} characters`);
  if (commonPasswords().has(normalise(password))) {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'this password is on a list of common breached passwords; choose another (a longer passphrase works well)');
  }
}

/** Hashes `password` with argon2id at {@link ARGON2_OPTIONS}, as a PHC string (`$argon2id$v=19$m=19456,p=1,t=2$…`). */
export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, ARGON2_OPTIONS);
}

/** A hash of a random password, verified against when the account does not exist, so timing does not tell. */
let dummyHash: Promise<string> | undefined;

/**
 * Verifies `password` against `hash`; with no usable hash (no account, or an account that signs in
 * only through Google/GitHub), spends the same time and returns false.
 */
export async function verifyPassword(hash: string | undefined, password: string): Promise<boolean> {
  if (hash === undefined || !hash.startsWith('$argon2')) {
    dummyHash ??= hashPassword(crypto.randomUUID());
    await argon2.verify(await dummyHash, password).catch(() => false);
    return false;
  }
  return argon2.verify(hash, password).catch(() => false);
}
