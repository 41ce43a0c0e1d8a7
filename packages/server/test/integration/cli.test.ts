/** `palisade-server` as a user runs it: it starts with the setup link, and refuses bad flags with exit 2. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

function run(args: string[], untilText?: RegExp): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PALISADE_LOG_LEVEL: 'warn' } });
    let stderr = '';
    let stopped = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      if (!stopped && untilText?.test(stderr)) {
        stopped = true;
        child.kill('SIGTERM');
      }
    });
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('palisade-server CLI', () => {
  it('starts on TLS with a generated CA, prints the setup link, and stops cleanly on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
    try {
      const r = await run(['start', '--port', '0', '--data-dir', dir, '--heartbeat', '45'], /setup\?token=\S+\n/);
      assert.match(r.stderr, /Palisade is running at https:\/\/127\.0\.0\.1:\d+/);
      assert.match(r.stderr, /Agents +wss:\/\/127\.0\.0\.1:\d+\/ws\/agent \(a ping every 45 s\)/, '--heartbeat reaches the server');
      assert.match(r.stderr, /development CA at .*ca\.crt \(generated now\)/);
      assert.match(r.stderr, /one-time link/);
      assert.match(r.stderr, /shutting down/);
      assert.equal(r.code, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad flags with exit 2 and says which', async () => {
    for (const [args, message] of [
      [['start', '--port', 'abc'], /--port must be a number/],
      [['start', '--access-token-ttl', '5'], /--access-token-ttl must be a whole number of seconds from 60/],
      [['start', '--refresh-token-ttl', 'forever'], /--refresh-token-ttl must be/],
      [['start', '--max-tasks-per-user', '0'], /--max-tasks-per-user must be a whole number from 1/],
      [['start', '--max-tasks-per-agent', '2.5'], /--max-tasks-per-agent must be a whole number from 1/],
      [['start', '--database', 'postgres://127.0.0.1/x', '--database-pool', '0'], /--database-pool must be a whole number from 1/],
      [['start', '--redis', 'redis://127.0.0.1:1', '--redis-replica-waits', '1.5'], /--redis-replica-waits must be a whole number from 0 to 16/],
      [['start', '--redis-replica-waits', '1'], /--redis-replica-waits goes with --redis or --redis-sentinel/],
      [['start', '--database-pool', '4'], /--database-pool goes with --database/],
      [['start', '--database-no-prepare'], /--database-no-prepare goes with --database/],
      [['start', '--heartbeat', '4'], /--heartbeat must be a whole number of seconds from 5 to 600, not "4"/],
      [['start', '--heartbeat', '601'], /--heartbeat must be a whole number of seconds from 5 to 600/],
      [['start', '--bogus'], /Unknown option '--bogus'/],
      [['stop'], /unknown command "stop"/],
    ] as const) {
      const r = await run([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  it('--rate-limits: refuses an unreadable or malformed file with exit 2, and starts with a valid one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
    try {
      const file = (name: string, text: string) => {
        writeFileSync(join(dir, name), text);
        return join(dir, name);
      };
      for (const [path, message] of [
        [join(dir, 'missing.json'), /--rate-limits: cannot read .*missing\.json \(ENOENT\)/],
        [file('bad.json', '{classes:'), /--rate-limits .*bad\.json: not valid JSON/],
        [file('array.json', '[]'), /expected a JSON object/],
        [file('key.json', '{"limits":{}}'), /the file: unknown key "limits"/],
        [file('class.json', '{"classes":{"socket":{}}}'), /classes: unknown key "socket"/],
        [file('zero.json', '{"classes":{"ws":{"ip":{"limit":0,"periodMs":60000,"burst":1}}}}'), /classes\.ws\.ip\.limit must be a whole number from 1, not 0/],
        [file('partial.json', '{"classes":{"ws":{"principal":{"limit":5}}}}'), /classes\.ws\.principal\.periodMs must be a whole number/],
        [file('enabled.json', '{"enabled":"no"}'), /enabled must be true or false/],
        [file('esc.json', '{"escalation":{"strikes":1.5}}'), /escalation\.strikes must be a whole number/],
      ] as const) {
        const r = await run(['start', '--port', '0', '--data-dir', dir, '--rate-limits', path]);
        assert.equal(r.code, 2, `${path}: ${r.stderr}`);
        assert.match(r.stderr, message);
      }
      // Rate limits off are an insecure configuration: production mode refuses them (the file was applied).
      const off = await run(['start', '--port', '0', '--data-dir', dir, '--production', '--rate-limits', file('off.json', '{"enabled":false}')]);
      assert.equal(off.code, 2, off.stderr);
      assert.match(off.stderr, /rateLimits\.enabled/);
      const ok = file('ok.json', '{"classes":{"ws":{"ip":{"limit":600000,"periodMs":60000,"burst":60000},"principal":null}}}');
      const r = await run(['start', '--port', '0', '--data-dir', dir, '--rate-limits', ok], /setup\?token=\S+\n/);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /Palisade is running at/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
