/**
 * @module bench/cookies — the cost of checking one signed cookie, as oidc-provider's Koa does on
 * every browser request of a sign-in (the interaction cookie is checked twice per password sign-in):
 * `keygrip` as `cookies` uses it when given an array of keys (a new Keygrip per request, HMAC-SHA1
 * under the key string, signatures compared by `tsscmp`: two more HMACs under fresh random bytes),
 * against Palisade's `auth/cookie-keys.ts` (keys imported once, `timingSafeEqual`). Both check the
 * same cookie and must both accept it; a third case checks a forged signature (both must refuse).
 *
 * Rounds alternate the order of the two; each round times `--iterations` checks of each in a tight
 * loop (after a warm-up), so figures are per check, in µs, medians over the rounds.
 *
 *   node bench/cookies.bench.ts [--iterations 100000] [--rounds 7] [--keys 1] [--write]
 */
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import Keygrip from 'keygrip';
import { cookieKeys } from '../packages/server/src/auth/cookie-keys.ts';
import { machine, table, writeSection } from './lib.ts';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '7' },
    keys: { type: 'string', default: '1' }, write: { type: 'boolean', default: false },
  },
});
const N = Number(values.iterations);
const ROUNDS = Number(values.rounds);
const KEYS = Number(values.keys);
if (!Number.isInteger(N) || N < 1000) throw new Error('--iterations takes a whole number ≥ 1000');
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes a positive whole number');
if (!Number.isInteger(KEYS) || KEYS < 1 || KEYS > 8) throw new Error('--keys takes a whole number from 1 to 8');

// Palisade's keys are 32 random bytes, base64url (auth/secrets.ts); the signing key comes first.
const keys = Array.from({ length: KEYS }, () => randomBytes(32).toString('base64url'));
// `name=value` as `cookies` signs it: oidc-provider's interaction cookie holds the interaction's uid.
const data = `__Host-palisade-interaction=${randomBytes(16).toString('base64url')}`;
const ours = cookieKeys(keys);
const good = ours.sign(data);
if (new Keygrip(keys).sign(data) !== good) throw new Error('keygrip and cookie-keys sign differently');
const forged = `${good.slice(0, -2)}${good.endsWith('AA') ? 'BB' : 'AA'}`;

type Check = (digest: string) => number;
const CHECKS: Record<string, Check> = {
  'keygrip (a new one per request, as `cookies` builds it)': (digest) => new Keygrip(keys).index(data, digest),
  'cookie-keys.ts (Palisade)': (digest) => ours.index(data, digest),
};

function time(check: Check, digest: string, expected: number): number {
  for (let i = 0; i < Math.min(N, 10_000); i++) if (check(digest) !== expected) throw new Error('a check gave the wrong answer');
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) if (check(digest) !== expected) throw new Error('a check gave the wrong answer');
  return Number(process.hrtime.bigint() - t) / 1000 / N;
}

const names = Object.keys(CHECKS);
const results: Record<string, { good: number[]; forged: number[] }> = Object.fromEntries(names.map((n) => [n, { good: [], forged: [] }]));
const load = loadavg()[0]!.toFixed(2);
process.stderr.write(`cookie check: ${ROUNDS} rounds × ${N} checks each, ${KEYS} key(s)\n`);
for (let r = 0; r < ROUNDS; r++) {
  for (const name of r % 2 === 0 ? names : [...names].reverse()) {
    results[name]!.good.push(time(CHECKS[name]!, good, 0));
    results[name]!.forged.push(time(CHECKS[name]!, forged, -1));
  }
  process.stderr.write(`  round ${r + 1}: ${names.map((n) => `${n.split(' ')[0]} ${results[n]!.good.at(-1)!.toFixed(2)} µs`).join(', ')}\n`);
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const [theirs, mine] = names.map((n) => results[n]!);
const ratios = theirs!.good.map((t, i) => t / mine!.good[i]!);

const out = `- command: \`node bench/cookies.bench.ts --iterations ${N} --rounds ${ROUNDS} --keys ${KEYS}\`
- ${machine()}; 1-minute load average at start ${load}
- one check of a signed cookie (\`${data.split('=')[0]}=<22 characters>\`, its signature in the \`.sig\` cookie) with ${KEYS} key(s), the signing key first (as Palisade's: 32 random bytes, base64url): what oidc-provider's Koa does for each signed cookie it reads. ${N.toLocaleString('en')} checks in a loop after a warm-up, per round; ${ROUNDS} rounds, the order alternating; medians over the rounds
- keygrip ${(createRequire(import.meta.url)('keygrip/package.json') as { version: string }).version} as \`cookies\` uses it when given an array of keys: a new Keygrip per request, HMAC-SHA1 under the key string, the signature compared by \`tsscmp\` (two HMAC-SHA256 under fresh random bytes); Palisade's \`auth/cookie-keys.ts\`: the same signature (checked equal at start and by \`test/unit/cookie-keys.test.ts\`), keys imported once with \`createSecretKey\`, compared with \`timingSafeEqual\`

${table(['check', 'good signature µs', 'forged signature µs'], names.map((n) => [n, med(results[n]!.good).toFixed(2), med(results[n]!.forged).toFixed(2)]))}

keygrip / cookie-keys, good signature: **${med(ratios).toFixed(1)}×** (rounds: ${ratios.map((x) => x.toFixed(1)).join(', ')}). A password sign-in checks the interaction cookie twice; every other page of a browser sign-in at least once.`;
process.stdout.write(`\n${out}\n`);
if (values.write) writeSection('cookies', 'Checking a signed cookie: keygrip against cookie-keys', out);
