/**
 * `palisade-server start --workers N` as a user runs it: N worker processes serve one port (each
 * binds it with SO_REUSEPORT), a killed worker is restarted while the port keeps answering, and
 * SIGTERM stops them all. Which process answered a connection is read from /proc (the owner of
 * the server-side socket), so the test needs Linux — as SO_REUSEPORT's load spreading does.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dropPrefix, REDIS_URL, redisSkip, testPrefix } from '../support/redis.ts';
import { superviseWorkers, WORKER_ENV } from '../../src/workers.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const skip = existsSync('/proc/net/tcp') ? await redisSkip('--workers tests') : 'needs Linux (/proc)';

/** The CLI's stderr as it grows, and a wait for a pattern in it. */
function startCli(args: string[]): { child: ChildProcess; stderr: () => string; waitFor: (re: RegExp, ms?: number) => Promise<RegExpMatchArray>; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PALISADE_LOG_LEVEL: 'warn' } });
  let text = '';
  const waiters = new Set<() => void>();
  child.stderr!.on('data', (d: Buffer) => {
    text += d;
    for (const w of waiters) w();
  });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const waitFor = (re: RegExp, ms = 15_000) => new Promise<RegExpMatchArray>((resolve, reject) => {
    const check = () => {
      const m = text.match(re);
      if (!m) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve(m);
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`no ${re} within ${ms} ms; stderr:\n${text}`));
    }, ms);
    waiters.add(check);
    check();
  });
  return { child, stderr: () => text, waitFor, exit };
}

/** GET `path` with `agent`; the status and the client-side port of the connection it used. */
function request(port: number, path: string, agent: Agent): Promise<{ status: number; localPort: number }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent }, (res) => {
      const localPort = res.socket.localPort!;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, localPort }));
    }).on('error', reject);
  });
}

/** Process (of `pids`) holding the server side of each established connection to `port`, by the client's port. */
function socketOwners(port: number, pids: number[]): Map<number, number> {
  const pidOfInode = new Map<string, number>();
  for (const pid of pids) {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) pidOfInode.set(m[1]!, pid);
      } catch {
        // closed meanwhile
      }
    }
  }
  const owners = new Map<number, number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '01') continue; // 01 = ESTABLISHED
      const local = parseInt(f[1]!.split(':')[1]!, 16);
      const remote = parseInt(f[2]!.split(':')[1]!, 16);
      const pid = pidOfInode.get(f[9]!);
      if (local === port && pid !== undefined) owners.set(remote, pid);
    }
  }
  return owners;
}

/** Opens `n` connections at once, each answering GET /healthz with 200; returns the pid that served each. */
async function servedBy(port: number, ca: Buffer, pids: number[], n = 16): Promise<number[]> {
  const agent = new Agent({ ca, keepAlive: true, maxSockets: n });
  try {
    const answers = await Promise.all(Array.from({ length: n }, () => request(port, '/healthz', agent)));
    for (const a of answers) assert.equal(a.status, 200);
    const owners = socketOwners(port, pids);
    return answers.map((a) => {
      const pid = owners.get(a.localPort);
      assert.ok(pid !== undefined, `no worker holds the connection from port ${a.localPort}`);
      return pid;
    });
  } finally {
    agent.destroy();
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const READY = /worker (\d+) ready: node (\S+), pid (\d+)/g;

describe('palisade-server start --workers', { skip }, () => {
  it('runs 2 workers on one port, restarts a killed one while the port keeps answering, and stops all on SIGTERM', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-workers-'));
    const prefix = testPrefix();
    const cli = startCli(['start', '--workers', '2', '--port', '0', '--data-dir', dir, '--redis', REDIS_URL, '--redis-prefix', prefix]);
    try {
      const running = await cli.waitFor(/Palisade is running at https:\/\/127\.0\.0\.1:(\d+) \(2 workers\)/, 30_000);
      const port = Number(running[1]);
      const setup = await cli.waitFor(/one-time link to create it:\s+(\S+)\n/);
      const ready = [...cli.stderr().matchAll(READY)].map((m) => ({ index: Number(m[1]), node: m[2]!, pid: Number(m[3]) }));
      assert.deepEqual(ready.map((r) => r.index).sort(), [1, 2], cli.stderr());
      const [w1, w2] = [ready.find((r) => r.index === 1)!, ready.find((r) => r.index === 2)!];
      assert.notEqual(w1.pid, w2.pid);
      assert.notEqual(w1.node, w2.node);
      for (const w of [w1, w2]) assert.match(w.node, new RegExp(`:${w.pid}:[0-9a-f]{6}$`), 'a node id is <host>:<pid>:<random>, new at each start');
      for (const w of [w1, w2]) assert.notEqual(w.pid, cli.child.pid);
      // Both workers hold a listening socket on the port, and the kernel hands connections to both.
      const ca = readFileSync(join(dir, 'tls', 'ca.crt'));
      const first = await servedBy(port, ca, [w1.pid, w2.pid]);
      assert.deepEqual([...new Set(first)].sort(), [w1.pid, w2.pid].sort(), 'both workers serve connections on the one port');
      // The printed setup link is the one every worker honours (each wrote one on start; worker 1 had the last word).
      const setupPath = new URL(setup[1]!).pathname + new URL(setup[1]!).search;
      const setupAgent = new Agent({ ca, keepAlive: false });
      for (let i = 0; i < 6; i++) assert.equal((await request(port, setupPath, setupAgent)).status, 200, 'the printed setup link is valid');

      // A worker killed outright is restarted; meanwhile the other one answers every new connection.
      process.kill(w2.pid, 'SIGKILL');
      await cli.waitFor(new RegExp(`worker 2 \\(pid ${w2.pid}\\) exited \\(killed by SIGKILL\\): restarting in \\d+ ms`));
      assert.deepEqual([...new Set(await servedBy(port, ca, [w1.pid], 8))], [w1.pid], 'the surviving worker answers while the other restarts');
      const restarted = await cli.waitFor(/worker 2 ready: node (\S+), pid (\d+) \(restarted\)/);
      const w2b = Number(restarted[2]);
      assert.notEqual(w2b, w2.pid);
      assert.equal(alive(w2.pid), false);
      const second = await servedBy(port, ca, [w1.pid, w2b]);
      assert.deepEqual([...new Set(second)].sort(), [w1.pid, w2b].sort(), 'the restarted worker serves on the port again');
      // It wrote a new setup token, and the primary printed the link that now works.
      const changed = await cli.waitFor(/the admin setup link is now: (\S+)\n/);
      const changedUrl = new URL(changed[1]!);
      assert.equal((await request(port, changedUrl.pathname + changedUrl.search, setupAgent)).status, 200);
      assert.equal((await request(port, setupPath, setupAgent)).status, 404, 'the old link is replaced');

      // SIGTERM to the primary: every worker stops, and the primary exits 0.
      cli.child.kill('SIGTERM');
      assert.equal(await cli.exit, 0, cli.stderr());
      assert.match(cli.stderr(), /SIGTERM: stopping 2 worker\(s\)/);
      for (const pid of [w1.pid, w2b]) assert.equal(alive(pid), false, `worker pid ${pid} is gone`);
    } finally {
      if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      await dropPrefix(prefix);
    }
  });

  it('refuses several workers without shared hot state, and bad counts, with exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'palisade-workers-'));
    try {
      await Promise.all(([
        [['--workers', '2'], /--workers 2 needs --redis URL or --redis-sentinel/],
        [['--workers', '0'], /--workers must be auto or a whole number from 1 to 256, not "0"/],
        [['--workers', 'x'], /--workers must be auto or a whole number from 1 to 256, not "x"/],
        [['--workers', '257', '--redis', REDIS_URL], /--workers must be auto or a whole number from 1 to 256, not "257"/],
        [['--workers', '2', '--redis', REDIS_URL, '--port', '9001', '--internal-port', '9000', '--internal-ca', join(dir, 'ca.crt')], /--port 9001 falls in the workers' internal ports 9000–9001/],
      ] as const).map(async ([args, message]) => {
        const cli = startCli(['start', '--data-dir', dir, ...args]);
        assert.equal(await cli.exit, 2, `${args.join(' ')}: ${cli.stderr()}`);
        assert.match(cli.stderr(), message);
      }));
      assert.deepEqual(readdirSync(dir), [], 'nothing was started');
      // A worker that cannot start stops the others; the primary exits with the worker's code.
      const cli = startCli(['start', '--data-dir', dir, '--workers', '2', '--redis', REDIS_URL, '--redis-prefix', testPrefix(), '--production', '--insecure-http']);
      assert.equal(await cli.exit, 2, cli.stderr());
      assert.match(cli.stderr(), /production mode refuses to start/);
      assert.match(cli.stderr(), /worker 1 \(pid \d+\) failed to start \(exit code 2\): stopping/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the workers supervisor', () => {
  /** A stand-in worker: `ready` reports ready and stays; `dies` reports ready and exits 1 after 100 ms; `hangs` never reports. */
  const dir = mkdtempSync(join(tmpdir(), 'palisade-supervisor-'));
  const script = join(dir, 'worker.mjs');
  writeFileSync(script, [
    `const index = Number(process.env.${WORKER_ENV});`,
    "const mode = process.env['MODE_OF_WORKER_' + index] ?? 'ready';",
    "if (mode !== 'hangs') process.send({ type: 'ready', index, pid: process.pid, nodeId: 'test:' + process.pid, url: 'http://127.0.0.1:1', port: 1, banner: 'Palisade is running at http://127.0.0.1:1' });",
    "if (mode === 'dies') setTimeout(() => process.exit(1), 100);",
    'else setInterval(() => {}, 1000);',
  ].join('\n'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const start = (modes: Record<number, string>) => (index: number) => fork(script, [], { env: { ...process.env, [WORKER_ENV]: String(index), ...Object.fromEntries(Object.entries(modes).map(([i, m]) => [`MODE_OF_WORKER_${i}`, m])) }, stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });

  it('restarts a worker that dies, doubling the delay, and gives up (exit 1) when it keeps dying quickly', async () => {
    let out = '';
    const code = await superviseWorkers({ count: 2, start: start({ 2: 'dies' }), write: (t) => void (out += t), restart: { initialDelayMs: 20, maxDelayMs: 1000, stableMs: 10_000, maxQuickDeaths: 3 } });
    assert.equal(code, 1, out);
    assert.match(out, /worker 2 \(pid \d+\) exited \(exit code 1\): restarting in 40 ms/);
    assert.match(out, /worker 2 \(pid \d+\) exited \(exit code 1\): restarting in 80 ms/);
    assert.match(out, /worker 2 ready: node test:\d+, pid \d+ \(restarted\)/);
    assert.match(out, /it died 3 times within 10 s of starting: giving up/);
    assert.equal(out.match(/worker 2 ready/g)?.length, 3, 'started once and restarted twice');
  });

  it('kills a worker that does not report ready in time, and fails the start', async () => {
    let out = '';
    const code = await superviseWorkers({ count: 2, start: start({ 1: 'hangs' }), write: (t) => void (out += t), startTimeoutMs: 300 });
    assert.equal(code, 1, out);
    assert.match(out, /worker 1 \(pid \d+\) did not become ready within 0\.3 s: killing it/);
    assert.match(out, /worker 1 \(pid \d+\) failed to start \(killed by SIGKILL\): stopping/);
    assert.doesNotMatch(out, /worker 2/, 'the others wait for worker 1');
  });
});
