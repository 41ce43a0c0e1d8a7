/**
 * @module hot/redis — hot state in Redis (`ioredis`), shared by every node; a standalone server or
 * a Sentinel-managed primary. Each operation is one round trip: multi-key changes are Lua scripts
 * (run atomically by Redis) or MULTI pipelines. Every key starts with the configured prefix.
 *
 * Keys (P = prefix):
 *   P:cnt:<key>                    attempt counter (INCR, window TTL set on the first attempt)
 *   P:rl:<key>, :s, :b             rate limit: GCRA arrival time (ms), strikes, block (all with TTLs)
 *   P:revoked                      sorted set: revoked id → expiry (ms); channel P:revoked tells nodes
 *   P:presence:agent:<id>          JSON presence entry, TTL; P:presence:user:<uid> set of agent ids
 *   P:tmp:<key>                    one-time values (GETDEL)
 *   P:node:<id>                    a live node's beat (TTL); P:nodes sorted set: node id → beat's end (ms)
 *   P:tally:<node id>              hash: tally key → that node's share (TTL TALLY_SHARES_TTL_MS, renewed by writes)
 *   P:bus:<topic>                  pub/sub channel of a bus topic (no key)
 *   P:oidc:<model>:<id>            JSON OAuth record, expiring with it; lookups by user code and
 *   P:oidc:<model>:uc:<code>/uid:<uid>, sets P:oidc:grant:<grantId> and P:oidc:acct:<model>:<account>
 *
 * Failure is closed: a command that cannot reach Redis (down, failing over, timed out) rejects with
 * PAL_ERR_UNAVAILABLE; ioredis reconnects on its own (and follows Sentinel to the new primary).
 * Bus messages published while a node's subscriber connection was down are lost to it: once it is
 * back, each topic's handlers get an empty message, meaning "read again what matters".
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { PalisadeError } from '@palisade/protocol';
import type { OidcRecord, OidcRepo } from '../store/types.ts';
import { TALLY_SHARES_TTL_MS, type HotStore, type PresenceEntry } from './types.ts';

export interface RedisHotStoreOptions {
  /** `redis://[:password@]host:port[/db]` (or `rediss://` for TLS). Ignored when `sentinels` is set. */
  url?: string;
  /** Sentinel addresses; with them, `sentinelName` names the monitored primary. */
  sentinels?: { host: string; port: number }[];
  sentinelName?: string;
  /** Key prefix, so several deployments (or tests) share one Redis. Default `palisade`. */
  prefix?: string;
  /** A command not answered within this many ms fails (closed). Default 2000. */
  commandTimeoutMs?: number;
  /** Extra ioredis options (TLS, passwords). */
  redisOptions?: RedisOptions;
  /**
   * Writes a failover must not lose (OAuth records: sessions, grants, refresh tokens and their
   * rotation; revocations) are acknowledged only once this many replicas have them (Redis WAIT), or
   * `replicaWaitMs` has passed. Default: 1 with Sentinel (a failover promotes a replica: what it
   * lacks is lost), else 0 (no wait).
   */
  replicaWaits?: number;
  /** How long such a write waits for its replicas (ms), below `commandTimeoutMs`. Default 1000 (or half the command timeout if less). */
  replicaWaitMs?: number;
  /**
   * Told when such a write was not on enough replicas in time. The write stands (it is on the
   * primary) and the request goes on: refusing it would leave its effect without an answer (a
   * consumed refresh token the client cannot replace); the loss is only possible if the primary
   * dies before the replica catches up.
   */
  onReplicaShortfall?: (info: { write: string; replicas: number; wanted: number }) => void;
}

/** Unsubscribes from bus topics wait at most this long, to go to Redis together (ms). */
export const UNSUBSCRIBE_BATCH_MS = 20;
/** After a write its replicas did not confirm in time, writes do not wait for them for this long (ms). */
export const REPLICA_SHORT_MS = 5000;
/** A client ioredis has ended while its store is open is started again after this long (ms). */
export const REVIVE_MS = 500;

/** Sorted-set trim is done on write, at most this often per node. */
const TRIM_EVERY_MS = 60_000;

// KEYS: counters; ARGV[1]: window ms; ARGV[1 + i]: limit of KEYS[i].
// Returns {allowed (0|1), retryAfterMs, count1, count2, …}.
const ATTEMPT = `
local counts = {}
for i, k in ipairs(KEYS) do counts[i] = tonumber(redis.call('GET', k) or '0') end
for i, k in ipairs(KEYS) do
  if counts[i] >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', k)
    if ttl < 1 then ttl = 1 end
    return {0, ttl, unpack(counts)}
  end
end
for i, k in ipairs(KEYS) do
  counts[i] = redis.call('INCR', k)
  if counts[i] == 1 then redis.call('PEXPIRE', k, ARGV[1]) end
end
return {1, 0, unpack(counts)}`;

const RELEASE = `
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > 0 then redis.call('DECR', KEYS[1]) end
return 0`;

// KEYS[1]: presence entry; KEYS[2]: the user's set. ARGV[1]: node id; ARGV[2]: agent id.
const PRESENCE_REMOVE = `
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).nodeId == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 0`;

// KEYS[1]: the user's set of present agents. ARGV[1]: the prefix of entry keys (+ agent id).
// Returns the entries still live; forgets the ids whose entry expired. One round trip instead of
// SMEMBERS then MGET. (It reads keys named by the set's members: fine on one Redis or with
// Sentinel, not on Redis Cluster.)
const PRESENCE_FOR_USER = `
local ids = redis.call('SMEMBERS', KEYS[1])
local out, gone = {}, {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then out[#out + 1] = v else gone[#gone + 1] = id end
end
for i = 1, #gone, 1000 do redis.call('SREM', KEYS[1], unpack(gone, i, math.min(i + 999, #gone))) end
return out`;

// A node's beat, on Redis's clock so every node agrees. KEYS[1]: its beat key; KEYS[2]: the
// sorted set of nodes. ARGV[1]: node id; ARGV[2]: time to live (ms).
const BEAT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], '1', 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return 0`;

// Tallies. KEYS[1]: the sorted set of nodes; KEYS[2]: this node's shares. ARGV[1]: this node's
// id; ARGV[2]: the prefix of shares keys (+ node id); ARGV[3]: 1 to acquire, 0 to count; ARGV[4]:
// the shares' time to live (ms); ARGV[3 + 2i], ARGV[4 + 2i]: tally key i and its limit. Counts this
// node's share and those of the nodes whose beat has not lapsed. (It reads keys named by the set's
// members: fine on one Redis or with Sentinel, not on Redis Cluster.)
// Returns {allowed, refused index (0-based) or -1, counts…}.
const TALLY = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local others = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if id ~= ARGV[1] then others[#others + 1] = ARGV[2] .. id end
end
local n = (#ARGV - 4) / 2
local counts = {}
for i = 1, n do
  local key = ARGV[3 + 2 * i]
  local c = tonumber(redis.call('HGET', KEYS[2], key) or '0')
  for _, shares in ipairs(others) do c = c + tonumber(redis.call('HGET', shares, key) or '0') end
  counts[i] = c
  if ARGV[3] == '1' and c >= tonumber(ARGV[4 + 2 * i]) then return {0, i - 1, unpack(counts)} end
end
if ARGV[3] == '1' then
  for i = 1, n do
    redis.call('HINCRBY', KEYS[2], ARGV[3 + 2 * i], 1)
    counts[i] = counts[i] + 1
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1, -1, unpack(counts)}`;

// KEYS[1]: a node's shares. ARGV[1]: their time to live (ms); ARGV[2…]: tally keys, each taken down
// by one (never below zero).
const TALLY_RELEASE = `
for i = 2, #ARGV do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0`;

// KEYS[1]: a node's shares. ARGV[1]: their time to live (ms); ARGV[2…]: key, count, key, count…
// Replaces the shares whole.
const TALLY_REPLACE = `
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2000 do redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV))) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0`;

// KEYS[1]: record. ARGV[1]: now (s). Marks the record consumed, keeping its TTL.
const CONSUME = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
r.payload.consumed = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')
return 1`;

// Rate limits (GCRA), the same arithmetic as createMemoryRateLimits, on Redis's clock so every node agrees.
// KEYS: per rule i, 3i+1 arrival time, 3i+2 strikes, 3i+3 block.
// ARGV[1..3]: strikes to block, strike window ms, block ms; ARGV[4 + 2i]: interval ms, ARGV[5 + 2i]: burst.
// Returns {allowed, retryAfterMs, remaining, rule (0-based), blocked, newlyBlocked}.
const RATE = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local n = #KEYS / 3
for i = 0, n - 1 do
  local ttl = redis.call('PTTL', KEYS[3 * i + 3])
  if ttl > 0 then return {0, ttl, 0, i, 1, 0} end
end
local nexts = {}
local tightest, least = 0, -1
for i = 0, n - 1 do
  local interval = tonumber(ARGV[4 + 2 * i])
  local burst = tonumber(ARGV[5 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[3 * i + 1]) or '0')
  if tat < now then tat = now end
  tat = tat + interval
  local over = tat - now - interval * burst
  if over > 0 then
    local strikes = redis.call('INCR', KEYS[3 * i + 2])
    if strikes == 1 then redis.call('PEXPIRE', KEYS[3 * i + 2], ARGV[2]) end
    if strikes >= tonumber(ARGV[1]) then
      redis.call('DEL', KEYS[3 * i + 2])
      redis.call('SET', KEYS[3 * i + 3], '1', 'PX', ARGV[3])
      return {0, tonumber(ARGV[3]), 0, i, 1, 1}
    end
    return {0, math.max(1, math.ceil(over)), 0, i, 0, 0}
  end
  nexts[i] = tat
  local left = math.floor(-over / interval)
  if least < 0 or left < least then least, tightest = left, i end
end
for i = 0, n - 1 do
  redis.call('SET', KEYS[3 * i + 1], string.format('%.3f', nexts[i]), 'PX', math.max(1, math.ceil(nexts[i] - now)))
end
return {1, 0, math.max(least, 0), tightest, 0, 0}`;

/** Runs a Lua script by its SHA-1, loading it on first use (or after a Redis restart). */
function script(source: string) {
  const sha = createHash('sha1').update(source).digest('hex');
  return async (redis: Redis, keys: string[], args: (string | number)[]): Promise<unknown> => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
      // Redis's EVAL (a Lua script run by the Redis server), not JavaScript's eval.
      return redis.call('EVAL', source, keys.length, ...keys, ...args);
    }
  };
}
const attemptScript = script(ATTEMPT);
const releaseScript = script(RELEASE);
const presenceRemoveScript = script(PRESENCE_REMOVE);
const presenceForUserScript = script(PRESENCE_FOR_USER);
const consumeScript = script(CONSUME);
const beatScript = script(BEAT);
const tallyScript = script(TALLY);
const tallyReleaseScript = script(TALLY_RELEASE);
const tallyReplaceScript = script(TALLY_REPLACE);
const rateScript = script(RATE);

/** Connects (waiting for the first connection), loads the revocation mirror, and returns the store. */
export async function openRedisHotStore(o: RedisHotStoreOptions): Promise<HotStore> {
  const prefix = o.prefix ?? 'palisade';
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) throw new Error(`invalid Redis key prefix "${prefix}"`);
  const P = `${prefix}:`;
  const wanted = o.replicaWaits ?? (o.sentinels ? 1 : 0);
  const commandTimeoutMs = o.commandTimeoutMs ?? 2000;
  const waitMs = o.replicaWaitMs ?? Math.min(1000, Math.floor(commandTimeoutMs / 2));
  if (!Number.isInteger(wanted) || wanted < 0) throw new Error(`replicaWaits must be a whole number ≥ 0 (got ${wanted})`);
  if (wanted > 0 && !(waitMs > 0 && waitMs < commandTimeoutMs)) throw new Error(`replicaWaitMs must be positive and below the command timeout, ${commandTimeoutMs} ms (got ${waitMs})`);
  const options: RedisOptions = {
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: 3000,
    // At most 2 s between attempts (tasks/service.ts counts on it: REDIS_RECONNECT_MAX_MS).
    retryStrategy: (times) => Math.min(100 * times, 2000),
    // After a failover the old primary comes back as a read-only replica: reconnect (Sentinel
    // then names the new primary).
    reconnectOnError: (err) => err.message.startsWith('READONLY'),
    lazyConnect: true,
    // A Sentinel that takes a connection but does not answer must not hold a reconnect for ever
    // (ioredis waits without limit by default): past this the next Sentinel is asked.
    ...(o.sentinels ? { sentinels: o.sentinels, name: o.sentinelName ?? 'mymaster', failoverDetector: true, sentinelCommandTimeout: 2000 } : {}),
    ...o.redisOptions,
  };
  const redis = o.sentinels ? new Redis(options) : new Redis(o.url ?? 'redis://127.0.0.1:6379', options);
  const sub = redis.duplicate();
  // Errors surface on each command (as PAL_ERR_UNAVAILABLE); the connection's own error events
  // must not crash the process while ioredis reconnects.
  let connectError: unknown;
  redis.on('error', (e: unknown) => {
    connectError ??= e;
  });
  sub.on('error', () => undefined);
  try {
    await redis.connect();
    await sub.connect();
  } catch (e) {
    redis.disconnect();
    sub.disconnect();
    // The first connection error names the cause (refused, a certificate not trusted…), what the operator must fix.
    const first = connectError ?? e;
    const cause = first instanceof Error ? `: ${(first as NodeJS.ErrnoException).code ? `${(first as NodeJS.ErrnoException).code} ` : ''}${first.message}` : '';
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `Redis is unreachable (${o.sentinels ? `sentinels ${o.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}` : o.url?.replace(/\/\/[^@/]*@/, '//…@') ?? 'redis://127.0.0.1:6379'})${cause}`, { internal: e });
  }

  let closing = false;
  reviveWhenEnded(redis, () => closing);
  reviveWhenEnded(sub, () => closing);

  /**
   * After a write a failover must not lose: wait for the replicas (see `replicaWaits`). Once a wait
   * falls short (a replica down, or a new primary left without one after a failover), the writes of
   * the next REPLICA_SHORT_MS do not wait: each would wait the whole `replicaWaitMs` for a replica
   * that is not there. The first write after that waits again, and so finds out whether it is back.
   */
  let shortUntil = 0;
  const replicated = async (write: string): Promise<void> => {
    if (wanted === 0 || Date.now() < shortUntil) return;
    const replicas = await run(() => redis.wait(wanted, waitMs));
    if (replicas >= wanted) return;
    shortUntil = Date.now() + REPLICA_SHORT_MS;
    o.onReplicaShortfall?.({ write, replicas, wanted });
  };

  /** Every command: an unreachable Redis becomes PAL_ERR_UNAVAILABLE (fail closed, retryable). */
  const run = async <T>(op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (e) {
      if (e instanceof ReplyError && !/^(READONLY|LOADING|MASTERDOWN|TRYAGAIN)/.test((e as Error).message)) throw e;
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the hot-state store (Redis) is unreachable; try again shortly', { internal: e });
    }
  };

  // Revocations: a local mirror, loaded on every (re)connection of the subscriber and fed by pub/sub.
  const revokedKey = `${P}revoked`;
  const mirror = new Map<string, number>();
  const bus = new EventEmitter().setMaxListeners(0);
  const reload = async () => {
    const rows = await redis.zrangebyscore(revokedKey, Date.now(), '+inf', 'WITHSCORES');
    for (let i = 0; i + 1 < rows.length; i += 2) {
      const id = rows[i]!;
      if (!mirror.has(id)) bus.emit('revoke', id);
      mirror.set(id, Number(rows[i + 1]));
    }
  };
  // Bus topics: one Redis subscription per topic, shared by this node's handlers.
  const topics = new Map<string, { handlers: Set<(message: string) => void>; ready: Promise<void> }>();
  sub.on('message', (channel: string, message: string) => {
    if (channel !== revokedKey) {
      for (const h of topics.get(channel)?.handlers ?? []) h(message);
      return;
    }
    const sep = message.indexOf(' ');
    const id = message.slice(sep + 1);
    mirror.set(id, Number(message.slice(0, sep)));
    bus.emit('revoke', id);
  });
  // Channels whose unsubscribe failed, or whose subscribe timed out (Redis unreachable or stalled:
  // it may still do either later), held by no topic: unsubscribed with the next batch, or on
  // reconnecting (ioredis would subscribe them again).
  const unsubscribeLater = new Set<string>();
  // Unsubscribes are sent together, one command every UNSUBSCRIBE_BATCH_MS: a task's topic is
  // dropped when it ends, and one command per task was a round trip (a socket write) per task.
  // Messages that arrive meanwhile find no handler and are dropped, as after an unsubscribe.
  const toUnsubscribe = new Set<string>();
  let unsubscribeTimer: NodeJS.Timeout | undefined;
  const flushUnsubscribes = async () => {
    unsubscribeTimer = undefined;
    // With them, channels an earlier unsubscribe (or subscribe) may have left behind in Redis.
    const channels = [...new Set([...toUnsubscribe, ...unsubscribeLater])].filter((ch) => !topics.has(ch));
    toUnsubscribe.clear();
    unsubscribeLater.clear();
    if (channels.length === 0) return;
    try {
      await run(() => sub.unsubscribe(...channels));
    } catch {
      // Timed out, it may still reach Redis after a subscribe sent meanwhile — or not: whichever
      // are not taken again by then go in the next batch, or at the next reconnection.
      for (const ch of channels) unsubscribeLater.add(ch);
    }
  };
  const unsubscribeSoon = (channel: string) => {
    toUnsubscribe.add(channel);
    unsubscribeTimer ??= setTimeout(() => void flushUnsubscribes(), UNSUBSCRIBE_BATCH_MS).unref();
  };
  // On every reconnection: revocations are reloaded, and each bus topic's handlers get an empty
  // message once the subscriptions are back — a bus message is never empty, so it says "messages
  // on this topic may have been lost meanwhile: read again what matters" (tasks/service.ts does).
  sub.on('ready', () => {
    void reload().catch(() => undefined);
    void (async () => {
      const stale = [...unsubscribeLater].filter((ch) => !topics.has(ch));
      unsubscribeLater.clear();
      if (stale.length > 0) await sub.unsubscribe(...stale);
      // ioredis subscribes again what it had; subscribing again is harmless and makes sure of it
      // (a subscription in flight when the connection dropped included).
      // The revocation channel too: a client started again after `end` has forgotten its subscriptions.
      const held = [...topics.keys()];
      await sub.subscribe(revokedKey, ...held);
      for (const channel of held) for (const h of topics.get(channel)?.handlers ?? []) h('');
    })().catch(() => undefined);
  });
  await run(() => sub.subscribe(revokedKey));
  await run(reload);
  let lastTrim = 0;
  const mirrorSweep = setInterval(() => {
    const t = Date.now();
    for (const [id, exp] of mirror) if (exp <= t) mirror.delete(id);
  }, 60_000).unref();

  const presenceKey = (agentId: string) => `${P}presence:agent:${agentId}`;
  const nodesKey = `${P}nodes`;
  const sharesKey = (nodeId: string) => `${P}tally:${nodeId}`;
  const presenceUserKey = (userId: string) => `${P}presence:user:${userId}`;

  return {
    kind: 'redis',
    counters: {
      async attempt(limits, windowMs) {
        const r = await run(() => attemptScript(redis, limits.map((l) => `${P}cnt:${l.key}`), [windowMs, ...limits.map((l) => l.limit)])) as number[];
        return { allowed: r[0] === 1, retryAfterMs: Number(r[1]), counts: r.slice(2).map(Number) };
      },
      async release(key) {
        await run(() => releaseScript(redis, [`${P}cnt:${key}`], []));
      },
      async reset(key) {
        await run(() => redis.del(`${P}cnt:${key}`));
      },
      async peek(key) {
        return Number((await run(() => redis.get(`${P}cnt:${key}`))) ?? 0);
      },
    },
    rates: {
      async consume(rules, esc) {
        const keys = rules.flatMap((r) => [`${P}rl:${r.key}`, `${P}rl:${r.key}:s`, `${P}rl:${r.key}:b`]);
        const args = [esc.strikes, esc.windowMs, esc.blockMs, ...rules.flatMap((r) => [r.periodMs / r.limit, r.burst])];
        const v = (await run(() => rateScript(redis, keys, args))) as number[];
        return { allowed: v[0] === 1, retryAfterMs: Number(v[1]), remaining: Number(v[2]), rule: Number(v[3]), blocked: v[4] === 1, newlyBlocked: v[5] === 1 };
      },
    },
    tallies: {
      async acquire(nodeId, limits) {
        const v = (await run(() => tallyScript(redis, [nodesKey, sharesKey(nodeId)], [nodeId, sharesKey(''), 1, TALLY_SHARES_TTL_MS, ...limits.flatMap((l) => [l.key, l.limit])]))) as number[];
        return { allowed: v[0] === 1, refused: Number(v[1]), counts: v.slice(2).map(Number) };
      },
      async release(nodeId, keys) {
        if (keys.length === 0) return;
        await run(() => tallyReleaseScript(redis, [sharesKey(nodeId)], [TALLY_SHARES_TTL_MS, ...keys]));
      },
      async replace(nodeId, shares) {
        const args: (string | number)[] = [TALLY_SHARES_TTL_MS];
        for (const [key, n] of shares) if (n > 0) args.push(key, n);
        await run(() => tallyReplaceScript(redis, [sharesKey(nodeId)], args));
      },
      async count(nodeId, key) {
        const v = (await run(() => tallyScript(redis, [nodesKey, sharesKey(nodeId)], [nodeId, sharesKey(''), 0, TALLY_SHARES_TTL_MS, key, 0]))) as number[];
        return Number(v[2]);
      },
    },
    nodes: {
      async beat(nodeId, ttlMs) {
        await run(() => beatScript(redis, [`${P}node:${nodeId}`, nodesKey], [nodeId, ttlMs]));
      },
      async alive(nodeIds) {
        if (nodeIds.length === 0) return new Set();
        const v = await run(() => redis.mget(nodeIds.map((id) => `${P}node:${id}`)));
        return new Set(nodeIds.filter((_, i) => v[i] !== null));
      },
    },
    bus: {
      async publish(topic, message) {
        await run(() => redis.publish(`${P}bus:${topic}`, message));
      },
      async subscribe(topic, handler) {
        const channel = `${P}bus:${topic}`;
        let t = topics.get(channel);
        unsubscribeLater.delete(channel);
        if (!t) {
          const handlers = new Set<(message: string) => void>();
          // Still subscribed in Redis (its unsubscribe not sent yet): nothing to send.
          const ready = toUnsubscribe.delete(channel) ? Promise.resolve() : run(() => sub.subscribe(channel)).then(() => undefined);
          topics.set(channel, (t = { handlers, ready }));
          // A subscribe that timed out may still be done by Redis: unsubscribed later unless taken again.
          ready.catch(() => {
            if (topics.get(channel) !== t) return;
            topics.delete(channel);
            unsubscribeLater.add(channel);
          });
        }
        const entry = t;
        await entry.ready;
        entry.handlers.add(handler);
        return async () => {
          entry.handlers.delete(handler);
          if (entry.handlers.size === 0 && topics.get(channel) === entry) {
            topics.delete(channel);
            unsubscribeSoon(channel);
          }
        };
      },
    },
    revocations: {
      async revoke(id, ttlMs) {
        const t = Date.now();
        const until = t + ttlMs;
        const m = redis.multi().zadd(revokedKey, until, id).pexpireat(revokedKey, until, 'GT').pexpireat(revokedKey, until, 'NX');
        if (t - lastTrim > TRIM_EVERY_MS) {
          lastTrim = t;
          m.zremrangebyscore(revokedKey, '-inf', t);
        }
        m.publish(revokedKey, `${until} ${id}`);
        await run(() => m.exec());
        mirror.set(id, until);
        await replicated('revocation');
      },
      has(id) {
        const exp = mirror.get(id);
        return exp !== undefined && exp > Date.now();
      },
      onRevoke(listener) {
        bus.on('revoke', listener);
        return () => bus.off('revoke', listener);
      },
    },
    presence: {
      async set(entry, ttlMs) {
        const userKey = presenceUserKey(entry.userId);
        await run(() => redis.multi()
          .set(presenceKey(entry.agentId), JSON.stringify(entry), 'PX', ttlMs)
          .sadd(userKey, entry.agentId)
          .pexpire(userKey, ttlMs, 'GT').pexpire(userKey, ttlMs, 'NX')
          .exec());
      },
      async remove(agentId, nodeId) {
        const entry = await run(() => redis.get(presenceKey(agentId)));
        if (!entry) return;
        const { userId } = JSON.parse(entry) as PresenceEntry;
        await run(() => presenceRemoveScript(redis, [presenceKey(agentId), presenceUserKey(userId)], [nodeId, agentId]));
      },
      async forUser(userId) {
        const values = (await run(() => presenceForUserScript(redis, [presenceUserKey(userId)], [presenceKey('')]))) as string[];
        return values.map((v) => JSON.parse(v) as PresenceEntry);
      },
    },
    transient: {
      async put(key, value, ttlMs) {
        await run(() => redis.set(`${P}tmp:${key}`, value, 'PX', ttlMs));
      },
      async take(key) {
        return (await run(() => redis.getdel(`${P}tmp:${key}`))) ?? undefined;
      },
    },
    oidc: redisOidcRepo(redis, `${P}oidc:`, run, replicated),
    async close() {
      closing = true;
      clearInterval(mirrorSweep);
      clearTimeout(unsubscribeTimer);
      bus.removeAllListeners();
      await Promise.allSettled([sub.quit(), redis.quit()]);
      // quit() leaves the Sentinel failover detector's subscriptions open (ioredis #1362);
      // disconnect() closes them, so a closed store holds no connection.
      sub.disconnect();
      redis.disconnect();
    },
  };
}

/**
 * ioredis can end a client for good while Sentinel fails over: when the failover detector's notice
 * (+switch-master) disconnects the connector while a reconnection is asking a Sentinel for the
 * primary, that reconnection's `connect()` rejects ("Connection is closed.") and the client's status
 * becomes `end`, from which ioredis never reconnects — the node would answer 503 until restarted.
 * A client of an open store that ends is started again after REVIVE_MS (and again, each time it ends,
 * until the store is closed).
 */
function reviveWhenEnded(client: Redis, closing: () => boolean): void {
  client.on('end', () => {
    if (closing()) return;
    setTimeout(() => {
      if (closing() || client.status !== 'end') return;
      client.connect().catch(() => undefined);
    }, REVIVE_MS).unref();
  });
}

/** OAuth records in Redis; each expires with the record (Redis drops it), so `sweep` has nothing to do. */
function redisOidcRepo(redis: Redis, P: string, run: <T>(op: () => Promise<T>) => Promise<T>, replicated: (write: string) => Promise<void>): OidcRepo {
  const key = (model: string, id: string) => `${P}${model}:${id}`;
  const grantKey = (grantId: string) => `${P}grant:${grantId}`;
  const accountKey = (model: string, accountId: string) => `${P}acct:${model}:${accountId}`;
  const parse = (v: string | null): OidcRecord | undefined => {
    if (v === null) return undefined;
    const r = JSON.parse(v) as OidcRecord;
    return r.expiresAt !== undefined && r.expiresAt <= Math.floor(Date.now() / 1000) ? undefined : r;
  };
  const byIndex = async (model: string, index: string): Promise<OidcRecord | undefined> => {
    const id = await run(() => redis.get(index));
    return id === null ? undefined : parse(await run(() => redis.get(key(model, id))));
  };
  return {
    async upsert(model, id, r) {
      const k = key(model, id);
      const at = r.expiresAt === undefined ? undefined : r.expiresAt * 1000;
      const m = redis.multi();
      if (at === undefined) m.set(k, JSON.stringify(r));
      else m.set(k, JSON.stringify(r), 'PXAT', at);
      // An index lives as long as its record; a set as long as its longest-lived member.
      const index = (ik: string) => (at === undefined ? m.set(ik, id) : m.set(ik, id, 'PXAT', at));
      const member = (sk: string, value: string) => {
        m.sadd(sk, value);
        if (at === undefined) m.persist(sk);
        else m.pexpireat(sk, at, 'GT').pexpireat(sk, at, 'NX');
      };
      if (r.userCode) index(`${P}${model}:uc:${r.userCode}`);
      if (r.uid) index(`${P}${model}:uid:${r.uid}`);
      if (r.grantId) member(grantKey(r.grantId), k);
      if (r.accountId) member(accountKey(model, r.accountId), id);
      await run(() => m.exec());
      await replicated(model);
    },
    async find(model, id) {
      return parse(await run(() => redis.get(key(model, id))));
    },
    findByUserCode: (model, userCode) => byIndex(model, `${P}${model}:uc:${userCode}`),
    findByUid: (model, uid) => byIndex(model, `${P}${model}:uid:${uid}`),
    async consume(model, id) {
      await run(() => consumeScript(redis, [key(model, id)], [Math.floor(Date.now() / 1000)]));
      await replicated(`${model} consumed`);
    },
    async destroy(model, id) {
      await run(() => redis.del(key(model, id)));
      await replicated(`${model} destroyed`);
    },
    async revokeByGrantId(grantId) {
      const members = await run(() => redis.smembers(grantKey(grantId)));
      await run(() => redis.del(grantKey(grantId), ...members));
      await replicated('grant revoked');
    },
    async listByAccount(model, accountId) {
      const ak = accountKey(model, accountId);
      const ids = (await run(() => redis.smembers(ak))).sort();
      if (ids.length === 0) return [];
      const values = await run(() => redis.mget(ids.map((id) => key(model, id))));
      const out: { id: string; record: OidcRecord }[] = [];
      const gone: string[] = [];
      ids.forEach((id, i) => {
        const record = parse(values[i] ?? null);
        if (record) out.push({ id, record });
        else gone.push(id);
      });
      if (gone.length > 0) await run(() => redis.srem(ak, ...gone));
      return out;
    },
    async sweep() {
      return 0;
    },
  };
}
