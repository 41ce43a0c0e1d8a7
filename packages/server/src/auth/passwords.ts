/**
 * @module auth/passwords — argon2id hashing with OWASP's minimum parameters (19 MiB, t=2, p=1)
 * and the password rules Palisade enforces (ASVS 5.0 V6.2: at least 8 characters, up to 128,
 * no composition rules, and none of the most common breached passwords). See docs/PASSWORDS.md.
 */
import { readFileSync } from 'node:fs';
import argon2 from 'argon2';
import { PalisadeError } from '@palisade/protocol';
import { DEFAULTS } from '../config.ts';

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

/**
 * Password hashes at once, in this process. Each argon2id computation takes a thread of libuv's pool
 * (4 threads by default) for ~20 ms and 19 MiB of memory; file writes (the logger), DNS and the token
 * signer share that pool. Many more at once than there are cores makes none finish sooner (they share
 * the cores and their caches), holds more memory, and queues the pool's other work behind them; one
 * more than the cores keeps every core busy between hashes (config.ts `hashConcurrencyFor`, the
 * default). So at most `max` run at once;
 * the rest wait their turn, at most `maxWaiting` of them; past that, PAL_ERR_UNAVAILABLE (503).
 */
export interface HashGate {
  run<T>(job: () => Promise<T>): Promise<T>;
  readonly running: number;
  readonly waiting: number;
}

export function createHashGate(max: number, maxWaiting: number): HashGate {
  if (!Number.isInteger(max) || max < 1 || !Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError('a hash gate takes max ≥ 1 and maxWaiting ≥ 0 (whole numbers)');
  let running = 0;
  const queue: (() => void)[] = [];
  return {
    get running() {
      return running;
    },
    get waiting() {
      return queue.length;
    },
    async run(job) {
      if (running < max) running++;
      else if (queue.length >= maxWaiting) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'too many passwords are being checked at once; try again in a moment');
      else await new Promise<void>((resolve) => queue.push(resolve)); // the slot is handed over with `running` unchanged
      try {
        return await job();
      } finally {
        const next = queue.shift();
        if (next) next();
        else running--;
      }
    },
  };
}

let gate = createHashGate(DEFAULTS.passwordHashConcurrency, DEFAULTS.passwordHashQueue);

/** Sets this process's password-hashing limits (see {@link HashGate}); hashes already running or waiting finish under the old ones. */
export function limitPasswordHashing(max: number, maxWaiting: number): void {
  gate = createHashGate(max, maxWaiting);
}

/** This process's password-hashing gate now (what runs and waits; tests hold its slots). */
export function passwordHashGate(): HashGate {
  return gate;
}

/** Hashes `password` with argon2id at {@link ARGON2_OPTIONS}, as a PHC string (`$argon2id$v=19$m=19456,p=1,t=2$…`). */
export function hashPassword(password: string): Promise<string> {
  return gate.run(() => argon2.hash(password, ARGON2_OPTIONS));
}

/** A hash of a random password, verified against when the account does not exist, so timing does not tell. */
let dummyHash: Promise<string> | undefined;

/**
 * Verifies `password` against `hash`; with no usable hash (no account, or an account that signs in
 * only through Google/GitHub), spends the same time and returns false. Throws PAL_ERR_UNAVAILABLE
 * when too many hashes wait already ({@link HashGate}).
 */
export async function verifyPassword(hash: string | undefined, password: string): Promise<boolean> {
  if (hash === undefined || !hash.startsWith('$argon2')) {
    if (!dummyHash) {
      dummyHash = hashPassword(crypto.randomUUID());
      dummyHash.catch(() => (dummyHash = undefined)); // refused (too busy): made again next time
    }
    const dummy = await dummyHash;
    await gate.run(() => argon2.verify(dummy, password).catch(() => false));
    return false;
  }
  return gate.run(() => argon2.verify(hash, password).catch(() => false));
}
