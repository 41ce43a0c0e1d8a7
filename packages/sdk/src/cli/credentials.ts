/**
 * @module cli/credentials — the saved login: `$XDG_CONFIG_HOME/palisade/credentials.json`
 * (default `~/.config/palisade/credentials.json`), mode 0600 in a 0700 folder, written atomically.
 * A lock file serialises refreshes between concurrent `palisade` processes, so a rotated refresh
 * token is never spent twice.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, chmodSync, openSync, closeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { PalisadeError } from '@palisade/protocol';
import type { TokenSet } from '../lib/oauth.ts';
import { sleep } from '../lib/sleep.ts';

/** What `palisade login` saves. */
export interface SavedLogin extends TokenSet {
  version: 1;
  server: string;
  clientId: string;
  /** Absolute path of the CA file given at login, reused by later commands. */
  caFile?: string;
  savedAt: string;
}

/** Path of the credentials file for an environment. */
export function credentialsPath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.startsWith('/') ? env.XDG_CONFIG_HOME : join(env.HOME ?? homedir(), '.config');
  return join(base, 'palisade', 'credentials.json');
}

/** The saved login, or `undefined` if there is none. A corrupt file is an authentication error. */
export function loadLogin(path: string): SavedLogin | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', `${path} is not valid JSON; run \`palisade login\` again`);
  }
  const d = data as Partial<SavedLogin> | null;
  if (!d || d.version !== 1 || typeof d.server !== 'string' || typeof d.accessToken !== 'string' || typeof d.expiresAt !== 'number') {
    throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', `${path} is not a Palisade login; run \`palisade login\` again`);
  }
  return d as SavedLogin;
}

/** Writes the login atomically with mode 0600. */
export function saveLogin(path: string, login: SavedLogin): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(login, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Removes the saved login; `false` if there was none. */
export function deleteLogin(path: string): boolean {
  try {
    statSync(path);
  } catch {
    return false;
  }
  rmSync(path, { force: true });
  return true;
}

/** A lock older than this is taken to be left by a crashed process. */
const STALE_LOCK_MS = 30_000;

/** Runs `fn` holding `${path}.lock` (exclusive create); waits up to 10 s for another holder. */
export async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const until = Date.now() + 10_000;
  while (true) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { force: true });
      } catch {
        // Released meanwhile.
      }
      if (Date.now() > until) throw new PalisadeError('PAL_ERR_UNAVAILABLE', `another palisade process holds ${lock}`);
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}
