/**
 * Whether the Redis tests can run: they need Redis on 127.0.0.1:6379. In CI (`CI=true`) an
 * unreachable server is an error; elsewhere the tests skip and say so loudly. Each test uses its own
 * key prefix and deletes its keys afterwards.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.PALISADE_TEST_REDIS ?? 'redis://127.0.0.1:6379';

/** `false` when the tests may run, or the reason they are skipped. Throws in CI if Redis is down. */
export async function redisSkip(what: string): Promise<false | string> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => undefined);
  try {
    await r.connect();
    await r.ping();
    return false;
  } catch {
    if (process.env.CI === 'true') throw new Error(`Redis is not reachable at ${REDIS_URL}, and CI=true requires the ${what} to run`);
    process.stderr.write(`\n\n!!! SKIPPED: ${what} — nothing answers at ${REDIS_URL} (they run in CI) !!!\n\n`);
    return `no Redis at ${REDIS_URL}`;
  } finally {
    r.disconnect();
  }
}

/** A fresh key prefix for one test. */
export const testPrefix = (): string => `paltest-${randomBytes(6).toString('hex')}`;

/** Calls `each` with every batch of keys under `prefix`; returns the sum of what it returned. */
async function scanPrefix(prefix: string, url: string, each: (r: Redis, keys: string[]) => Promise<number>): Promise<number> {
  const r = new Redis(url);
  let cursor = '0';
  let n = 0;
  try {
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
      cursor = next;
      if (keys.length > 0) n += await each(r, keys);
    } while (cursor !== '0');
    return n;
  } finally {
    r.disconnect();
  }
}

/** Deletes every key under `prefix`; returns how many there were. */
export const dropPrefix = (prefix: string, url = REDIS_URL): Promise<number> => scanPrefix(prefix, url, (r, keys) => r.unlink(...keys));

/** How many keys there are under `prefix`. */
export const countPrefix = (prefix: string, url = REDIS_URL): Promise<number> => scanPrefix(prefix, url, async (_r, keys) => keys.length);
