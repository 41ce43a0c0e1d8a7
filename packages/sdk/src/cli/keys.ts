/**
 * @module cli/keys — `palisade keys` and `palisade keys rotate`: the server's token-signing keys,
 * listed and rotated without downtime (admins only).
 */
import type { SigningKey } from '../client.ts';
import type { Command } from './command.ts';
import { EXIT } from './exit.ts';
import { table } from './output.ts';

const ORDER: Record<SigningKey['status'], number> = { current: 0, next: 1, retired: 2 };

/** Current first, then next, then the retired keys, newest first. */
function sorted(keys: SigningKey[]): SigningKey[] {
  return [...keys].sort((a, b) => ORDER[a.status] - ORDER[b.status] || b.createdAt.localeCompare(a.createdAt));
}

function keyTable(keys: SigningKey[]): string {
  return table([['KID', 'STATUS', 'CREATED', 'RETIRES'], ...sorted(keys).map((k) => [k.kid, k.status, k.createdAt, k.retireAfter ?? '-'])]);
}

/** `palisade keys [list]`. */
export const keysList: Command = {
  name: 'keys list',
  args: '',
  summary: "list the server's token-signing keys (also: palisade keys)",
  details:
    "Needs an admin's login (`palisade login`). `current` signs new tokens, `next` is published and signs after the\n" +
    'next rotation, `retired` keys only verify the tokens they signed, until RETIRES.',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const keys = await (await ctx.client()).keys.list({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ keys });
    else ctx.print(keyTable(keys));
    return EXIT.OK;
  },
};

/** `palisade keys rotate`. */
export const keysRotate: Command = {
  name: 'keys rotate',
  args: '',
  summary: 'rotate the token-signing keys: the next key signs from now on, tokens already issued keep working',
  details:
    "Needs an admin's login. Asks nothing. The key published as `next` becomes `current`; the old `current` is\n" +
    'retired and still verifies the tokens it signed until they expire; a new `next` is made and published.\n' +
    'Every node of the deployment follows.',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const keys = await (await ctx.client()).keys.rotate({ signal: ctx.io.signal });
    if (ctx.json) {
      ctx.printJson({ keys });
      return EXIT.OK;
    }
    const current = keys.find((k) => k.status === 'current');
    const until = keys
      .filter((k) => k.status === 'retired' && k.retireAfter !== undefined)
      .map((k) => k.retireAfter as string)
      .sort()
      .at(-1);
    ctx.print(`${ctx.out.green('✔')} rotated: key ${current?.kid ?? '(none listed)'} signs new tokens from now on\n`);
    ctx.print(
      until
        ? `tokens signed before stay valid until they expire, at the latest ${until}\n`
        : 'tokens signed before stay valid until they expire\n',
    );
    ctx.print(keyTable(keys));
    return EXIT.OK;
  },
};
