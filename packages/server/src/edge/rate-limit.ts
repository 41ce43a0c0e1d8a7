/**
 * @module edge/rate-limit — request-rate limits by endpoint class, per client IP and per principal,
 * over the hot store's GCRA buckets (in-process, or Redis: one round trip per check, shared by every
 * node). Repeated refusals of one key block it for a while; every block is a security event.
 *
 * If the hot store is unreachable the node falls back to a local, in-process limiter with the same
 * rates (an "insurance" limiter): an outage never turns into "allow all".
 *
 * A node remembers, for as long as the answer said, which addresses the shared buckets refused
 * (`refusing`): a caller that checks an address late (the API checks it with the principal's, after
 * the token, in one round trip) checks such an address first instead.
 */
import { PalisadeError } from '@palisade/protocol';
import type { RateClass, RateLimitConfig, RateSpec } from '../config.ts';
import type { RateDecision, RateLimits, RateRule } from '../hot/types.ts';
import { createMemoryRateLimits } from '../hot/memory.ts';
import type { SecurityEvents } from '../siem/events.ts';

/** Who is asking: the client IP, and the principal once known (`client:<id>`, `user:<id>`). */
export interface RateSubject {
  ip: string;
  principal?: string | undefined;
  /** Check only the principal's rate (the IP's was checked earlier in the same request). Else both, in one check: a refusal by either takes from neither. */
  principalOnly?: boolean;
}

export interface RateVerdict extends RateDecision {
  /** `RateLimit-Policy` and `RateLimit` header values (draft-ietf-httpapi-ratelimit-headers), and `Retry-After` when refused. */
  headers: [string, string][];
  /** Whose bucket the verdict is about (`rule`): the address's or the principal's. */
  by?: 'ip' | 'principal';
}

export interface RateLimiter {
  /**
   * Checks (and takes from) the class's buckets for `subject`. Never throws for a store outage.
   * Synchronous when the buckets are in-process; a promise when they are in Redis.
   */
  check(cls: RateClass, subject: RateSubject): RateVerdict | Promise<RateVerdict>;
  /**
   * Whether a check on this node was refused by `ip`'s bucket of `cls` and told to retry after a
   * time not yet reached. No round trip; other nodes' refusals are not seen (their checks still are:
   * the bucket itself is shared).
   */
  refusing(cls: RateClass, ip: string): boolean;
}

export interface RateLimiterOptions {
  config: RateLimitConfig;
  /** The shared buckets (the hot store's). */
  rates: RateLimits;
  /** Whether `rates` can be unreachable (Redis): then a local limiter stands in during outages. */
  remote: boolean;
  events: SecurityEvents;
  /** Called with the store error the first time the fallback is used in an outage. */
  onFallback?: (err: unknown) => void;
}

const ALLOWED: RateVerdict = { allowed: true, retryAfterMs: 0, remaining: 0, rule: 0, blocked: false, newlyBlocked: false, headers: [] };
/** A refused key is reported at most this often (blocks always are). */
const REPORT_EVERY_MS = 10_000;
const MAX_REPORTED = 10_000;
/** Most refused addresses remembered by `refusing` (past it the memory starts again: it only orders checks). */
const MAX_REFUSING = 10_000;
/**
 * An address refused is remembered at least this long, ms: a refusal's retry time can be a few ms
 * (the next slot), and a flood would otherwise slip back to the late check between two refusals.
 * Remembering longer only orders an address's checks (the bucket still decides).
 */
const REFUSING_MIN_MS = 1000;
/** After the store fails, this node uses its local limiter for this long before trying the store again. */
const RETRY_STORE_AFTER_MS = 1000;

/** The error a refusal becomes: 429 `PAL_ERR_RATE_LIMITED`. */
export function rateLimitError(v: RateVerdict): PalisadeError {
  const seconds = Math.ceil(v.retryAfterMs / 1000);
  return new PalisadeError('PAL_ERR_RATE_LIMITED', v.blocked
    ? `too many refused requests: temporarily blocked; retry in ${seconds} s`
    : `too many requests; retry in ${seconds} s`);
}

export function createRateLimiter(o: RateLimiterOptions): RateLimiter {
  const { config, events } = o;
  const local = o.remote ? createMemoryRateLimits() : undefined;
  let outage = false;
  let retryStoreAt = 0;
  const reported = new Map<string, number>();
  /** `<class> <ip>` → when its bucket's refusal ends (ms since the epoch). */
  const refusedIps = new Map<string, number>();

  /** The shared buckets; in an outage, `fallback` (this node's own) answers instead. */
  const remote = async (rules: RateRule[], fallback: RateLimits): Promise<RateDecision> => {
    try {
      const d = await o.rates.consume(rules, config.escalation);
      outage = false;
      return d;
    } catch (e) {
      if (!(e instanceof PalisadeError) || e.code !== 'PAL_ERR_UNAVAILABLE') throw e;
      retryStoreAt = Date.now() + RETRY_STORE_AFTER_MS;
      if (!outage) {
        outage = true;
        o.onFallback?.(e);
        events.emit({ class: 'api_activity', activity: 'ratelimit.fallback', outcome: 'failure', severity: 'high', code: e.code, message: 'the rate-limit store is unreachable: this node limits requests on its own until it returns' });
      }
      return fallback.consume(rules, config.escalation);
    }
  };
  const consume = (rules: RateRule[]): RateDecision | Promise<RateDecision> => {
    if (!local) return o.rates.consume(rules, config.escalation);
    // While the store is down, requests do not each wait for it to time out.
    if (outage && Date.now() < retryStoreAt) return local.consume(rules, config.escalation);
    return remote(rules, local);
  };

  const report = (cls: RateClass, key: string, d: RateDecision, subject: RateSubject) => {
    const t = Date.now();
    if (!d.newlyBlocked) {
      if ((reported.get(key) ?? 0) > t) return;
      if (reported.size >= MAX_REPORTED) reported.clear();
      reported.set(key, t + REPORT_EVERY_MS);
    }
    events.emit({
      class: 'api_activity',
      activity: d.newlyBlocked ? 'ratelimit.block' : 'ratelimit.refused',
      outcome: 'failure',
      severity: d.newlyBlocked ? 'high' : 'low',
      code: 'PAL_ERR_RATE_LIMITED',
      message: d.newlyBlocked ? `${key} blocked for ${Math.round(config.escalation.blockMs / 1000)} s after repeated refusals` : `${key} over its ${cls} rate`,
      src: { ip: subject.ip },
      data: { class: cls, key, retryAfterMs: d.retryAfterMs },
    });
  };

  return {
    refusing(cls, ip) {
      const key = `${cls} ${ip}`;
      const until = refusedIps.get(key);
      if (until === undefined) return false;
      if (until > Date.now()) return true;
      refusedIps.delete(key);
      return false;
    },
    check(cls, subject) {
      if (!config.enabled) return ALLOWED;
      const specs = config.classes[cls];
      const rules: RateRule[] = [];
      const names: string[] = [];
      const add = (name: string, key: string, spec: RateSpec | undefined) => {
        if (!spec) return;
        rules.push({ key: `rl:${cls}:${key}`, ...spec });
        names.push(name);
      };
      if (!subject.principalOnly) add(`${cls}-ip`, `ip:${subject.ip}`, specs.ip);
      if (subject.principal !== undefined) add(`${cls}-principal`, `p:${subject.principal}`, specs.principal);
      if (rules.length === 0) return ALLOWED;
      const d = consume(rules);
      return d instanceof Promise ? d.then((x) => verdict(cls, subject, rules, names, x)) : verdict(cls, subject, rules, names, d);
    },
  };

  function verdict(cls: RateClass, subject: RateSubject, rules: RateRule[], names: string[], d: RateDecision): RateVerdict {
    const rule = rules[d.rule]!;
    const name = names[d.rule]!;
    const interval = rule.periodMs / rule.limit;
    const headers: [string, string][] = [
      ['ratelimit-policy', `"${name}";q=${rule.limit};w=${Math.round(rule.periodMs / 1000)}`],
      ['ratelimit', `"${name}";r=${d.remaining};t=${Math.ceil((d.allowed ? interval * (rule.burst - d.remaining) : d.retryAfterMs) / 1000)}`],
    ];
    if (!d.allowed) {
      headers.push(['retry-after', String(Math.max(1, Math.ceil(d.retryAfterMs / 1000)))]);
      report(cls, rule.key, d, subject);
      if (name === `${cls}-ip`) {
        if (refusedIps.size >= MAX_REFUSING) refusedIps.clear();
        refusedIps.set(`${cls} ${subject.ip}`, Date.now() + Math.max(d.retryAfterMs, REFUSING_MIN_MS));
      }
    }
    return { ...d, headers, by: name === `${cls}-ip` ? 'ip' : 'principal' };
  }
}
