/**
 * Runs every benchmark and writes its section of docs/BENCHMARKS.md: `npm run bench`.
 * Pass `--quick` for smaller counts (a smoke run, not figures to publish).
 */
import { spawnSync } from 'node:child_process';

const quick = process.argv.includes('--quick');
const benches: [string, string[]][] = [
  ['bench/validation.bench.ts', quick ? ['--iterations', '20000'] : []],
  ['bench/dispatch.bench.ts', quick ? ['--tasks', '300', '--rounds', '1'] : []],
  ['bench/dispatch-nodes.bench.ts', quick ? ['--concurrency', '1,4', '--seconds', '0.5', '--warmup', '0.5', '--rounds', '1'] : []],
  ['bench/token.bench.ts', quick ? ['--seconds', '2', '--warmup', '1', '--rounds', '1'] : []],
  ['bench/login.bench.ts', quick ? ['--logins', '40', '--slice', '20', '--warmup', '4', '--rounds', '1'] : []],
  ['bench/cookies.bench.ts', quick ? ['--iterations', '5000', '--rounds', '1'] : []],
  ['bench/hot.bench.ts', quick ? ['--seconds', '0.2', '--warmup', '0.05', '--rounds', '1'] : []],
  // 500,000 idle agent connections against bare ws (about 40 minutes and ~20 GB of memory here).
  ['bench/connections.bench.ts', quick ? ['--steps', '4000', '--settle', '5'] : []],
  // An hour of connection churn and task traffic (two nodes on PostgreSQL + Redis when both answer); docs/soak.svg too.
  ['bench/soak.bench.ts', quick ? ['--minutes', '1', '--sample', '5'] : ['--minutes', '60']],
  // A million generated inputs per surface (about 15 + 20 minutes here); figures in docs/FUZZING.md.
  ['bench/fuzz/run.ts', quick ? ['--count', '2000'] : ['--count', '1000000']],
];
for (const [file, args] of benches) {
  process.stdout.write(`\n▶ ${file}\n`);
  const r = spawnSync(process.execPath, [file, ...args, ...(quick ? [] : ['--write'])], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
