/**
 * @module cli/sessions — `palisade sessions` and `palisade sessions revoke`: a person's sign-ins
 * (the extension, the CLI) listed and revoked. Revoking the session of the CLI's own credentials
 * also deletes the saved login, as `palisade logout` does.
 */
import { UsageError } from './args.ts';
import type { Command, Context } from './command.ts';
import { credentialsPath, deleteLogin, loadLogin, type SavedLogin } from './credentials.ts';
import { EXIT } from './exit.ts';
import { table } from './output.ts';

/** `palisade sessions [list]`. */
export const sessionsList: Command = {
  name: 'sessions list',
  args: '',
  summary: 'list your sessions, the sign-ins of the extension and the CLI (also: palisade sessions)',
  details: "Needs a person's login (`palisade login`), not an API client. The session of these credentials is marked current.",
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const sessions = await (await ctx.client()).sessions.list({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ sessions });
    else if (sessions.length === 0) ctx.print('no sessions\n');
    else {
      const p = ctx.out;
      ctx.print(
        table([
          ['ID', 'APP', 'CREATED', 'EXPIRES', ''],
          ...sessions.map((s) => [s.id, s.clientName, s.createdAt, s.expiresAt ?? '-', s.current ? p.green('← current') : '']),
        ]),
      );
    }
    return EXIT.OK;
  },
};

/** `palisade sessions revoke ID` and `palisade sessions revoke --all`. */
export const sessionsRevoke: Command = {
  name: 'sessions revoke',
  args: 'ID | --all',
  summary: 'revoke a session (or --all): its agents disconnect, its tokens stop working',
  details:
    'Asks nothing. Revoking the session of these credentials (always the case with --all) also deletes the\n' +
    'saved login, as `palisade logout` does. An unknown ID exits 4.\n' +
    'An ID that starts with "-" goes after "--": palisade sessions revoke -- -abc…',
  options: { all: { type: 'boolean' } },
  optionHelp: [['--all', 'revoke every session of yours, this one included']],
  minArgs: 0,
  maxArgs: 1,
  async run(ctx, [id]) {
    const all = ctx.values.all === true;
    if (all && id !== undefined) throw new UsageError('give a session ID or --all, not both');
    if (!all && id === undefined) throw new UsageError('missing the session ID (or --all); `palisade sessions` lists them');
    const client = await ctx.client();
    const call = { signal: ctx.io.signal };
    if (all) {
      const revoked = await client.sessions.revokeAll(call);
      const signedOut = forgetLogin(ctx, client.server);
      if (ctx.json) ctx.printJson({ revoked, signedOut });
      else {
        ctx.print(`revoked ${revoked} session${revoked === 1 ? '' : 's'}: all of yours, this one included\n`);
        if (signedOut) ctx.print(`signed out of ${client.server}: the saved login was deleted\n`);
      }
      return EXIT.OK;
    }
    // Listed first only to know whether it is this session (and its app's name); the server decides.
    const target = (await client.sessions.list(call)).find((s) => s.id === id);
    await client.sessions.revoke(id as string, call);
    const current = target?.current === true;
    const signedOut = current && forgetLogin(ctx, client.server);
    if (ctx.json) ctx.printJson({ revoked: id, current, signedOut });
    else {
      ctx.print(`revoked session ${id}${target ? ` (${target.clientName})` : ''}${current ? ', the session of these credentials' : ''}\n`);
      if (signedOut) ctx.print(`signed out of ${client.server}: the saved login was deleted\n`);
    }
    return EXIT.OK;
  },
};

/** Deletes the saved login if it is for `server`, its session having been revoked; whether it did. */
function forgetLogin(ctx: Context, server: string): boolean {
  const path = credentialsPath(ctx.io.env);
  let saved: SavedLogin | undefined;
  try {
    saved = loadLogin(path);
  } catch {
    saved = undefined;
  }
  return saved?.server === server && deleteLogin(path);
}
