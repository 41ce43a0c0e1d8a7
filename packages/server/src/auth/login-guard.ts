/**
 * @module auth/login-guard — limits password guessing, per account and per client IP, with counters
 * in the hot store (in-process or Redis, shared by every node).
 *
 * Each sign-in first *reserves* an attempt: both counters are checked and bumped in one atomic
 * step, so parallel guesses (on one node or many) can never get more password checks than the
 * limit. A success gives its reservation back (the account's counter is cleared, the IP's is
 * decremented); a failure keeps it. Past a few failures every further attempt waits longer (doubling)
 * before it is answered; at the limit the account or IP is locked for the rest of the window,
 * whatever the password, so a correct guess is no better than a wrong one. Counters do not depend on
 * whether the account exists, so neither the answers nor their timing tell an attacker that.
 */
import { createHash } from 'node:crypto';
import type { LoginLimits } from '../config.ts';
import type { Counters } from '../hot/types.ts';

export type LoginAttempt =
  | { allowed: false; retryAfterMs: number }
  | {
      allowed: true;
      /** How long to wait before answering this attempt (progressive delay), ms. */
      delayMs: number;
      /** The password was right: the reservation is given back. */
      succeed(): Promise<void>;
      /** The password was wrong: returns true if this failure locked the account or the IP. */
      fail(): Promise<boolean>;
      /** The password could not be checked (the server was too busy): the attempt is given back, uncounted. */
      abandon(): Promise<void>;
    };

export interface LoginGuard {
  begin(username: string, ip: string): Promise<LoginAttempt>;
}

const accountKey = (username: string) => `login:acct:${createHash('sha256').update(username.normalize('NFKC').toLowerCase()).digest('base64url')}`;
const ipKey = (ip: string) => `login:ip:${ip}`;

export function createLoginGuard(counters: Counters, limits: LoginLimits): LoginGuard {
  return {
    async begin(username, ip) {
      const acct = accountKey(username);
      const addr = ipKey(ip);
      const r = await counters.attempt([{ key: acct, limit: limits.perAccount }, { key: addr, limit: limits.perIp }], limits.windowMs);
      if (!r.allowed) return { allowed: false, retryAfterMs: r.retryAfterMs };
      const [accountCount = 0, ipCount = 0] = r.counts;
      const pastFree = accountCount - 1 - limits.freeFailures;
      return {
        allowed: true,
        delayMs: pastFree > 0 ? Math.min(limits.delayMs * 2 ** (pastFree - 1), limits.maxDelayMs) : 0,
        async succeed() {
          await Promise.all([counters.reset(acct), counters.release(addr)]);
        },
        async fail() {
          return accountCount >= limits.perAccount || ipCount >= limits.perIp;
        },
        async abandon() {
          await Promise.all([counters.release(acct), counters.release(addr)]);
        },
      };
    },
  };
}
