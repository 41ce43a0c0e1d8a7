#!/usr/bin/env node
/**
 * @module cli — the `palisade` executable. Ctrl-C aborts the running command (a running task is
 * cancelled on the server); a second Ctrl-C exits at once.
 */
import { main } from './cli/main.ts';

const controller = new AbortController();
process.on('SIGINT', () => {
  if (controller.signal.aborted) process.exit(130);
  controller.abort(new DOMException('interrupted', 'AbortError'));
});

process.exitCode = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  stdin: process.stdin,
  signal: controller.signal,
});
