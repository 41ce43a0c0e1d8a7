import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, PalisadeError, type ErrorCode, type TaskView } from '@palisade/protocol';
import { parseDuration, parseInputs, parseList, UsageError } from '../../src/cli/args.ts';
import { EXIT, EXIT_DOC, EXIT_FOR_CODE, exitCodeFor } from '../../src/cli/exit.ts';
import { globalHelp, main, type CliIO } from '../../src/cli/main.ts';
import { TaskError } from '../../src/lib/errors.ts';

function io(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const value: CliIO = {
    stdout: { write: (t: string) => out.push(t), isTTY: false },
    stderr: { write: (t: string) => err.push(t), isTTY: false },
    env: { XDG_CONFIG_HOME: '/nonexistent-palisade-test', ...env },
  };
  return { io: value, out: () => out.join(''), err: () => err.join('') };
}

test('--input pairs: values may hold "=", keys must be names and given once', () => {
  assert.deepEqual(parseInputs(['query=a=b', 'n=', 'x_1=y']), { query: 'a=b', n: '', x_1: 'y' });
  assert.throws(() => parseInputs(['novalue']), UsageError);
  assert.throws(() => parseInputs(['=x']), UsageError);
  assert.throws(() => parseInputs(['bad-key=x']), UsageError);
  assert.throws(() => parseInputs(['a=1', 'a=2']), /twice/);
  const odd = parseInputs(['__proto__=1', 'constructor=2']);
  assert.deepEqual(Object.keys(odd), ['__proto__', 'constructor']);
  assert.equal(JSON.stringify(odd), '{"__proto__":"1","constructor":"2"}');
});

test('--timeout durations', () => {
  assert.equal(parseDuration('120s'), 120_000);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1500ms'), 1500);
  assert.equal(parseDuration('90'), 90_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('1.5s'), 1500);
  for (const bad of ['', 'soon', '-5s', '999ms', '2h', '5 d']) assert.throws(() => parseDuration(bad), UsageError, bad);
});

test('--scopes lists', () => {
  assert.deepEqual(parseList(['tasks,admin', 'tasks', ' x ']), ['tasks', 'admin', 'x']);
});

test('exit codes: requests by code, tasks 1 or 6, anything else 5', () => {
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_VALIDATION')), EXIT.USAGE);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_TOKEN_INVALID')), EXIT.AUTH);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_FORBIDDEN')), EXIT.AUTH);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_UNKNOWN_RECIPE')), EXIT.NOT_FOUND);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_UNAVAILABLE')), EXIT.UNAVAILABLE);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_NO_AGENT')), EXIT.NO_AGENT);
  assert.equal(exitCodeFor(new PalisadeError('PAL_ERR_SITE_NOT_GRANTED')), EXIT.NO_AGENT);
  const task: TaskView = { id: 't', state: 'failed', site: 's', attempts: 1, createdAt: '', updatedAt: '', deadline: '' };
  assert.equal(exitCodeFor(new TaskError({ ...task, error: { code: 'PAL_ERR_STEP_FAILED', message: 'x' } })), EXIT.TASK_FAILED);
  assert.equal(exitCodeFor(new TaskError({ ...task, error: { code: 'PAL_ERR_NO_AGENT', message: 'x' } })), EXIT.NO_AGENT);
  assert.equal(exitCodeFor(new TaskError({ ...task, state: 'expired' })), EXIT.TASK_FAILED);
  assert.equal(exitCodeFor(new Error('boom')), EXIT.UNAVAILABLE);
  // Every error code has an exit code, and only documented ones are used.
  const documented = new Set(EXIT_DOC.map(([c]) => c));
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) assert.ok(documented.has(EXIT_FOR_CODE[code]), code);
});

test('--help and docs/CLI.md document every exit code', () => {
  const doc = readFileSync(new URL('../../../../docs/CLI.md', import.meta.url), 'utf8');
  for (const [code, text] of EXIT_DOC) {
    assert.match(globalHelp(), new RegExp(`^  ${code}  ${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    assert.match(doc, new RegExp(`^\\| ${code} \\|`, 'm'), `docs/CLI.md lacks exit code ${code}`);
  }
});

test('usage errors exit 2 with a message on stderr and nothing on stdout', async () => {
  for (const argv of [['frob'], ['run', 'x', '--bogus'], ['run'], ['run', 'x', '--input', 'oops'], ['run', 'x', '--timeout', 'soon'], ['tasks', 'get'], ['tasks', 'get', 'a', 'b'], ['run', 'x', '--flow', 'f.json'], []]) {
    const t = io();
    assert.equal(await main(argv, t.io), 2, argv.join(' '));
    assert.equal(t.out(), '', argv.join(' '));
    assert.match(t.err(), /error PAL_ERR_VALIDATION/, argv.join(' '));
  }
});

test('with --json a usage error is exactly one problem document on stdout', async () => {
  const t = io();
  assert.equal(await main(['run', 'x', '--input', 'oops', '--json'], t.io), 2);
  const problem = JSON.parse(t.out());
  assert.equal(problem.code, 'PAL_ERR_VALIDATION');
  assert.match(problem.detail, /key=value/);
  assert.equal(t.err(), '');
});

test('--help, help <command>, --version', async () => {
  let t = io();
  assert.equal(await main(['--help'], t.io), 0);
  assert.match(t.out(), /Exit codes:/);
  t = io();
  assert.equal(await main(['run', '--help'], t.io), 0);
  assert.match(t.out(), /--idempotency-key/);
  t = io();
  assert.equal(await main(['help', 'clients', 'create'], t.io), 0);
  assert.match(t.out(), /palisade clients create --name NAME/);
  t = io();
  assert.equal(await main(['--version'], t.io), 0);
  assert.match(t.out(), /^\d+\.\d+\.\d+\n$/);
});

test('without credentials a command exits 3 with a hint to log in', async () => {
  const t = io();
  assert.equal(await main(['agents'], t.io), 3);
  assert.match(t.err(), /PAL_ERR_UNAUTHENTICATED/);
  assert.match(t.err(), /palisade login/);
  const half = io({ PALISADE_CLIENT_ID: 'x' });
  assert.equal(await main(['agents'], half.io), 2);
});

test('no colours unless stdout is a TTY and NO_COLOR is unset', async () => {
  const make = (tty: boolean, env: NodeJS.ProcessEnv) => {
    const t = io(env);
    t.io.stdout.isTTY = tty;
    t.io.stderr.isTTY = tty;
    return t;
  };
  const coloured = make(true, {});
  await main(['frob'], coloured.io);
  assert.match(coloured.err(), /\u001b\[/);
  for (const t of [make(false, {}), make(true, { NO_COLOR: '1' })]) {
    await main(['frob'], t.io);
    assert.doesNotMatch(t.err(), /\u001b\[/);
  }
});
