/**
 * A server node in a process of its own, for tests that kill one (SIGKILL) while others go on.
 * `startNodeProcess(options)` runs this file as a child: it starts a test server with `options`
 * (JSON on argv) and prints one line, `{"url":…,"ca":…}`, once it listens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { CreateOptions } from '../../src/app.ts';

export interface NodeProcess {
  url: string;
  ca: string | undefined;
  child: ChildProcess;
  /** Kills it (SIGKILL: no shutdown, no goodbye) and waits for it to be gone. */
  kill(): Promise<void>;
}

export async function startNodeProcess(options: CreateOptions): Promise<NodeProcess> {
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const exited = once(child, 'exit').then(() => {
    throw new Error('the node process exited before it listened');
  });
  const first = new Promise<string>((resolve) => lines.once('line', resolve));
  const { url, ca } = JSON.parse(await Promise.race([first, exited])) as { url: string; ca?: string };
  exited.catch(() => undefined);
  return {
    url, ca, child,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = once(child, 'exit');
      child.kill('SIGKILL');
      await gone;
    },
  };
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const { startTestServer } = await import('./harness.ts');
  const t = await startTestServer(JSON.parse(process.argv[2]!) as CreateOptions);
  process.stdout.write(`${JSON.stringify({ url: t.url, ca: t.server.tls?.ca })}\n`);
  // The parent going away (its end of stdin closes) ends this node too.
  process.stdin.on('end', () => process.exit(0)).resume();
}
