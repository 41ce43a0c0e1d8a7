/**
 * @module hot/types — the hot-state port: short-lived, fast-changing state every node must agree
 * on. In-process for one node (`memory.ts`), Redis for many (`redis.ts`, Sentinel for failover).
 * Both pass one contract suite (`test/hot/contract.ts`).
 *
 *  - counters     attempt counters updated atomically (sign-in guessing limits)
 *  - rates        request-rate limits (GCRA), with temporary blocks for repeated abuse
 *  - revocations  revoked session ids, mirrored on every node so checks cost no round trip
 *  - presence     which agents are connected to which node
 *  - tallies      things held open across nodes, each node's share apart (connections per user,
 *                 per address), so a cap holds across the cluster and a dead node's share lapses
 *  - nodes        which nodes are alive (each beats within a time to live)
 *  - transient    one-time values with a time to live (upstream sign-in transactions)
 *  - bus          messages between nodes, by topic (a node's own topic addresses that node)
 *  - oidc         OAuth records (sessions, grants, refresh tokens…), Redis only: with Redis they
 *                 live there (AOF for durability); without it they stay in the durable store
 */
import type { OidcRepo } from '../store/types.ts';

/** One counter checked and bumped by `Counters.attempt`. */
export interface CounterLimit {
  key: string;
  /** Attempts allowed within the window. */
  limit: number;
}

export interface AttemptResult {
  /** True if every counter was under its limit, and all were bumped. */
  allowed: boolean;
  /** Each counter's value after the call (unchanged if refused), in the order given. */
  counts: number[];
  /** If refused, ms until the first full counter's window ends; else 0. */
  retryAfterMs: number;
}

export interface Counters {
  /**
   * Atomically: if every counter is under its limit, bumps them all (a counter's window starts at
   * its first attempt); otherwise changes nothing. Parallel callers can never pass a limit.
   */
  attempt(limits: CounterLimit[], windowMs: number): Promise<AttemptResult>;
  /** Takes one attempt back (never below zero): a success that should not count against a limit. */
  release(key: string): Promise<void>;
  /** Forgets a counter. */
  reset(key: string): Promise<void>;
  /** A counter's current value. */
  peek(key: string): Promise<number>;
}

/**
 * One rate limit, as a Generic Cell Rate Algorithm (GCRA) bucket: on average `limit` requests per
 * `periodMs`, of which up to `burst` may come at once. Its state is one timestamp per key.
 */
export interface RateRule {
  key: string;
  limit: number;
  periodMs: number;
  burst: number;
}

/** What happens to a key that keeps being refused: `strikes` refusals within `windowMs` block it for `blockMs`. */
export interface Escalation {
  strikes: number;
  windowMs: number;
  blockMs: number;
}

export interface RateDecision {
  allowed: boolean;
  /** If refused: ms until a request would be allowed (the block's end, if blocked). Else 0. */
  retryAfterMs: number;
  /** Requests left right now under the tightest rule (after this one, if allowed). */
  remaining: number;
  /** Index of the rule that refused, or of the tightest rule if allowed. */
  rule: number;
  /** Refused because a rule's key is blocked (repeated abuse). */
  blocked: boolean;
  /** This refusal was the strike that blocked the key (reported once, for the security event). */
  newlyBlocked: boolean;
}

export interface RateLimits {
  /**
   * Atomically, in one step (one round trip on Redis): refuses if any rule's key is blocked or over
   * its rate; otherwise takes one request from every rule. A refusal counts a strike against the
   * refusing key, and `escalation.strikes` of them block it. In-process buckets answer synchronously
   * (the OAuth endpoints then take no extra turn of the event loop).
   */
  consume(rules: RateRule[], escalation: Escalation): RateDecision | Promise<RateDecision>;
}

export interface Revocations {
  /** Marks `id` revoked for `ttlMs` and tells every node. */
  revoke(id: string, ttlMs: number): Promise<void>;
  /** Whether `id` is revoked, from this node's mirror (no round trip). */
  has(id: string): boolean;
  /** Called on this node for each revocation, from any node. Returns an unsubscribe function. */
  onRevoke(listener: (id: string) => void): () => void;
}

export interface PresenceEntry {
  agentId: string;
  userId: string;
  nodeId: string;
  since: string;
  /** Origins the agent was granted (so another node can route a task to it). */
  grants?: string[] | undefined;
}

export interface Presence {
  /** Records (or refreshes) that an agent is connected to a node, for `ttlMs`. */
  set(entry: PresenceEntry, ttlMs: number): Promise<void>;
  /** Forgets the agent's presence if `nodeId` still holds it. */
  remove(agentId: string, nodeId: string): Promise<void>;
  /** The live entries of a user's agents. */
  forUser(userId: string): Promise<PresenceEntry[]>;
}

export interface TallyResult {
  /** True if every tally was under its limit, and this node's share of each was raised by one. */
  allowed: boolean;
  /** If refused, the index of the first tally at its limit; else -1. */
  refused: number;
  /** Each tally's count over the live nodes after the call (unchanged if refused; up to the refused one). */
  counts: number[];
}

/**
 * A node's shares not written (acquired, released or replaced) for this long may be forgotten by
 * the store (Redis: the hash expires); a node holding shares replaces them more often than that.
 */
export const TALLY_SHARES_TTL_MS = 5 * 60_000;

/**
 * Things held open across the cluster, such as connections per user and per address. Each node's
 * share is kept apart and counts only while the node is alive (it beats, see {@link Nodes}; the
 * node asking always counts), so what a node held when it died stops counting once its beat lapses.
 * A node's own bookkeeping is the truth of its share: `replace` writes it whole, which mends what a
 * lost reply, a failover or a restart of the store left wrong.
 */
export interface Tallies {
  /**
   * Atomically: if every tally's count over the live nodes is under its limit, raises `nodeId`'s
   * share of each by one; otherwise changes nothing. Parallel callers, on any node, never pass a limit.
   */
  acquire(nodeId: string, limits: CounterLimit[]): Promise<TallyResult>;
  /** Lowers `nodeId`'s share of each key by one (a key listed twice, by two); never below zero. */
  release(nodeId: string, keys: readonly string[]): Promise<void>;
  /** Sets `nodeId`'s shares to exactly `shares` (key → count; keys not in it go to zero). */
  replace(nodeId: string, shares: ReadonlyMap<string, number>): Promise<void>;
  /** A tally's count over the live nodes, `nodeId` counted. */
  count(nodeId: string, key: string): Promise<number>;
}

/** Which nodes are alive: each beats within a time to live, and is gone when it stops beating. */
export interface Nodes {
  /** Records that `nodeId` is alive for `ttlMs`. */
  beat(nodeId: string, ttlMs: number): Promise<void>;
  /** The ones of `nodeIds` that are alive. */
  alive(nodeIds: string[]): Promise<Set<string>>;
}

export interface Transient {
  /** Stores `value` under `key` for `ttlMs`. */
  put(key: string, value: string, ttlMs: number): Promise<void>;
  /** Returns and deletes the value atomically: of two concurrent takers, one gets it. */
  take(key: string): Promise<string | undefined>;
}

/**
 * Messages between nodes, by topic: every subscriber of a topic, on any node, receives what is
 * published on it from then on (at most once: a node that is down or not yet subscribed misses it,
 * so what must not be lost lives in the durable store and the message only says "look"). Messages
 * from one publisher on one topic arrive in order.
 */
export interface Bus {
  publish(topic: string, message: string): Promise<void>;
  /** Starts receiving `topic`; resolves once subscribed. Returns a function that stops it. */
  subscribe(topic: string, handler: (message: string) => void): Promise<() => Promise<void>>;
}

export interface HotStore {
  readonly kind: 'memory' | 'redis';
  readonly counters: Counters;
  readonly rates: RateLimits;
  readonly revocations: Revocations;
  readonly presence: Presence;
  readonly tallies: Tallies;
  readonly nodes: Nodes;
  readonly transient: Transient;
  readonly bus: Bus;
  /** OAuth records, when this store holds them (Redis); otherwise the durable store does. */
  readonly oidc?: OidcRepo | undefined;
  close(): Promise<void>;
}
