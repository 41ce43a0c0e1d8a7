/**
 * @module client — `Palisade`, the typed client of the Palisade API for Node and browsers.
 *
 * @example
 * const palisade = new Palisade({ server: 'https://palisade.example', clientId, clientSecret });
 * const task = await palisade.run('search-site', { query: 'shoes' }, { onProgress: (e) => console.log(e) });
 * console.log(task.result?.outputs);
 */
import {
  FINAL_STATES,
  PalisadeError,
  type Recipe,
  type RecorderFlow,
  type Step,
  type TaskEvent,
  type TaskSubmission,
  type TaskView,
} from '@palisade/protocol';
import { TaskError, errorFromResponse } from './lib/errors.ts';
import { Transport, type FetchLike } from './lib/http.ts';
import { ClientCredentials, Discovery, readJson, type TokenRequest } from './lib/oauth.ts';
import { readSSE } from './lib/sse.ts';
import { sleep } from './lib/sleep.ts';

/**
 * Supplies access tokens. Called before each request with `forceRefresh: false`, and once with
 * `forceRefresh: true` (and the refused token as `rejected`) after a 401.
 */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>;

/** Options of `new Palisade(...)`. Give one way to authenticate: client credentials, `accessToken` or `tokenProvider`. */
export interface PalisadeOptions {
  /** Base URL of the server, `https://host:port` (`http:` only on loopback). */
  server: string;
  /** API client id (client credentials, `client_secret_basic`, scope `tasks`). */
  clientId?: string;
  clientSecret?: string;
  /** A ready access token; not refreshed. */
  accessToken?: string;
  tokenProvider?: TokenProvider;
  /** PEM of a private CA to trust (Node only; the dev server's CA). */
  ca?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
  /** Timeout of one HTTP request in ms; default 30 000. Event streams use `streamIdleMs` instead. */
  timeoutMs?: number;
  /** An event stream silent this long (ms) is reconnected; default 45 000 (the server pings every 15 s). */
  streamIdleMs?: number;
}

/** Options of `run` and `runSteps`. */
export interface RunOptions {
  /** Sees every event: `state`, `progress` per step, `end`. */
  onProgress?: (event: TaskEvent) => void;
  /** Aborting cancels the task on the server; `run` then rejects with `PAL_ERR_TASK_CANCELLED`. */
  signal?: AbortSignal;
  /** The same key returns the same task instead of starting a second one. */
  idempotencyKey?: string;
  /** Pins one of your agents. */
  agentId?: string;
  /** Task deadline in ms (1 000 – 3 600 000); the server's default is 120 000. */
  timeoutMs?: number;
  /** Queue the task until an eligible agent connects instead of failing with `PAL_ERR_NO_AGENT`. */
  waitForAgent?: boolean;
}

/** An agent (a browser running the Palisade extension) of the caller. */
export interface AgentView {
  id: string;
  name: string;
  version: string;
  connected: boolean;
  /** Origins the user granted to this agent. */
  grants: string[];
  lastSeenAt: string | null;
}

/** An API client (client credentials) as listed. */
export interface ApiClient {
  clientId: string;
  name: string;
  scopes: string[];
  createdAt: string;
}

/** A newly created API client: the only time `clientSecret` is shown. */
export interface NewApiClient extends ApiClient {
  clientSecret: string;
}

/** An account that signs in with a password, as `users.create()` answers it (never the password). */
export interface User {
  id: string;
  username: string;
  role: 'user' | 'admin';
  createdAt: string;
}

/**
 * A session: one sign-in of the person on one app (the extension, the CLI), as listed by
 * `sessions.list()`. Revoking it ends every token of that sign-in.
 */
export interface Session {
  id: string;
  /** The app signed in, e.g. `palisade-cli`, `palisade-extension`. */
  clientId: string;
  /** The app's display name. */
  clientName: string;
  createdAt: string;
  /** When the sign-in ends unless used; absent when the server keeps no end. */
  expiresAt?: string;
  /** Whether this is the session of the token making the call. */
  current: boolean;
}

/**
 * A token-signing key of the server, as `keys.list()` shows it. `current` signs new tokens; `next`
 * is already published and signs after the next rotation; `retired` only verifies the tokens it
 * signed, until `retireAfter`.
 */
export interface SigningKey {
  /** The key id, the `kid` in the header of the tokens it signs. */
  kid: string;
  status: 'current' | 'next' | 'retired';
  createdAt: string;
  /** When a retired key is dropped: the last token it signed has expired by then. */
  retireAfter?: string;
}

/** Who the token belongs to. */
export interface Me {
  sub: string;
  clientId: string;
  scopes: string[];
}

/** Per-call options. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** Options of `events`. */
export interface EventsOptions extends CallOptions {
  /** How many times a broken stream is reopened in a row before giving up; default 5. */
  reconnects?: number;
}

const EVENT_TYPES = new Set(['state', 'progress', 'end']);
const DEFAULT_STREAM_IDLE_MS = 45_000;

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isTaskView(value: unknown): value is TaskView {
  return isRecord(value) && typeof value.id === 'string' && typeof value.state === 'string';
}

/** The Palisade API. One instance per server and identity; safe to share between concurrent calls. */
export class Palisade {
  /** Base URL of the server, normalised. */
  readonly server: string;
  /** Administration of API clients (needs the `admin` scope). */
  readonly clients: {
    create(options: { name: string; scopes?: string[] }, call?: CallOptions): Promise<NewApiClient>;
    list(call?: CallOptions): Promise<ApiClient[]>;
    delete(clientId: string, call?: CallOptions): Promise<void>;
  };
  /** Password accounts (needs an admin's token with the `admin` scope; there is no self sign-up). */
  readonly users: {
    /**
     * Creates an account that signs in with `password` (8–128 characters, not on the common
     * breached-password list). `PAL_ERR_CONFLICT` if the username is taken.
     */
    create(options: { username: string; password: string }, call?: CallOptions): Promise<User>;
  };
  /**
   * The person's own sessions (needs a person's token, as from `palisade login`; an API client's
   * gets `PAL_ERR_FORBIDDEN`). Revoking closes the session's agent WebSockets (close code 4410)
   * and its tokens are refused from then on with `PAL_ERR_SESSION_REVOKED`.
   */
  readonly sessions: {
    /** Live sessions, oldest first; the caller's own has `current: true`. */
    list(call?: CallOptions): Promise<Session[]>;
    /** Revokes one session; `PAL_ERR_NOT_FOUND` if the person has none of that id. */
    revoke(id: string, call?: CallOptions): Promise<void>;
    /** Revokes every session of the person, the caller's own included; resolves with how many. */
    revokeAll(call?: CallOptions): Promise<number>;
  };
  /**
   * The server's token-signing keys (needs an admin's token with the `admin` scope, as from
   * `palisade login`; others get `PAL_ERR_FORBIDDEN`).
   */
  readonly keys: {
    /** The key ring: one `current`, one `next`, and the `retired` keys still verifying tokens. */
    list(call?: CallOptions): Promise<SigningKey[]>;
    /**
     * Rotates without downtime: `next` becomes `current`, `current` becomes `retired` (its tokens
     * keep working until they expire), a new `next` is made. Resolves with the new ring.
     */
    rotate(call?: CallOptions): Promise<SigningKey[]>;
  };
  readonly #transport: Transport;
  readonly #token: TokenProvider | undefined;
  readonly #canRefresh: boolean;
  readonly #streamIdleMs: number;

  constructor(options: PalisadeOptions) {
    this.#transport = new Transport({ server: options.server, fetch: options.fetch, ca: options.ca, timeoutMs: options.timeoutMs });
    this.server = this.#transport.server;
    this.#streamIdleMs = options.streamIdleMs ?? DEFAULT_STREAM_IDLE_MS;
    const ways = [options.clientId !== undefined || options.clientSecret !== undefined, options.accessToken !== undefined, options.tokenProvider !== undefined];
    if (ways.filter(Boolean).length > 1) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'give one way to authenticate: clientId + clientSecret, accessToken, or tokenProvider');
    }
    if (options.clientId !== undefined || options.clientSecret !== undefined) {
      if (!options.clientId || !options.clientSecret) {
        throw new PalisadeError('PAL_ERR_VALIDATION', 'clientId and clientSecret go together');
      }
      const cc = new ClientCredentials({
        transport: this.#transport,
        discovery: new Discovery(this.#transport),
        clientId: options.clientId,
        clientSecret: options.clientSecret,
      });
      this.#token = (request) => cc.token(request);
      this.#canRefresh = true;
    } else if (options.tokenProvider) {
      this.#token = options.tokenProvider;
      this.#canRefresh = true;
    } else if (options.accessToken !== undefined) {
      const token = options.accessToken;
      this.#token = () => token;
      this.#canRefresh = false;
    } else {
      this.#token = undefined;
      this.#canRefresh = false;
    }
    this.clients = {
      create: async (body, call) => (await this.#json<NewApiClient>('POST', '/api/v1/clients', body, call)) as NewApiClient,
      list: async (call) => ((await this.#json<{ clients: ApiClient[] }>('GET', '/api/v1/clients', undefined, call))?.clients ?? []),
      delete: async (clientId, call) => {
        await this.#json('DELETE', `/api/v1/clients/${encodeURIComponent(clientId)}`, undefined, call);
      },
    };
    this.users = {
      create: async (body, call) => (await this.#json<User>('POST', '/api/v1/users', body, call)) as User,
    };
    this.sessions = {
      list: async (call) => ((await this.#json<{ sessions: Session[] }>('GET', '/api/v1/sessions', undefined, call))?.sessions ?? []),
      revoke: async (id, call) => {
        await this.#json('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`, undefined, call);
      },
      revokeAll: async (call) => {
        const revoked = (await this.#json<{ revoked: number }>('DELETE', '/api/v1/sessions', undefined, call))?.revoked;
        if (typeof revoked !== 'number') throw new PalisadeError('PAL_ERR_INTERNAL', 'DELETE /api/v1/sessions: the server did not say how many sessions it revoked');
        return revoked;
      },
    };
    const ring = async (method: string, path: string, call: CallOptions | undefined): Promise<SigningKey[]> => {
      const keys = (await this.#json<{ keys: SigningKey[] }>(method, path, undefined, call))?.keys;
      if (!Array.isArray(keys)) throw new PalisadeError('PAL_ERR_INTERNAL', `${method} ${path}: the server did not list the keys`);
      return keys;
    };
    this.keys = {
      list: (call) => ring('GET', '/api/v1/keys', call),
      rotate: (call) => ring('POST', '/api/v1/keys/rotate', call),
    };
  }

  /**
   * Runs a recipe and waits for it: submits, streams events to `onProgress`, resolves with the final
   * `TaskView` when the task succeeded. Otherwise rejects with a {@link TaskError} whose `code` is
   * the task's (`PAL_ERR_STEP_FAILED`, `PAL_ERR_NO_AGENT`, …), or with the `PalisadeError` of the request.
   */
  run(recipe: string, input?: Record<string, string>, options: RunOptions = {}): Promise<TaskView> {
    const submission: TaskSubmission = { recipe };
    if (input) submission.input = input;
    return this.#run(submission, options);
  }

  /**
   * Runs inline steps on `site` (an origin), for example the `steps` of a flow exported by Chrome
   * DevTools' Recorder (the whole flow object is accepted too). Same outcome as {@link run}.
   */
  runSteps(site: string, steps: Step[] | RecorderFlow, input?: Record<string, string>, options: RunOptions = {}): Promise<TaskView> {
    const submission: TaskSubmission = { site, steps: Array.isArray(steps) ? steps : steps.steps };
    if (input) submission.input = input;
    return this.#run(submission, options);
  }

  /** Submits a task; resolves with it as queued (or, on an idempotent replay, as it is now). */
  async submit(submission: TaskSubmission, call?: CallOptions): Promise<TaskView> {
    const task = await this.#json<TaskView>('POST', '/api/v1/tasks', submission, call);
    if (!isTaskView(task)) throw new PalisadeError('PAL_ERR_INTERNAL', 'the server answered the submission without a task');
    return task;
  }

  /** One task. */
  async get(id: string, call?: CallOptions): Promise<TaskView> {
    return (await this.#json<TaskView>('GET', `/api/v1/tasks/${encodeURIComponent(id)}`, undefined, call)) as TaskView;
  }

  /** Cancels a task; `PAL_ERR_TASK_FINISHED` if it had already ended. */
  async cancel(id: string, call?: CallOptions): Promise<TaskView> {
    return (await this.#json<TaskView>('POST', `/api/v1/tasks/${encodeURIComponent(id)}/cancel`, undefined, call)) as TaskView;
  }

  /** Every recipe the server offers. */
  async recipes(call?: CallOptions): Promise<Recipe[]> {
    return (await this.#json<{ recipes: Recipe[] }>('GET', '/api/v1/recipes', undefined, call))?.recipes ?? [];
  }

  /** One recipe; `PAL_ERR_UNKNOWN_RECIPE` if there is none of that name. */
  async recipe(name: string, call?: CallOptions): Promise<Recipe> {
    return (await this.#json<Recipe>('GET', `/api/v1/recipes/${encodeURIComponent(name)}`, undefined, call)) as Recipe;
  }

  /** The caller's agents. */
  async agents(call?: CallOptions): Promise<AgentView[]> {
    return (await this.#json<{ agents: AgentView[] }>('GET', '/api/v1/agents', undefined, call))?.agents ?? [];
  }

  /** Who the current token belongs to. */
  async me(call?: CallOptions): Promise<Me> {
    return (await this.#json<Me>('GET', '/api/v1/me', undefined, call)) as Me;
  }

  /**
   * The events of a task as they happen (`state`, `progress`, and last `end`, after which the
   * iteration finishes). A broken or silent stream is reopened (`reconnects` times in a row at most,
   * counting only reopenings that brought no new event); events the server replays are skipped.
   */
  async *events(id: string, options: EventsOptions = {}): AsyncGenerator<TaskEvent, void, undefined> {
    const path = `/api/v1/tasks/${encodeURIComponent(id)}/events`;
    const maxReconnects = options.reconnects ?? 5;
    let failures = 0;
    let lastError: unknown;
    const seen = new Set<string>();
    while (true) {
      const idle = new AbortController();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const arm = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        timer = setTimeout(
          () => idle.abort(new PalisadeError('PAL_ERR_TIMEOUT', `the event stream was silent for ${this.#streamIdleMs} ms`)),
          this.#streamIdleMs,
        );
      };
      const signal = options.signal ? AbortSignal.any([options.signal, idle.signal]) : idle.signal;
      try {
        arm();
        const res = await this.#fetch('GET', path, undefined, { signal, timeoutMs: 0, accept: 'text/event-stream' });
        if (!res.body) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the event stream has no body');
        for await (const sse of readSSE(res.body, { onChunk: arm })) {
          // Named events as the contract says; unnamed (`message`) ones are read by their `type`.
          if (!EVENT_TYPES.has(sse.event) && sse.event !== 'message') continue;
          let event: unknown;
          try {
            event = JSON.parse(sse.data);
          } catch {
            throw new PalisadeError('PAL_ERR_INTERNAL', `the server sent an event that is not JSON (${sse.event})`);
          }
          if (
            !isRecord(event) ||
            typeof event.type !== 'string' ||
            !EVENT_TYPES.has(event.type) ||
            (sse.event !== 'message' && event.type !== sse.event) ||
            (event.type === 'end' && !isTaskView(event.task))
          ) {
            throw new PalisadeError('PAL_ERR_INTERNAL', `the server sent a malformed ${sse.event} event`);
          }
          // A reopened stream replays what was already seen: skip it, and do not count it as progress.
          if (seen.has(sse.data)) continue;
          seen.add(sse.data);
          failures = 0;
          yield event as TaskEvent;
          if (event.type === 'end') return;
        }
        lastError = new PalisadeError('PAL_ERR_UNAVAILABLE', `the event stream of task ${id} closed before the task ended`);
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        const idleTimeout = idle.signal.aborted;
        if (!idleTimeout && !(err instanceof PalisadeError && (err.code === 'PAL_ERR_UNAVAILABLE' || err.code === 'PAL_ERR_TIMEOUT'))) {
          throw err;
        }
        lastError = idleTimeout ? idle.signal.reason : err;
      } finally {
        clearTimeout(timer);
      }
      failures++;
      if (failures > maxReconnects) throw lastError;
      await sleep(Math.min(250 * 2 ** (failures - 1), 5000), options.signal);
    }
  }

  async #run(submission: TaskSubmission, options: RunOptions): Promise<TaskView> {
    const { signal } = options;
    if (options.idempotencyKey !== undefined) submission.idempotencyKey = options.idempotencyKey;
    if (options.agentId !== undefined) submission.agentId = options.agentId;
    if (options.timeoutMs !== undefined) submission.timeoutMs = options.timeoutMs;
    if (options.waitForAgent !== undefined) submission.waitForAgent = options.waitForAgent;
    const aborted = (): PalisadeError => {
      const e = new PalisadeError('PAL_ERR_TASK_CANCELLED', 'the run was aborted by the caller');
      e.cause = signal?.reason;
      return e;
    };
    if (signal?.aborted) throw aborted();
    // The submission is not tied to the signal: once sent, the task exists and is cancelled below.
    const task = await this.submit(submission);
    let cancelling: Promise<unknown> | undefined;
    const cancel = (): void => {
      cancelling ??= this.cancel(task.id).catch(() => undefined);
    };
    if (signal?.aborted) {
      cancel();
      await cancelling;
      throw aborted();
    }
    if (FINAL_STATES.has(task.state)) return finish(task);
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      const eventsOptions: EventsOptions = signal ? { signal } : {};
      for await (const event of this.events(task.id, eventsOptions)) {
        options.onProgress?.(event);
        if (event.type === 'end') return finish(event.task);
      }
      return finish(await this.get(task.id));
    } catch (err) {
      if (signal?.aborted) {
        cancel();
        await cancelling;
        throw aborted();
      }
      throw err;
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }

  /**
   * Sends an authorized request; throws on non-2xx. After a 401 it retries once with a fresh token,
   * except when the session was revoked: no token of that sign-in can succeed again.
   */
  async #fetch(
    method: string,
    path: string,
    body: unknown,
    options: { signal?: AbortSignal | undefined; timeoutMs?: number; accept?: string },
  ): Promise<Response> {
    const url = `${this.#transport.server}${path}`;
    const what = `${method} ${path}`;
    let token = this.#token ? await this.#token({ forceRefresh: false }) : undefined;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      const init: RequestInit = { method, headers };
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const res = await this.#transport.send(url, init, { signal: options.signal, timeoutMs: options.timeoutMs, what });
      if (res.status === 401 && attempt === 0 && this.#canRefresh && this.#token) {
        const refused = await errorFromResponse(res);
        if (refused.code === 'PAL_ERR_SESSION_REVOKED') throw refused;
        token = await this.#token({ forceRefresh: true, rejected: token });
        continue;
      }
      if (!res.ok) throw await errorFromResponse(res);
      return res;
    }
  }

  async #json<T>(method: string, path: string, body: unknown, call: CallOptions | undefined): Promise<T | undefined> {
    const res = await this.#fetch(method, path, body, { signal: call?.signal });
    let data: unknown;
    try {
      data = await readJson(res);
    } catch (err) {
      if (call?.signal?.aborted) throw call.signal.reason;
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `${method} ${path}: the response was cut off`, { internal: err });
    }
    if (typeof data === 'string') throw new PalisadeError('PAL_ERR_INTERNAL', `${method} ${path}: the response is not JSON`);
    return data as T | undefined;
  }
}

function finish(task: TaskView): TaskView {
  if (task.state === 'succeeded') return task;
  throw new TaskError(task);
}
