/** @module cli/output — where the CLI writes, and in which colours (only on a TTY, never with NO_COLOR). */

/** A writable the CLI prints to. */
export interface Sink {
  write(text: string): unknown;
  isTTY?: boolean | undefined;
}

/** Everything the CLI touches of its process, replaceable in tests. */
export interface CliIO {
  stdout: Sink;
  stderr: Sink;
  env: NodeJS.ProcessEnv;
  /** Standard input, for secrets a command must not take on its command line (`users add --password-stdin`). */
  stdin?: AsyncIterable<Buffer | string> | undefined;
  /** Aborts a running command (SIGINT). */
  signal?: AbortSignal | undefined;
}

export interface Paint {
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

const sgr = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
const plain = (s: string) => s;

/** Colours are on when stdout (and the stream written to) is a TTY and NO_COLOR is unset or empty. */
export function paintFor(io: CliIO, stream: Sink): Paint {
  const on = Boolean(io.stdout.isTTY && stream.isTTY && !io.env.NO_COLOR);
  if (!on) return { bold: plain, dim: plain, red: plain, green: plain, yellow: plain, cyan: plain };
  return { bold: sgr(1, 22), dim: sgr(2, 22), red: sgr(31, 39), green: sgr(32, 39), yellow: sgr(33, 39), cyan: sgr(36, 39) };
}

/** Lays out rows as left-aligned columns. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n') + '\n';
}

/** `1234` → `1.2 s`, `87` → `87 ms`. */
export function duration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
