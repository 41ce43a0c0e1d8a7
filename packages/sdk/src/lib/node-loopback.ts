/**
 * @module lib/node-loopback — Node only: the two local pieces of a browser sign-in. A loopback
 * receiver for the authorization code redirect (RFC 8252 §7.3), listening on 127.0.0.1 only, and
 * opening a link in the system browser. Loaded lazily by `browser-login.ts`, so browser builds
 * never include `node:http` or `node:child_process`.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The redirect path the server accepts for the CLI (any port). */
export const CALLBACK_PATH = '/callback';
/** The only interface the receiver listens on, and the host of its redirect URI. */
export const LOOPBACK_HOST = '127.0.0.1';
/** Longest a request to the receiver may take to arrive (headers included). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Open connections are cut this long after `close()` is called. */
const CLOSE_GRACE_MS = 1_000;

/** The callback that carried the expected `state`. Answer it once with `reply`. */
export interface LoopbackCallback {
  params: URLSearchParams;
  /** Answers the browser with a short plain-text page. */
  reply(status: number, text: string): void;
}

export interface LoopbackReceiver {
  /** `http://127.0.0.1:<port>/callback`. */
  redirectUri: string;
  /** The first `GET /callback` whose `state` matches; nothing else settles it. */
  callback: Promise<LoopbackCallback>;
  /** Stops listening; resolves once the port is free. */
  close(): Promise<void>;
}

export interface LoopbackOptions {
  /** The `state` sent in the authorization request; a callback must carry exactly this value. */
  state: string;
  /** Told about each refused callback (wrong `state`, a second callback, wrong host). */
  onRefused?: ((reason: string) => void) | undefined;
}

function send(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    connection: 'close',
    ...extra,
  });
  res.end(`${text}\n`);
}

/**
 * Listens on 127.0.0.1, on a port the system picks, for the redirect back from the authorization
 * server. Each request passes these checks in order: the `Host` is this receiver's (no DNS
 * rebinding) → the path is `/callback` (else 404) → the method is GET (else 405) → no
 * callback was accepted yet (else 409) → exactly one `state`, equal to the expected one (else 400,
 * and the receiver keeps waiting). The first request that passes settles `callback`.
 */
export async function listenLoopback(options: LoopbackOptions): Promise<LoopbackReceiver> {
  let accept!: (callback: LoopbackCallback) => void;
  const callback = new Promise<LoopbackCallback>((resolve) => (accept = resolve));
  let accepted = false;
  let host = '';

  const refuse = (res: ServerResponse, status: number, text: string, reason?: string): void => {
    send(res, status, text, status === 405 ? { allow: 'GET' } : {});
    if (reason) options.onRefused?.(reason);
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    req.resume();
    if (req.headers.host !== host) {
      refuse(res, 400, 'Wrong host.', `a request for host ${JSON.stringify(req.headers.host ?? '')}`);
      return;
    }
    const url = new URL(req.url ?? '/', `http://${host}`);
    if (url.pathname !== CALLBACK_PATH) {
      refuse(res, 404, 'Not found.');
      return;
    }
    if (req.method !== 'GET') {
      refuse(res, 405, 'Method not allowed.');
      return;
    }
    if (accepted) {
      refuse(res, 409, 'This sign-in has already been completed. You can close this tab.', 'a second callback');
      return;
    }
    const states = url.searchParams.getAll('state');
    if (states.length !== 1 || states[0] !== options.state) {
      refuse(
        res,
        400,
        'This link does not belong to the sign-in that is waiting (wrong state), so it was ignored.\nReturn to the terminal.',
        states.length === 0 ? 'a callback without state' : 'a callback with the wrong state',
      );
      return;
    }
    accepted = true;
    let replied = false;
    accept({
      params: url.searchParams,
      reply: (status, text) => {
        if (replied) return;
        replied = true;
        send(res, status, text);
      },
    });
  };

  const server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS }, onRequest);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: LOOPBACK_HOST, port: 0, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  host = `${LOOPBACK_HOST}:${port}`;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      server.closeIdleConnections();
    }));

  return { redirectUri: `http://${host}${CALLBACK_PATH}`, callback, close };
}

/**
 * The program and arguments that open `url` in the system browser on `platform`, or `undefined`
 * where none can: `open` on macOS, `rundll32 url.dll,FileProtocolHandler` on Windows (no `cmd`,
 * so nothing in the URL is read by a shell), `xdg-open` elsewhere when a display is set (without
 * one it might start a text browser in this terminal).
 */
export function browserCommand(url: string, platform: NodeJS.Platform, env: NodeJS.ProcessEnv): { command: string; args: string[] } | undefined {
  const protocol = new URL(url).protocol;
  if (protocol !== 'https:' && protocol !== 'http:') return undefined;
  if (platform === 'darwin') return { command: 'open', args: [url] };
  if (platform === 'win32') return { command: 'rundll32', args: ['url.dll,FileProtocolHandler', url] };
  if (!env.DISPLAY && !env.WAYLAND_DISPLAY) return undefined;
  return { command: 'xdg-open', args: [url] };
}

/** Tries to open `url` in the system browser; resolves with whether a program was started. Never rejects. */
export function openSystemBrowser(url: string, platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  let how: ReturnType<typeof browserCommand>;
  try {
    how = browserCommand(url, platform, env);
  } catch {
    how = undefined;
  }
  if (!how) return Promise.resolve(false);
  const { command, args } = how;
  return new Promise((resolve) => {
    try {
      const child = spawn(command, args, { stdio: 'ignore', detached: true, windowsHide: true, shell: false });
      child.once('error', () => resolve(false));
      child.once('spawn', () => {
        child.unref();
        resolve(true);
      });
    } catch {
      resolve(false);
    }
  });
}
