/**
 * Whether the Redis tests can run: they need Redis on 127.0.0.1:6379. In CI (`CI=true`) an
 * unreachable server is an error; elsewhere the tests skip and say so loudly. Each test uses its own
 * key prefix and deletes its keys afterwards.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { once } from 'node:events';
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

/**
 * Every command the Redis at `url` runs from now on, as MONITOR reports it: `onCommand` gets each
 * one's arguments, its name first. Read on a plain socket of its own, not through ioredis, whose
 * monitor mode can take a MONITOR line that arrives before its "OK" for a reply ("Command queue
 * state error", seen in CI) and then leaves its connection open, which keeps the test process alive.
 * `close()` ends it; call it in a `finally`.
 */
export async function monitorRedis(url: string, onCommand: (args: string[]) => void): Promise<{ close(): void }> {
  const u = new URL(url);
  if (u.password || u.protocol !== 'redis:') throw new Error(`monitorRedis takes a plain redis:// URL without a password (got ${u.protocol})`);
  const socket = connect(Number(u.port || 6379), u.hostname || '127.0.0.1');
  socket.setEncoding('latin1');
  try {
    await once(socket, 'connect');
    let buffered = '';
    let started = false;
    const ready = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: string) => {
        buffered += chunk;
        for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!started) {
            if (line !== '+OK') return reject(new Error(`MONITOR was answered ${line}`));
            started = true;
            resolve();
          } else {
            const args = monitorArgs(line);
            if (args) onCommand(args);
          }
        }
      });
      socket.once('error', reject);
      socket.once('close', () => reject(new Error('the MONITOR connection closed')));
    });
    socket.write('MONITOR\r\n');
    await ready;
  } catch (e) {
    socket.destroy();
    throw e;
  }
  socket.on('error', () => undefined);
  return { close: () => socket.destroy() };
}

/** The arguments of one MONITOR line (`+<time> [<db> <client>] "CMD" "arg" …`; Redis escapes them as sdscatrepr does). */
export function monitorArgs(line: string): string[] | undefined {
  const open = line.indexOf('] "');
  if (!line.startsWith('+') || open < 0) return undefined;
  const args: string[] = [];
  for (let i = open + 2; i < line.length; i++) {
    if (line[i] !== '"') continue;
    let bytes = '';
    for (i++; i < line.length && line[i] !== '"'; i++) {
      if (line[i] !== '\\') {
        bytes += line[i];
        continue;
      }
      const c = line[++i];
      if (c === 'x') {
        bytes += String.fromCharCode(parseInt(line.slice(i + 1, i + 3), 16));
        i += 2;
      } else bytes += ({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' } as Record<string, string>)[c!] ?? c;
    }
    args.push(Buffer.from(bytes, 'latin1').toString('utf8'));
  }
  return args;
}

