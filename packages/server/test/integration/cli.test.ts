/** `palisade-server` as a user runs it: it starts with the setup link, and refuses bad flags with exit 2. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
      const r = await run(['start', '--port', '0', '--data-dir', dir], /setup\?token=\S+\n/);
      assert.match(r.stderr, /Palisade is running at https:\/\/127\.0\.0\.1:\d+/);
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
      [['start', '--bogus'], /Unknown option '--bogus'/],
      [['stop'], /unknown command "stop"/],
    ] as const) {
      const r = await run([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });
});
