/**
 * @module hot/memory — hot state in this process, for a single node. JavaScript runs one callback
 * at a time, so each operation is atomic as written. Every map is bounded: expired entries are
 * dropped as they are met and by a periodic sweep, and the oldest go first past `maxKeys`.
 */
import { EventEmitter } from 'node:events';
import { bump } from '../counts.ts';
import type { Escalation, HotStore, PresenceEntry, RateDecision, RateLimits, RateRule } from './types.ts';

export interface MemoryHotStoreOptions {
  /** Most entries per map. Default 100,000. */
  maxKeys?: number;
  now?: () => number;
}

interface Expiring<T> {
  value: T;
  expiresAt: number;
}

/** A Map whose entries expire, bounded to `maxKeys` (oldest first). */
class ExpiringMap<T> {
  readonly #map = new Map<string, Expiring<T>>();
  readonly #max: number;
  readonly #now: () => number;
  constructor(max: number, now: () => number) {
    this.#max = max;
    this.#now = now;
  }
  get(key: string): Expiring<T> | undefined {
    const e = this.#map.get(key);
    if (e && e.expiresAt <= this.#now()) {
      this.#map.delete(key);
      return undefined;
    }
    return e;
  }
  set(key: string, value: T, expiresAt: number): void {
    this.#map.delete(key);
    this.#map.set(key, { value, expiresAt });
    // Past the bound the oldest 1 % go at once: evicting one per insert would make every insert walk
    // the holes earlier deletions left at the front of the Map.
    if (this.#map.size > this.#max) {
      let n = Math.max(1, Math.ceil(this.#max / 100));
      for (const k of this.#map.keys()) {
        this.#map.delete(k);
        if (--n === 0) break;
      }
    }
  }
  delete(key: string): void {
    this.#map.delete(key);
  }
  sweep(): void {
    const t = this.#now();
    for (const [k, e] of this.#map) if (e.expiresAt <= t) this.#map.delete(k);
  }
  *entries(): IterableIterator<[string, T]> {
    const t = this.#now();
    for (const [k, e] of this.#map) if (e.expiresAt > t) yield [k, e.value];
  }
}

/**
 * Rate limits in this process (GCRA; the same arithmetic as the Redis script). Also the limiter a
 * node falls back to while Redis is unreachable, so an outage never means "allow all".
 */
export function createMemoryRateLimits(o: MemoryHotStoreOptions = {}): RateLimits & { sweep(): void } {
  const now = o.now ?? Date.now;
  const max = o.maxKeys ?? 100_000;
  const tats = new ExpiringMap<number>(max, now);
  const strikes = new ExpiringMap<number>(max, now);
  const blocks = new ExpiringMap<true>(max, now);
  return {
    consume(rules: RateRule[], escalation: Escalation): RateDecision {
      const t = now();
      for (let i = 0; i < rules.length; i++) {
        const b = blocks.get(rules[i]!.key);
        if (b) return { allowed: false, retryAfterMs: Math.max(1, Math.ceil(b.expiresAt - t)), remaining: 0, rule: i, blocked: true, newlyBlocked: false };
      }
      const next: number[] = [];
      let tightest = 0;
      let least = Infinity;
      for (let i = 0; i < rules.length; i++) {
        const r = rules[i]!;
        const interval = r.periodMs / r.limit;
        const tat = Math.max(tats.get(r.key)?.value ?? t, t) + interval;
        const over = tat - t - interval * r.burst;
        if (over > 0) {
          const s = strikes.get(r.key);
          const count = (s?.value ?? 0) + 1;
          if (count >= escalation.strikes) {
            strikes.delete(r.key);
            blocks.set(r.key, true, t + escalation.blockMs);
            return { allowed: false, retryAfterMs: escalation.blockMs, remaining: 0, rule: i, blocked: true, newlyBlocked: true };
          }
          strikes.set(r.key, count, s?.expiresAt ?? t + escalation.windowMs);
          return { allowed: false, retryAfterMs: Math.max(1, Math.ceil(over)), remaining: 0, rule: i, blocked: false, newlyBlocked: false };
        }
        next.push(tat);
        const left = Math.max(0, Math.floor(-over / interval));
        if (left < least) [least, tightest] = [left, i];
      }
      for (let i = 0; i < rules.length; i++) tats.set(rules[i]!.key, next[i]!, next[i]!);
      return { allowed: true, retryAfterMs: 0, remaining: least === Infinity ? 0 : least, rule: tightest, blocked: false, newlyBlocked: false };
    },
    sweep() {
      for (const m of [tats, strikes, blocks]) m.sweep();
    },
  };
}

export function createMemoryHotStore(o: MemoryHotStoreOptions = {}): HotStore {
  const max = o.maxKeys ?? 100_000;
  const now = o.now ?? Date.now;
  const counters = new ExpiringMap<number>(max, now);
  const revoked = new ExpiringMap<true>(max, now);
  const presence = new ExpiringMap<PresenceEntry>(max, now);
  const transient = new ExpiringMap<string>(max, now);
  const nodes = new ExpiringMap<true>(max, now);
  // Tallies: node → key → that node's share (one node in this process: a second appears only in tests).
  const shares = new Map<string, Map<string, number>>();
  const tallyOf = (self: string, key: string): number => {
    let n = 0;
    for (const [id, held] of shares) if (id === self || nodes.get(id) !== undefined) n += held.get(key) ?? 0;
    return n;
  };
  const rates = createMemoryRateLimits(o);
  const bus = new EventEmitter().setMaxListeners(0);
  const sweeper = setInterval(() => {
    for (const m of [counters, revoked, presence, transient, nodes, rates]) m.sweep();
  }, 60_000).unref();

  return {
    kind: 'memory',
    counters: {
      async attempt(limits, windowMs) {
        const current = limits.map(({ key }) => counters.get(key));
        const full = limits.findIndex(({ limit }, i) => (current[i]?.value ?? 0) >= limit);
        if (full >= 0) return { allowed: false, counts: current.map((c) => c?.value ?? 0), retryAfterMs: Math.max(1, current[full]!.expiresAt - now()) };
        const counts = limits.map(({ key }, i) => {
          const c = current[i];
          counters.set(key, (c?.value ?? 0) + 1, c?.expiresAt ?? now() + windowMs);
          return (c?.value ?? 0) + 1;
        });
        return { allowed: true, counts, retryAfterMs: 0 };
      },
      async release(key) {
        const c = counters.get(key);
        if (c && c.value > 0) counters.set(key, c.value - 1, c.expiresAt);
      },
      async reset(key) {
        counters.delete(key);
      },
      async peek(key) {
        return counters.get(key)?.value ?? 0;
      },
    },
    rates,
    revocations: {
      async revoke(id, ttlMs) {
        revoked.set(id, true, now() + ttlMs);
        bus.emit('revoke', id);
      },
      has: (id) => revoked.get(id) !== undefined,
      onRevoke(listener) {
        bus.on('revoke', listener);
        return () => bus.off('revoke', listener);
      },
    },
    presence: {
      async set(entry, ttlMs) {
        presence.set(entry.agentId, entry, now() + ttlMs);
      },
      async remove(agentId, nodeId) {
        if (presence.get(agentId)?.value.nodeId === nodeId) presence.delete(agentId);
      },
      async forUser(userId) {
        return [...presence.entries()].map(([, e]) => e).filter((e) => e.userId === userId);
      },
    },
    tallies: {
      async acquire(nodeId, limits) {
        const counts: number[] = [];
        for (const [i, { key, limit }] of limits.entries()) {
          counts.push(tallyOf(nodeId, key));
          if (counts[i]! >= limit) return { allowed: false, refused: i, counts };
        }
        let held = shares.get(nodeId);
        if (!held) shares.set(nodeId, (held = new Map()));
        for (const { key } of limits) bump(held, key, 1);
        return { allowed: true, refused: -1, counts: counts.map((c) => c + 1) };
      },
      async release(nodeId, keys) {
        const held = shares.get(nodeId);
        if (!held) return;
        for (const key of keys) bump(held, key, -1);
        if (held.size === 0) shares.delete(nodeId);
      },
      async replace(nodeId, given) {
        const held = new Map([...given].filter(([, n]) => n > 0));
        if (held.size > 0) shares.set(nodeId, held);
        else shares.delete(nodeId);
      },
      async count(nodeId, key) {
        return tallyOf(nodeId, key);
      },
    },
    nodes: {
      async beat(nodeId, ttlMs) {
        nodes.set(nodeId, true, now() + ttlMs);
      },
      async alive(nodeIds) {
        return new Set(nodeIds.filter((id) => nodes.get(id) !== undefined));
      },
    },
    bus: {
      async publish(topic, message) {
        bus.emit(`bus:${topic}`, message);
      },
      async subscribe(topic, handler) {
        bus.on(`bus:${topic}`, handler);
        return async () => void bus.off(`bus:${topic}`, handler);
      },
    },
    transient: {
      async put(key, value, ttlMs) {
        transient.set(key, value, now() + ttlMs);
      },
      async take(key) {
        const e = transient.get(key);
        transient.delete(key);
        return e?.value;
      },
    },
    async close() {
      clearInterval(sweeper);
      bus.removeAllListeners();
    },
  };
}
