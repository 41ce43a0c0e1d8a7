/**
 * @module cli/users — `palisade users add NAME --password-stdin`: a password account, created by an
 * admin (there is no self sign-up). The password comes on standard input, never on the command line
 * (where `ps` and shell history would keep it).
 */
import { UsageError } from './args.ts';
import type { Command } from './command.ts';
import { EXIT } from './exit.ts';
import { table } from './output.ts';

/** Most bytes read from standard input for a password (the server accepts at most 128 characters). */
const MAX_STDIN_BYTES = 4096;

/** `palisade users add NAME --password-stdin`. */
export const usersAdd: Command = {
  name: 'users add',
  args: 'USERNAME --password-stdin',
  summary: 'create an account that signs in with a password (admins)',
  details:
    'The password is read from standard input (its first line), e.g. from a password manager:\n' +
    '  pass show palisade/ada | palisade users add ada --password-stdin\n' +
    'Rules: 8 to 128 characters, not a common breached password; no composition rules.',
  options: { 'password-stdin': { type: 'boolean' } },
  optionHelp: [['--password-stdin', 'read the password from standard input (required)']],
  minArgs: 1,
  maxArgs: 1,
  async run(ctx, [username]) {
    if (ctx.values['password-stdin'] !== true) throw new UsageError('give the password on standard input with --password-stdin (never on the command line)');
    if (!ctx.io.stdin) throw new UsageError('no standard input to read the password from');
    let text = '';
    for await (const chunk of ctx.io.stdin) {
      text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
      if (Buffer.byteLength(text) > MAX_STDIN_BYTES) throw new UsageError(`the password on standard input is longer than ${MAX_STDIN_BYTES} bytes`);
    }
    const password = text.split(/\r?\n/, 1)[0] ?? '';
    if (password === '') throw new UsageError('standard input held no password');
    const user = await (await ctx.client()).users.create({ username: username as string, password }, { signal: ctx.io.signal });
    if (ctx.json) ctx.printJson(user);
    else ctx.print(table([['id', user.id], ['username', user.username], ['role', user.role], ['created', user.createdAt]]));
    return EXIT.OK;
  },
};
