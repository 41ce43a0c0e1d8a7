/**
 * The whole test suite, in the order a failure is cheapest to find:
 * type check → build (release + test extension) → dynamic-code scan → unit and integration tests →
 * end-to-end tests in real headless Chromium.
 *
 * `npm test` runs it. `npm test -- --only unit` skips the end-to-end stage; `--only e2e` runs only it.
 */
import { spawnSync } from 'node:child_process';
import { globSync } from 'node:fs';

const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
const node = process.execPath;

function run(title: string, cmd: string, argv: string[]): void {
  process.stdout.write(`\n▶ ${title}\n`);
  const r = spawnSync(cmd, argv, { stdio: 'inherit', env: process.env });
  if (r.status !== 0) {
    process.stdout.write(`\n✖ ${title} failed (exit ${r.status ?? r.signal})\n`);
    process.exit(r.status ?? 1);
  }
}

const tsc = 'node_modules/typescript/bin/tsc';
if (only !== 'e2e') {
  run('type check', node, [tsc, '-p', 'tsconfig.json']);
}
run('build extension (release and test builds)', node, ['packages/extension/build.ts', '--all']);
run('scan for dynamic code and broad permissions', node, ['scripts/check-dynamic-code.ts']);

const unit = globSync('packages/*/test/**/*.test.ts').sort();
const e2e = globSync('test/e2e/**/*.test.ts').sort();
if (only !== 'e2e' && unit.length > 0) {
  // --test-force-exit: once a file's tests and hooks are done, its process ends even if a failed test
  // left a handle open (else that file, and the whole run, would wait for ever).
  run(`unit and integration tests (${unit.length} files)`, node, ['--test', '--test-force-exit', '--test-concurrency=2', '--test-timeout=120000', ...unit]);
}
if (only !== 'unit' && e2e.length > 0) {
  run(`end-to-end tests in headless Chromium (${e2e.length} files)`, node, ['--test', '--test-force-exit', '--test-concurrency=1', '--test-timeout=300000', ...e2e]);
}
process.stdout.write('\n✔ all test stages passed\n');
