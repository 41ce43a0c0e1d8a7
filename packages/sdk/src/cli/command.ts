/** @module cli/command — the shape of one CLI command and of what its handler is given. */
import type { ParseArgsOptionsConfig } from 'node:util';
import type { Palisade } from '../client.ts';
import type { CliIO, Paint } from './output.ts';

/** Parsed option values of a command line. */
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a command's handler is given. */
export interface Context {
  io: CliIO;
  values: Values;
  json: boolean;
  out: Paint;
  err: Paint;
  /** A client with the credentials of the command line, environment or saved login. */
  client(): Promise<Palisade>;
  print(text: string): void;
  note(text: string): void;
  printJson(value: unknown): void;
}

/** One command: its name (one or two words), usage, options and handler (resolves with the exit code). */
export interface Command {
  name: string;
  args: string;
  summary: string;
  details?: string;
  options: ParseArgsOptionsConfig;
  optionHelp: Array<[string, string]>;
  minArgs: number;
  maxArgs: number;
  run(ctx: Context, args: string[]): Promise<number>;
}
