/**
 * @module cli/main — the `palisade` command line: one table of commands, each with its options,
 * usage and handler; global options; credentials from flags, environment or the saved login;
 * results on stdout (one JSON document with `--json`), errors on stderr, documented exit codes.
 */
import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { FINAL_STATES, PalisadeError, type Recipe, type TaskEvent, type TaskView } from '@palisade/protocol';
import { Palisade, type PalisadeOptions } from '../client.ts';
import { BROWSER_LOGIN_TIMEOUT_MS, browserLogin } from '../browser-login.ts';
import { CLI_CLIENT_ID, deviceLogin, refreshingTokenProvider, refreshTokens, revokeToken } from '../device.ts';
import { TaskError } from '../lib/errors.ts';
import { normaliseServer } from '../lib/http.ts';
import { TOKEN_REFRESH_MARGIN_MS, type TokenSet } from '../lib/oauth.ts';
import { parseDuration, parseInputs, parseList, UsageError } from './args.ts';
import type { Command, Context, Values } from './command.ts';
import { credentialsPath, deleteLogin, loadLogin, saveLogin, withLock, type SavedLogin } from './credentials.ts';
import { EXIT, EXIT_DOC, exitCodeFor, hintFor } from './exit.ts';
import { duration, paintFor, table, type CliIO } from './output.ts';
import { keysList, keysRotate } from './keys.ts';
import { sessionsList, sessionsRevoke } from './sessions.ts';
import { usersAdd } from './users.ts';
import { CERTS_COMMANDS } from './certs.ts';

export type { CliIO } from './output.ts';

/** The server used when neither `--server`, `PALISADE_SERVER` nor a saved login names one. */
export const DEFAULT_SERVER = 'https://127.0.0.1:8443';

const GLOBAL_OPTIONS = {
  server: { type: 'string' },
  ca: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const satisfies ParseArgsOptionsConfig;

const GLOBAL_HELP: Array<[string, string]> = [
  ['--server URL', 'server base URL (env PALISADE_SERVER; default: the saved login, else ' + DEFAULT_SERVER + ')'],
  ['--ca FILE', "PEM file of a private CA to trust, e.g. the dev server's (env PALISADE_CA_FILE)"],
  ['--client-id ID', 'API client id for client credentials (env PALISADE_CLIENT_ID)'],
  ['--client-secret S', 'API client secret (env PALISADE_CLIENT_SECRET)'],
  ['--json', 'print exactly one JSON document on stdout (the result, or the error problem)'],
  ['-h, --help', 'show help'],
  ['-V, --version', 'show the version'],
];

// ── helpers ───────────────────────────────────────────────────────────────────────────────────

function str(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function strs(values: Values, name: string): string[] {
  const v = values[name];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
}

function readPem(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read the CA file ${file}: ${(err as Error).message}`);
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function taskLine(task: TaskView): string {
  const parts = [`task ${task.id}`, task.state];
  if (task.recipe) parts.push(`recipe ${task.recipe}`);
  parts.push(`site ${task.site}`);
  if (task.agentId) parts.push(`agent ${task.agentId}`);
  return parts.join('  ');
}

function printTask(ctx: Context, task: TaskView): void {
  const p = ctx.out;
  const mark = task.state === 'succeeded' ? p.green('✔') : FINAL_STATES.has(task.state) ? p.red('✖') : p.yellow('…');
  let line = `${mark} ${taskLine(task)}`;
  if (task.result) line += `  ${duration(task.result.timings.totalMs)}`;
  ctx.print(`${line}\n`);
  if (task.error) ctx.print(`  ${p.red(task.error.code)}: ${task.error.message}${task.error.step !== undefined ? ` (step ${task.error.step})` : ''}\n`);
  if (task.result && Object.keys(task.result.outputs).length > 0) {
    ctx.print(`${p.bold('outputs')}\n${JSON.stringify(task.result.outputs, null, 2)}\n`);
  }
  if (task.result && task.result.artifacts.length > 0) {
    ctx.print(`${p.bold('artifacts')}\n`);
    ctx.print(
      table(
        task.result.artifacts.map((a) => [
          `  ${a.name}`,
          a.kind,
          a.filename ?? '',
          a.mimeType ?? '',
          a.bytes !== undefined ? `${a.bytes} B` : '',
        ]),
      ),
    );
  }
}


// ── commands ──────────────────────────────────────────────────────────────────────────────────

const login: Command = {
  name: 'login',
  args: '[--browser]',
  summary: 'sign in and save the login: the device grant, or with --browser the authorization code flow',
  details:
    'By default (device grant) it shows a link and a code; confirm them in any browser where you can sign in to\n' +
    'Palisade, even on another machine. Use this over SSH, in a container, or without a browser here.\n' +
    'With --browser it signs in through a browser on this machine: it listens on 127.0.0.1 (a free port) for\n' +
    'the redirect back, shows the link and tries to open it; you sign in and approve, and the browser returns\n' +
    'to palisade by itself (authorization code + PKCE). Use it when the browser runs on this machine.\n' +
    'Saves the server and tokens in $XDG_CONFIG_HOME/palisade/credentials.json (default ~/.config/palisade/), mode 0600.',
  options: { browser: { type: 'boolean' }, 'no-open': { type: 'boolean' }, timeout: { type: 'string' } },
  optionHelp: [
    ['--browser', 'sign in through a browser on this machine (authorization code + PKCE, loopback redirect)'],
    ['--no-open', 'with --browser: only show the link, do not open the browser'],
    ['--timeout DURATION', 'with --browser: how long to wait for the sign-in, e.g. 90s, 10m (default 5m)'],
  ],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const { io, values } = ctx;
    const browser = values.browser === true;
    if (!browser && values['no-open'] === true) throw new UsageError('--no-open goes with --browser');
    const timeout = str(values, 'timeout');
    if (!browser && timeout !== undefined) throw new UsageError('--timeout goes with --browser (the device code says how long it is valid)');
    const timeoutMs = timeout !== undefined ? parseDuration(timeout) : BROWSER_LOGIN_TIMEOUT_MS;
    const path = credentialsPath(io.env);
    const saved = loadLogin(path);
    const server = normaliseServer(str(values, 'server') ?? io.env.PALISADE_SERVER ?? saved?.server ?? DEFAULT_SERVER);
    const caOption = str(values, 'ca') ?? io.env.PALISADE_CA_FILE;
    const caFile = caOption ? resolvePath(caOption) : saved?.server === server ? saved.caFile : undefined;
    const ca = caFile ? readPem(caFile) : undefined;
    const e = ctx.err;
    const tokens = browser
      ? await browserLogin({
          server,
          ca,
          signal: io.signal,
          timeoutMs,
          open: values['no-open'] !== true,
          onUrl: (url) => {
            io.stderr.write(
              `Open this link to sign in:\n\n  ${e.bold(url)}\n\n` +
                (values['no-open'] === true ? '' : 'Trying to open it in your browser; if nothing opens, copy the link. ') +
                `Waiting up to ${waitText(timeoutMs)}…\n`,
            );
          },
          onRefusedCallback: (reason) => {
            io.stderr.write(`${e.yellow('!')} refused ${reason} on the loopback port; still waiting\n`);
          },
        })
      : await deviceLogin({
          server,
          ca,
          signal: io.signal,
          onCode: (code) => {
            const link = code.verificationUriComplete ?? code.verificationUri;
            io.stderr.write(
              `To sign in, open\n\n  ${e.bold(link)}\n\nand check that it shows the code ${e.bold(code.userCode)}` +
                ` (valid ${Math.round(code.expiresIn / 60)} min). Waiting…\n`,
            );
          },
        });
    const record: SavedLogin = { version: 1, server, clientId: CLI_CLIENT_ID, ...tokens, savedAt: new Date().toISOString() };
    if (caFile) record.caFile = caFile;
    saveLogin(path, record);
    let who: { sub: string; scopes: string[] } | undefined;
    try {
      who = await new Palisade(clientOptions(server, ca, { accessToken: tokens.accessToken })).me();
    } catch {
      who = undefined;
    }
    if (ctx.json) ctx.printJson({ server, sub: who?.sub ?? null, scopes: who?.scopes ?? tokens.scope?.split(' ') ?? [] });
    else ctx.print(`${ctx.out.green('✔')} signed in to ${server}${who ? ` as ${who.sub}` : ''}\n`);
    return EXIT.OK;
  },
};

/** `300000` → `5 min`, `90000` → `90 s`. */
function waitText(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : `${Math.round(ms / 1000)} s`;
}

const logout: Command = {
  name: 'logout',
  args: '',
  summary: 'revoke and delete the saved login',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const path = credentialsPath(ctx.io.env);
    let saved: SavedLogin | undefined;
    try {
      saved = loadLogin(path);
    } catch {
      saved = undefined;
    }
    if (saved?.refreshToken) {
      const ca = saved.caFile ? safeRead(saved.caFile) : undefined;
      await revokeToken({ server: saved.server, ca, token: saved.refreshToken, timeoutMs: 5000 });
    }
    const existed = deleteLogin(path);
    if (ctx.json) ctx.printJson({ signedOut: existed });
    else ctx.print(existed ? `signed out${saved ? ` of ${saved.server}` : ''}\n` : 'not signed in\n');
    return EXIT.OK;
  },
};

function safeRead(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

const whoami: Command = {
  name: 'whoami',
  args: '',
  summary: 'show who the credentials belong to',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const client = await ctx.client();
    const me = await client.me({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ server: client.server, ...me });
    else ctx.print(table([['server', client.server], ['subject', me.sub], ['client', me.clientId], ['scopes', me.scopes.join(' ')]]));
    return EXIT.OK;
  },
};

const clientsCreate: Command = {
  name: 'clients create',
  args: '--name NAME [--scopes tasks]',
  summary: 'create an API client (client credentials); prints its secret once',
  options: { name: { type: 'string' }, scopes: { type: 'string', multiple: true } },
  optionHelp: [
    ['--name NAME', 'a name to recognise the client by'],
    ['--scopes LIST', 'comma-separated scopes (default: tasks)'],
  ],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const name = str(ctx.values, 'name');
    if (!name) throw new UsageError('--name is required');
    const scopes = parseList(strs(ctx.values, 'scopes'));
    const client = await ctx.client();
    const created = await client.clients.create(scopes.length > 0 ? { name, scopes } : { name }, { signal: ctx.io.signal });
    if (ctx.json) {
      ctx.printJson(created);
    } else {
      ctx.print(table([['client id', created.clientId], ['client secret', created.clientSecret], ['name', created.name], ['scopes', created.scopes.join(' ')]]));
      ctx.note(`${ctx.err.yellow('!')} store the client secret now: it is not shown again.\n`);
    }
    return EXIT.OK;
  },
};

const clientsList: Command = {
  name: 'clients list',
  args: '',
  summary: 'list API clients',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const clients = await (await ctx.client()).clients.list({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ clients });
    else if (clients.length === 0) ctx.print('no API clients\n');
    else ctx.print(table([['CLIENT ID', 'NAME', 'SCOPES', 'CREATED'], ...clients.map((c) => [c.clientId, c.name, c.scopes.join(' '), c.createdAt])]));
    return EXIT.OK;
  },
};

const clientsDelete: Command = {
  name: 'clients delete',
  args: 'ID',
  summary: 'delete an API client; its tokens stop working',
  options: {},
  optionHelp: [],
  minArgs: 1,
  maxArgs: 1,
  async run(ctx, [id]) {
    await (await ctx.client()).clients.delete(id as string, { signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ deleted: id });
    else ctx.print(`deleted client ${id}\n`);
    return EXIT.OK;
  },
};

const run: Command = {
  name: 'run',
  args: '<recipe> | --flow FILE --site ORIGIN',
  summary: 'run a recipe (or a DevTools Recorder flow) and wait for the result',
  details:
    'Streams progress to stderr on a terminal. Ctrl-C cancels the task on the server.\n' +
    'Exits 0 when the task succeeded, 1 when it failed, was cancelled or expired, 6 when no agent could take it.',
  options: {
    input: { type: 'string', short: 'i', multiple: true },
    agent: { type: 'string' },
    timeout: { type: 'string' },
    'idempotency-key': { type: 'string' },
    'wait-for-agent': { type: 'boolean' },
    flow: { type: 'string' },
    site: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  },
  optionHelp: [
    ['-i, --input KEY=VALUE', 'a recipe input; repeat for more'],
    ['--agent ID', 'run on this agent only'],
    ['--timeout DURATION', 'task deadline, e.g. 90s, 2m (default: the recipe\'s, else 120s)'],
    ['--idempotency-key K', 'the same key returns the same task instead of a second one'],
    ['--wait-for-agent', 'queue until an eligible agent connects instead of failing'],
    ['--flow FILE', 'a flow exported by Chrome DevTools Recorder (JSON)'],
    ['--site ORIGIN', 'the origin the flow runs on (with --flow)'],
    ['-q, --quiet', 'no progress lines'],
  ],
  minArgs: 0,
  maxArgs: 1,
  async run(ctx, [recipe]) {
    const { values, io } = ctx;
    const flowFile = str(values, 'flow');
    const site = str(values, 'site');
    if (recipe && flowFile) throw new UsageError('give a recipe or --flow, not both');
    if (!recipe && !flowFile) throw new UsageError('missing the recipe name (or --flow FILE --site ORIGIN)');
    if (flowFile && !site) throw new UsageError('--flow needs --site ORIGIN');
    if (!flowFile && site) throw new UsageError('--site goes with --flow');
    const input = parseInputs(strs(values, 'input'));
    const timeout = str(values, 'timeout');
    const options: Parameters<Palisade['run']>[2] & object = {};
    if (timeout !== undefined) options.timeoutMs = parseDuration(timeout);
    const agent = str(values, 'agent');
    if (agent !== undefined) options.agentId = agent;
    const key = str(values, 'idempotency-key');
    if (key !== undefined) options.idempotencyKey = key;
    if (values['wait-for-agent'] === true) options.waitForAgent = true;
    if (io.signal) options.signal = io.signal;
    const showProgress = !ctx.json && values.quiet !== true && Boolean(io.stderr.isTTY);
    if (showProgress) options.onProgress = (event) => progress(ctx, event);
    const steps = flowFile ? readFlow(flowFile) : undefined;
    const client = await ctx.client();
    const hasInput = Object.keys(input).length > 0;
    try {
      const task = steps
        ? await client.runSteps(site as string, steps as never, hasInput ? input : undefined, options)
        : await client.run(recipe as string, hasInput ? input : undefined, options);
      if (ctx.json) ctx.printJson(task);
      else printTask(ctx, task);
      return EXIT.OK;
    } catch (err) {
      if (err instanceof TaskError) {
        if (ctx.json) ctx.printJson(err.task);
        else {
          printTask({ ...ctx, print: ctx.note, out: ctx.err }, err.task);
          const hint = hintFor(err);
          if (hint) ctx.note(`${ctx.err.dim('hint:')} ${hint}\n`);
        }
        return exitCodeFor(err);
      }
      throw err;
    }
  },
};

function readFlow(file: string): unknown[] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`--flow ${file}: ${err instanceof SyntaxError ? 'not valid JSON' : (err as Error).message}`);
  }
  const steps = Array.isArray(data) ? data : (data as { steps?: unknown } | null)?.steps;
  if (!Array.isArray(steps) || steps.length === 0) {
    throw new UsageError(`--flow ${file}: expected a DevTools Recorder flow ({ "title": …, "steps": [ … ] })`);
  }
  return steps;
}

function progress(ctx: Context, event: TaskEvent): void {
  const p = ctx.err;
  if (event.type === 'state') ctx.note(`${p.dim('●')} ${event.state}\n`);
  else if (event.type === 'progress') {
    if (event.status === 'started') ctx.note(`${p.dim(`  ${event.step + 1}.`)} ${event.stepType}…\n`);
    else ctx.note(`${p.green('  ✔')} ${event.stepType} ${p.dim(duration(event.elapsedMs))}\n`);
  }
}

const recipesList: Command = {
  name: 'recipes list',
  args: '',
  summary: 'list the recipes (also: palisade recipes)',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const recipes = await (await ctx.client()).recipes({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ recipes });
    else if (recipes.length === 0) ctx.print('no recipes\n');
    else ctx.print(table([['NAME', 'SITE', 'TITLE'], ...recipes.map((r) => [r.name, r.site, r.title])]));
    return EXIT.OK;
  },
};

const recipesShow: Command = {
  name: 'recipes show',
  args: 'NAME',
  summary: 'show one recipe: its inputs, outputs and steps',
  options: {},
  optionHelp: [],
  minArgs: 1,
  maxArgs: 1,
  async run(ctx, [name]) {
    const recipe = await (await ctx.client()).recipe(name as string, { signal: ctx.io.signal });
    if (ctx.json) ctx.printJson(recipe);
    else printRecipe(ctx, recipe);
    return EXIT.OK;
  },
};

function printRecipe(ctx: Context, r: Recipe): void {
  const p = ctx.out;
  ctx.print(`${p.bold(r.name)} — ${r.title}\n`);
  if (r.description) ctx.print(`${r.description}\n`);
  ctx.print(`site: ${r.site}\n`);
  const inputs = Object.entries(r.inputs);
  if (inputs.length > 0) {
    ctx.print(`${p.bold('inputs')}\n`);
    ctx.print(
      table(
        inputs.map(([k, v]) => [
          `  ${k}`,
          v.required ? 'required' : v.default !== undefined ? `default ${JSON.stringify(v.default)}` : 'optional',
          v.description ?? '',
        ]),
      ),
    );
  }
  if (r.outputs && r.outputs.length > 0) ctx.print(`${p.bold('outputs')} ${r.outputs.join(', ')}\n`);
  ctx.print(`${p.bold('steps')} ${r.steps.map((s) => s.type).join(' → ')}\n`);
}

const agents: Command = {
  name: 'agents',
  args: '',
  summary: 'list your agents (browsers with the Palisade extension) and their granted sites',
  options: {},
  optionHelp: [],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const list = await (await ctx.client()).agents({ signal: ctx.io.signal });
    if (ctx.json) ctx.printJson({ agents: list });
    else if (list.length === 0) ctx.print('no agents: install the Palisade extension and sign it in\n');
    else {
      const p = ctx.out;
      ctx.print(
        table([
          ['ID', 'NAME', 'VERSION', 'STATUS', 'GRANTS'],
          ...list.map((a) => [a.id, a.name, a.version, a.connected ? p.green('connected') : p.dim('offline'), a.grants.join(' ')]),
        ]),
      );
    }
    return EXIT.OK;
  },
};

const tasksGet: Command = {
  name: 'tasks get',
  args: 'ID',
  summary: 'show a task',
  options: {},
  optionHelp: [],
  minArgs: 1,
  maxArgs: 1,
  async run(ctx, [id]) {
    const task = await (await ctx.client()).get(id as string, { signal: ctx.io.signal });
    if (ctx.json) ctx.printJson(task);
    else printTask(ctx, task);
    return EXIT.OK;
  },
};

const tasksCancel: Command = {
  name: 'tasks cancel',
  args: 'ID',
  summary: 'cancel a task',
  options: {},
  optionHelp: [],
  minArgs: 1,
  maxArgs: 1,
  async run(ctx, [id]) {
    const task = await (await ctx.client()).cancel(id as string, { signal: ctx.io.signal });
    if (ctx.json) ctx.printJson(task);
    else printTask(ctx, task);
    return EXIT.OK;
  },
};

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [
  login, logout, whoami, run, recipesList, recipesShow, agents, tasksGet, tasksCancel, clientsCreate, clientsList, clientsDelete, usersAdd,
  sessionsList, sessionsRevoke, keysList, keysRotate, ...CERTS_COMMANDS,
];

/** Short forms: `palisade recipes` is `palisade recipes list` (the same for clients, sessions and keys). */
const ALIASES: Record<string, string> = { recipes: 'recipes list', clients: 'clients list', sessions: 'sessions list', keys: 'keys list' };

// ── help ──────────────────────────────────────────────────────────────────────────────────────

function optionLines(rows: Array<[string, string]>): string {
  const width = Math.max(...rows.map(([f]) => f.length));
  return rows.map(([f, d]) => `  ${f.padEnd(width)}  ${d}`).join('\n');
}

/** The top-level `palisade --help`. */
export function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'palisade — run browser automation on your own, signed-in browser, safely',
    '',
    'Usage: palisade <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Global options:',
    optionLines(GLOBAL_HELP),
    '',
    'Credentials: --client-id/--client-secret (or PALISADE_CLIENT_ID/PALISADE_CLIENT_SECRET) for an API',
    'client; otherwise the login saved by `palisade login`.',
    '',
    'Exit codes:',
    ...EXIT_DOC.map(([code, text]) => `  ${code}  ${text}`),
    '',
    'Run `palisade <command> --help` for the options of a command.',
    '',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const lines = [`Usage: palisade ${c.name}${c.args ? ` ${c.args}` : ''} [options]`, '', c.summary];
  if (c.details) lines.push('', c.details);
  if (c.optionHelp.length > 0) lines.push('', 'Options:', optionLines(c.optionHelp));
  lines.push('', 'Global options:', optionLines(GLOBAL_HELP), '', 'Exit codes:', ...EXIT_DOC.map(([code, text]) => `  ${code}  ${text}`), '');
  return lines.join('\n');
}

// ── credentials ───────────────────────────────────────────────────────────────────────────────

function clientOptions(server: string, ca: string | undefined, auth: Partial<PalisadeOptions>): PalisadeOptions {
  const options: PalisadeOptions = { server, ...auth };
  if (ca !== undefined) options.ca = ca;
  return options;
}

/** Builds the client: client credentials if given, else the saved login (refreshed and re-saved as it rotates). */
async function makeClient(io: CliIO, values: Values): Promise<Palisade> {
  const clientId = str(values, 'client-id') ?? io.env.PALISADE_CLIENT_ID;
  const clientSecret = str(values, 'client-secret') ?? io.env.PALISADE_CLIENT_SECRET;
  const serverOption = str(values, 'server') ?? io.env.PALISADE_SERVER;
  const caOption = str(values, 'ca') ?? io.env.PALISADE_CA_FILE;
  if (clientId || clientSecret) {
    if (!clientId || !clientSecret) throw new UsageError('--client-id and --client-secret go together (or PALISADE_CLIENT_ID and PALISADE_CLIENT_SECRET)');
    let server = serverOption;
    if (server === undefined) {
      let saved: SavedLogin | undefined;
      try {
        saved = loadLogin(credentialsPath(io.env));
      } catch {
        saved = undefined;
      }
      server = saved?.server ?? DEFAULT_SERVER;
    }
    return new Palisade(clientOptions(normaliseServer(server), caOption ? readPem(caOption) : undefined, { clientId, clientSecret }));
  }
  const path = credentialsPath(io.env);
  const saved = loadLogin(path);
  if (!saved) throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'not signed in');
  if (serverOption !== undefined && normaliseServer(serverOption) !== saved.server) {
    throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', `the saved login is for ${saved.server}, not ${normaliseServer(serverOption)}; run \`palisade login --server ${serverOption}\``);
  }
  const caFile = caOption ?? saved.caFile;
  const ca = caFile ? readPem(caFile) : undefined;
  const tokens: TokenSet = { accessToken: saved.accessToken, expiresAt: saved.expiresAt };
  if (saved.refreshToken) tokens.refreshToken = saved.refreshToken;
  const tokenProvider = refreshingTokenProvider({
    tokens,
    refresh: (current) =>
      withLock(path, async () => {
        // Another palisade process may have rotated the tokens meanwhile: use its result.
        const latest = loadLogin(path) ?? saved;
        if (latest.accessToken !== current.accessToken && Date.now() < latest.expiresAt - TOKEN_REFRESH_MARGIN_MS) return latest;
        const refreshToken = latest.refreshToken ?? current.refreshToken;
        if (!refreshToken) throw new PalisadeError('PAL_ERR_TOKEN_INVALID', 'the saved login has expired; sign in again');
        const next = await refreshTokens({ server: saved.server, ca, clientId: saved.clientId, refreshToken });
        saveLogin(path, { ...latest, ...next, savedAt: new Date().toISOString() });
        return next;
      }),
  });
  return new Palisade(clientOptions(saved.server, ca, { tokenProvider }));
}

// ── entry ─────────────────────────────────────────────────────────────────────────────────────

const ALL_OPTIONS: ParseArgsOptionsConfig = Object.assign({}, GLOBAL_OPTIONS, ...COMMANDS.map((c) => c.options));

/** Finds the command named by the leading positionals. */
function findCommand(positionals: string[]): { command: Command | undefined; rest: string[]; words: string[] } {
  for (const n of [2, 1]) {
    if (positionals.length < n) continue;
    const words = positionals.slice(0, n);
    const name = words.join(' ');
    const command = COMMANDS.find((c) => c.name === name) ?? COMMANDS.find((c) => c.name === ALIASES[name]);
    if (command) return { command, rest: positionals.slice(n), words };
  }
  return { command: undefined, rest: positionals, words: positionals.slice(0, 1) };
}

function parseError(err: unknown): UsageError {
  const e = err as { code?: string; message?: string };
  if (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) {
    const message = (e.message ?? 'bad arguments').replace(/\. To specify a positional argument.*$/s, '');
    // `-nqK…` is read as short options; it may be an ID (session ids can start with "-").
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && /^Unknown option '-[^-]/.test(message)) {
      return new UsageError(`${message}; if it is an argument that starts with "-", such as an ID, put it after "--"`);
    }
    return new UsageError(message);
  }
  return new UsageError(String(e.message ?? err));
}

/**
 * Runs one `palisade` command line; resolves with the exit code. Never throws: every error is
 * reported on stderr (or as the one JSON document on stdout with `--json`).
 */
export async function main(argv: string[], io: CliIO): Promise<number> {
  const json = argv.includes('--json');
  let command: Command | undefined;
  const ctx: Context = {
    io,
    values: {},
    json,
    out: paintFor(io, io.stdout),
    err: paintFor(io, io.stderr),
    client: () => makeClient(io, ctx.values),
    print: (text) => void io.stdout.write(text),
    note: (text) => void io.stderr.write(text),
    printJson: (value) => void io.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
  };
  try {
    let loose: { values: Values; positionals: string[]; tokens: Array<{ kind: string; name?: string; rawName?: string; index: number }> };
    try {
      loose = parseArgs({ args: argv, options: ALL_OPTIONS, strict: false, allowPositionals: true, tokens: true }) as typeof loose;
    } catch (err) {
      throw parseError(err);
    }
    // Only a flag standing alone counts: `-V` inside `-nqVx` (an ID starting with "-") is not --version.
    const asked = new Set(loose.tokens.filter((t) => t.kind === 'option' && argv[t.index] === t.rawName).map((t) => t.name));
    if (asked.has('version')) {
      ctx.print(`${version()}\n`);
      return EXIT.OK;
    }
    const { positionals } = loose;
    if (positionals[0] === 'help') {
      const found = findCommand(positionals.slice(1));
      ctx.print(found.command ? commandHelp(found.command) : globalHelp());
      return EXIT.OK;
    }
    const found = findCommand(positionals);
    command = found.command;
    if (!command) {
      if (positionals.length === 0 && asked.has('help')) {
        ctx.print(globalHelp());
        return EXIT.OK;
      }
      if (positionals.length === 0) {
        if (!json) ctx.note(globalHelp());
        throw new UsageError('missing the command');
      }
      // A command group without its subcommand (`palisade certs`): list the group.
      const group = COMMANDS.filter((c) => c.name.startsWith(`${positionals[0]} `));
      if (group.length > 0 && positionals.length === 1) {
        const list = group.map((c) => `  palisade ${c.name} ${c.args}`.trimEnd() + `\n      ${c.summary}`).join('\n');
        if (asked.has('help')) {
          ctx.print(`Commands of "palisade ${positionals[0]}":\n${list}\n\nRun \`palisade ${positionals[0]} <command> --help\` for its options.\n`);
          return EXIT.OK;
        }
        if (!json) ctx.note(`${list}\n`);
        throw new UsageError(`"${positionals[0]}" needs a subcommand: ${group.map((c) => c.name.split(' ')[1]).join(', ')}`);
      }
      throw new UsageError(`unknown command "${found.words.join(' ')}"`);
    }
    if (asked.has('help')) {
      ctx.print(commandHelp(command));
      return EXIT.OK;
    }
    let strict: { values: Values; positionals: string[] };
    try {
      strict = parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...command.options }, strict: true, allowPositionals: true }) as typeof strict;
    } catch (err) {
      throw parseError(err);
    }
    if (strict.values.help === true) {
      ctx.print(commandHelp(command));
      return EXIT.OK;
    }
    ctx.values = strict.values;
    const args = strict.positionals.slice(found.words.length);
    if (args.length < command.minArgs) throw new UsageError(`missing ${command.args}`);
    if (args.length > command.maxArgs) throw new UsageError(`unexpected argument "${args[command.maxArgs]}"`);
    return await command.run(ctx, args);
  } catch (err) {
    return report(ctx, err, command);
  }
}

function report(ctx: Context, err: unknown, command: Command | undefined): number {
  let error: PalisadeError;
  if (err instanceof PalisadeError) error = err;
  else if (err instanceof Error && err.name === 'AbortError') error = new PalisadeError('PAL_ERR_TASK_CANCELLED', 'interrupted');
  else {
    error = new PalisadeError('PAL_ERR_INTERNAL', err instanceof Error ? err.message : String(err), { internal: err });
  }
  const code = exitCodeFor(error);
  if (ctx.json) {
    ctx.printJson(error.toProblem());
    return code;
  }
  const p = ctx.err;
  ctx.note(`${p.red('error')} ${p.bold(error.code)}: ${error.message}\n`);
  for (const issue of error.errors ?? []) ctx.note(`  ${issue.path}: ${issue.message}\n`);
  if (error instanceof UsageError) {
    ctx.note(`${p.dim('usage:')} palisade ${command ? `${command.name} ${command.args}`.trimEnd() : '<command>'} [options]  (see --help)\n`);
  } else {
    const hint = hintFor(error);
    if (hint) ctx.note(`${p.dim('hint:')} ${hint}\n`);
  }
  return code;
}
