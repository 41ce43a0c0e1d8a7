/**
 * The bound side of `login.bench.ts`, in a process of its own that loads nothing of the server but
 * its argon2id parameters: `argon2.verify` of the right password against a hash made with
 * `ARGON2_OPTIONS`, `concurrency` calls in flight. After `warmup` untimed calls it says `ready`,
 * then runs a slice of calls each time the parent sends `{ run: count }` (so the parent can
 * interleave slices of the bound with slices of sign-ins, and read CPU counters around each), and
 * exits on `{ stop: true }`.
 */
import argon2 from 'argon2';
import { ARGON2_OPTIONS } from '../packages/server/src/auth/passwords.ts';

/** One slice: each call's latency (ms), the slice's wall time (s) and this process's CPU time over it (s, all threads). */
export interface Slice {
  samples: number[];
  seconds: number;
  cpu: number;
}

export type SliceCommand = { run: number } | { stop: true };

const { concurrency, warmup, password } = JSON.parse(process.env.BENCH_BOUND ?? '{}') as { concurrency: number; warmup: number; password: string };
const hash = await argon2.hash(password, ARGON2_OPTIONS);
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function run(count: number): Promise<Slice> {
  const samples: number[] = [];
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      next++;
      const start = now();
      if (!(await argon2.verify(hash, password))) throw new Error('argon2.verify refused the right password');
      samples.push(now() - start);
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  return { samples, seconds: (now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
}

await run(warmup);
process.on('message', (m: SliceCommand) => {
  if ('stop' in m) process.exit(0);
  void run(m.run).then((slice) => process.send!({ slice }));
});
process.send!({ ready: true });
