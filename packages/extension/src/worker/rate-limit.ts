/**
 * @module worker/rate-limit — token buckets keyed by origin, by tab and globally, for runtime
 * messages. A message passes only if every bucket it falls in has a token; only then are the
 * tokens taken, so a refused message costs nothing. The clock is injectable for tests.
 */

/** Limits per minute. Defaults: 100 per origin, 500 per tab, 1000 overall. */
export interface RateLimits {
  perOrigin: number;
  perTab: number;
  global: number;
}

export const DEFAULT_RATE_LIMITS: RateLimits = { perOrigin: 100, perTab: 500, global: 1000 };

/** At most this many keys are tracked per dimension; full (idle) buckets are dropped first. */
export const MAX_TRACKED_KEYS = 4096;

const WINDOW_MS = 60_000;

interface Bucket {
  tokens: number;
  at: number;
}

/** Which limit refused a message. */
export type LimitName = 'origin' | 'tab' | 'global';

/** One token bucket per key: capacity `limit`, refilled at `limit` per minute. */
class Buckets {
  readonly #limit: number;
  readonly #map = new Map<string, Bucket>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  #current(key: string, now: number): Bucket {
    const b = this.#map.get(key);
    if (!b) return { tokens: this.#limit, at: now };
    const refill = ((now - b.at) * this.#limit) / WINDOW_MS;
    return { tokens: Math.min(this.#limit, b.tokens + Math.max(0, refill)), at: now };
  }

  has(key: string, now: number): boolean {
    return this.#current(key, now).tokens >= 1;
  }

  take(key: string, now: number): void {
    const b = this.#current(key, now);
    b.tokens -= 1;
    this.#map.delete(key);
    this.#map.set(key, b);
    if (this.#map.size > MAX_TRACKED_KEYS) this.#evict(now);
  }

  #evict(now: number): void {
    for (const [k] of this.#map) {
      if (this.#current(k, now).tokens >= this.#limit) this.#map.delete(k);
    }
    // Still too many: drop the least recently used.
    while (this.#map.size > MAX_TRACKED_KEYS) {
      const oldest = this.#map.keys().next().value;
      if (oldest === undefined) break;
      this.#map.delete(oldest);
    }
  }

  get size(): number {
    return this.#map.size;
  }
}

/**
 * Rate limiter for runtime messages.
 * @example const limiter = new RateLimiter(); if (limiter.consume({ origin, tab }) !== undefined) refuse();
 */
export class RateLimiter {
  readonly limits: RateLimits;
  readonly #now: () => number;
  readonly #origin: Buckets;
  readonly #tab: Buckets;
  readonly #global: Buckets;

  constructor(limits: Partial<RateLimits> = {}, now: () => number = Date.now) {
    this.limits = { ...DEFAULT_RATE_LIMITS, ...limits };
    this.#now = now;
    this.#origin = new Buckets(this.limits.perOrigin);
    this.#tab = new Buckets(this.limits.perTab);
    this.#global = new Buckets(this.limits.global);
  }

  /**
   * Takes one token from each bucket the message falls in. Returns `undefined` if it passes,
   * or the name of the first limit that refused it (then nothing is taken).
   */
  consume(key: { origin?: string | undefined; tab?: number | undefined }): LimitName | undefined {
    const now = this.#now();
    const tabKey = key.tab === undefined ? undefined : String(key.tab);
    if (!this.#global.has('*', now)) return 'global';
    if (tabKey !== undefined && !this.#tab.has(tabKey, now)) return 'tab';
    if (key.origin !== undefined && !this.#origin.has(key.origin, now)) return 'origin';
    this.#global.take('*', now);
    if (tabKey !== undefined) this.#tab.take(tabKey, now);
    if (key.origin !== undefined) this.#origin.take(key.origin, now);
    return undefined;
  }

  /** Number of keys currently tracked (bounded by `MAX_TRACKED_KEYS` per dimension). */
  get trackedKeys(): number {
    return this.#origin.size + this.#tab.size + this.#global.size;
  }
}
