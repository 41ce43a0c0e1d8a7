/**
 * @module lib/http — the one way the SDK talks HTTP: a Web-standard `fetch` (or, for a private CA
 * in Node, a lazily loaded `node:https` one), a per-request timeout, and failures turned into
 * `PalisadeError`s (`PAL_ERR_UNAVAILABLE` for the network, `PAL_ERR_TIMEOUT` for a timeout).
 */
import { PalisadeError } from '@palisade/protocol';
import { unavailable } from './errors.ts';

/** The part of `fetch` the SDK uses. The global `fetch` and undici's both fit. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** Default time for one HTTP request, headers and body (streams are watched by their own idle timer). */
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface TransportOptions {
  /** Base URL of the server (`https://host:port`), without a trailing slash. */
  server: string;
  fetch?: FetchLike | undefined;
  /** PEM of a private CA to trust besides the system roots (Node only). */
  ca?: string | undefined;
  timeoutMs?: number | undefined;
}

export interface SendOptions {
  signal?: AbortSignal | undefined;
  /** `0` disables the timeout (used for event streams). Default: the transport's. */
  timeoutMs?: number | undefined;
  /** Used in error messages: what was being done. */
  what?: string;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Checks and normalises a server URL: `https:`, or `http:` on a loopback address only (a token must
 * never cross a network in clear text). Returns the origin plus path, without a trailing slash.
 */
export function normaliseServer(server: string): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new PalisadeError('PAL_ERR_VALIDATION', `server "${server}" is not a URL (expected https://host:port)`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    throw new PalisadeError('PAL_ERR_VALIDATION', `server "${server}" must use https: (http: is allowed on loopback addresses only)`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new PalisadeError('PAL_ERR_VALIDATION', `server "${server}" must not carry credentials, a query or a fragment`);
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** Sends requests to one server. */
export class Transport {
  readonly server: string;
  readonly timeoutMs: number;
  readonly #ca: string | undefined;
  #fetch: FetchLike | undefined;
  #loading: Promise<FetchLike> | undefined;

  constructor(options: TransportOptions) {
    this.server = normaliseServer(options.server);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#ca = options.ca;
    if (options.fetch && options.ca) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'give either `fetch` or `ca`, not both (configure the CA in your own fetch)');
    }
    this.#fetch = options.fetch ?? (options.ca ? undefined : (input, init) => globalThis.fetch(input, init));
  }

  /** The fetch function in use; loads the Node CA-aware one on first use. */
  async fetchFunction(): Promise<FetchLike> {
    if (this.#fetch) return this.#fetch;
    this.#loading ??= loadCaFetch(this.#ca ?? '').then((f) => (this.#fetch = f));
    return this.#loading;
  }

  /**
   * Sends one request. Rejects with `PAL_ERR_UNAVAILABLE` (network), `PAL_ERR_TIMEOUT`, or the
   * caller's abort reason; any HTTP status resolves.
   */
  async send(url: string, init: RequestInit, options: SendOptions = {}): Promise<Response> {
    const fetchFn = await this.fetchFunction();
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const signals: AbortSignal[] = [];
    if (options.signal) signals.push(options.signal);
    const timeout = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
    if (timeout) signals.push(timeout);
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    options.signal?.throwIfAborted();
    try {
      return await fetchFn(url, signal ? { ...init, signal } : init);
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (timeout?.aborted) {
        const e = new PalisadeError('PAL_ERR_TIMEOUT', `${options.what ?? url}: no answer within ${timeoutMs} ms`, { internal: err });
        e.cause = err;
        throw e;
      }
      throw unavailable(err, `${options.what ?? 'request'} to ${this.server} failed`);
    }
  }
}

/**
 * Loads `node-fetch.ts` (Node only). The specifier is built at run time so that browser bundlers
 * never follow it into `node:https`.
 */
async function loadCaFetch(ca: string): Promise<FetchLike> {
  const specifier = new URL('./node-fetch.ts', import.meta.url).href;
  let mod: { createCaFetch: (ca: string) => FetchLike };
  try {
    mod = (await import(specifier)) as typeof mod;
  } catch (err) {
    const e = new PalisadeError('PAL_ERR_VALIDATION', 'the `ca` option needs Node.js; in a browser the system trust store is used', { internal: err });
    e.cause = err;
    throw e;
  }
  return mod.createCaFetch(ca);
}
