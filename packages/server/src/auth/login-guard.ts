/**
 * @module auth/login-guard — limits password guessing: failures are counted per username and per
 * client IP in a sliding window; past the limit, sign-in is refused for a while whatever the
 * password, so a correct guess is no better than a wrong one. Locks apply to usernames that do not
 * exist exactly as to those that do, so they reveal nothing. In-process; the Redis-backed version
 * with atomic counters shared by every node comes with issue 3.
 */

export interface LoginGuardOptions {
  /** Failures per username within the window before it is locked. Default 5. */
  perUsername?: number;
  /** Failures per IP within the window before it is locked. Default 20. */
  perIp?: number;
  /** Window and lock length, ms. Default 15 minutes. */
  windowMs?: number;
  /** Most keys tracked; the oldest are forgotten first. Default 100,000. */
  maxKeys?: number;
  now?: () => number;
}

export interface LoginGuard {
  /** Milliseconds until sign-in is allowed again for this username and IP; 0 when allowed. */
  lockedFor(username: string, ip: string): number;
  /** Records a failure; returns true if it locked the username or the IP just now. */
  fail(username: string, ip: string): boolean;
  /** Forgets the username's failures after a successful sign-in. */
  succeed(username: string): void;
}

export function createLoginGuard(o: LoginGuardOptions = {}): LoginGuard {
  const perUsername = o.perUsername ?? 5;
  const perIp = o.perIp ?? 20;
  const windowMs = o.windowMs ?? 15 * 60_000;
  const maxKeys = o.maxKeys ?? 100_000;
  const now = o.now ?? Date.now;
  const failures = new Map<string, number[]>();

  const recent = (key: string): number[] => {
    const t = now();
    const list = (failures.get(key) ?? []).filter((at) => t - at < windowMs);
    if (list.length === 0) failures.delete(key);
    else failures.set(key, list);
    return list;
  };
  const lockLeft = (key: string, limit: number): number => {
    const list = recent(key);
    return list.length >= limit ? windowMs - (now() - list[list.length - limit]!) : 0;
  };
  const userKey = (u: string) => `u:${u.toLowerCase()}`;
  const ipKey = (ip: string) => `ip:${ip}`;

  return {
    lockedFor: (username, ip) => Math.max(lockLeft(userKey(username), perUsername), lockLeft(ipKey(ip), perIp)),
    fail(username, ip) {
      let locked = false;
      for (const [key, limit] of [[userKey(username), perUsername], [ipKey(ip), perIp]] as const) {
        const list = recent(key);
        list.push(now());
        failures.delete(key);
        failures.set(key, list.slice(-limit));
        if (list.length === limit) locked = true;
      }
      while (failures.size > maxKeys) failures.delete(failures.keys().next().value!);
      return locked;
    },
    succeed(username) {
      failures.delete(userKey(username));
    },
  };
}
