/**
 * @module api/routes — the REST API under `/api/v1`. Every route passes `authenticate` (bearer
 * token → principal), then names the scope it needs; bodies are validated by the services.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { FINAL_STATES, PalisadeError, parse, validator, type TaskEvent, type TaskView } from '@palisade/protocol';
import { bearer, requireScope, type Principal, type TokenVerifier } from '../auth/tokens.ts';
import { newApiClient, CLIENT_SCOPES, type ClientDirectory } from '../auth/clients.ts';
import { checkPasswordRules, hashPassword } from '../auth/passwords.ts';
import { USERNAME, newUserId } from '../auth/interactions.ts';
import type { DurableStore } from '../store/types.ts';
import type { SessionManager } from '../auth/sessions.ts';
import type { KeyView } from '../auth/keys.ts';
import type { SecurityEvents } from '../siem/events.ts';
import type { TaskListener, TaskService } from '../tasks/service.ts';
import type { RecipeRegistry } from '../tasks/recipes.ts';
import type { AgentRegistry } from '../gateway/registry.ts';
import { rateLimitError, type RateLimiter } from '../edge/rate-limit.ts';
import type { RateClass } from '../config.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    /** The edge left the IP's rate check to this request's route (see `ipRateAfterAuth`). */
    ipCheckLater?: boolean;
  }
  interface FastifyContextConfig {
    /** The route checks the IP's rate of this class itself, with the principal's, after the token (edge/request-guard.ts). */
    ipRateAfterAuth?: RateClass;
  }
}

export interface ApiOptions {
  /** Per-principal request rates (the per-IP rate was checked at the edge). */
  limiter: RateLimiter;
  verifier: TokenVerifier;
  store: DurableStore;
  sessions: SessionManager;
  clients: ClientDirectory;
  tasks: TaskService;
  recipes: RecipeRegistry;
  agents: AgentRegistry;
  events: SecurityEvents;
  /** Rotates the signing keys (admin) and returns the ring. */
  rotateKeys: () => Promise<KeyView[]>;
  keyView: () => KeyView[];
  /** Interval of SSE keep-alive comments, ms. Default 15000. */
  sseKeepAliveMs?: number;
}

/** An account that signs in with a password, created by an admin (there is no self sign-up). */
const CreateUser = validator(Type.Object(
  {
    username: Type.String({ pattern: USERNAME.source, description: '3–64 letters, digits, dots, dashes or underscores' }),
    // The rules (length in code points, the breached-password list) are checked by checkPasswordRules.
    password: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { additionalProperties: false },
));

const CreateClient = validator(Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 128 }),
    scopes: Type.Optional(Type.Array(Type.Union(CLIENT_SCOPES.map((s) => Type.Literal(s))), { minItems: 1, maxItems: 8, uniqueItems: true })),
  },
  { additionalProperties: false },
));

function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new PalisadeError('PAL_ERR_UNAUTHENTICATED');
  return req.principal;
}

/** Registers the API routes. */
export async function apiRoutes(app: FastifyInstance, o: ApiOptions): Promise<void> {
  // authenticate → rateLimit (the principal's, and the IP's unless the edge checked it) → the route
  // (which names its scope). A refused token is still counted against the IP.
  app.addHook('onRoute', (route) => {
    route.config = { ...route.config, ipRateAfterAuth: 'api' };
  });
  const limit = async (req: FastifyRequest, reply: FastifyReply, principalKey?: string) => {
    const both = principalKey !== undefined && req.ipCheckLater === true;
    const v = await o.limiter.check('api', { ip: req.ip, principal: principalKey, principalOnly: principalKey !== undefined && !req.ipCheckLater });
    for (const [k, val] of v.headers) void reply.header(k, val);
    if (v.allowed) return;
    // Refused by the principal's rule, the check took nothing from the address's bucket: it is
    // charged all the same, as the edge would have (so a principal over its rate still uses up its
    // address's, which is then checked first, before any token).
    if (both && v.by === 'principal') {
      const ipv = await o.limiter.check('api', { ip: req.ip });
      if (!ipv.allowed) {
        for (const [k, val] of ipv.headers) void reply.header(k, val);
        throw rateLimitError(ipv);
      }
    }
    throw rateLimitError(v);
  };
  app.addHook('onRequest', async (req, reply) => {
    try {
      req.principal = await o.verifier.verify(bearer(req.headers.authorization));
    } catch (e) {
      const err = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', undefined, { internal: e });
      o.events.emit({
        class: 'authentication', activity: 'api.authenticate', outcome: 'failure', code: err.code, message: err.message,
        src: { ip: req.ip, origin: req.headers.origin }, data: { method: req.method, route: req.routeOptions.url },
      });
      if (req.ipCheckLater) await limit(req, reply);
      throw err;
    }
  });
  app.addHook('onRequest', async (req, reply) => {
    const p = principal(req);
    await limit(req, reply, p.kind === 'client' ? `client:${p.clientId}` : `user:${p.userId}`);
  });

  app.get('/me', async (req) => {
    const p = principal(req);
    return { sub: p.userId, clientId: p.clientId, scopes: [...p.scopes], kind: p.kind };
  });

  app.post('/tasks', async (req, reply) => {
    const p = principal(req);
    requireScope(p, 'tasks');
    const header = req.headers['idempotency-key'];
    const wait = preferWait(String(req.headers.prefer ?? ''));
    // Waiting: the caller hears the task's end from before it is dispatched (no read-back needed).
    const end = wait === undefined ? undefined : endListener();
    const { task, created, unsubscribe } = await o.tasks.submit(p, req.body, Array.isArray(header) ? header[0] : header, end?.listener);
    reply.code(created ? 201 : 200).header('location', `/api/v1/tasks/${task.id}`);
    // Created but not subscribed: the bus refused (Redis unreachable). The task is accepted; the
    // caller gets it as it stands rather than an error that would have it submitted twice.
    if (wait === undefined || FINAL_STATES.has(task.state) || (created && !unsubscribe)) {
      unsubscribe?.();
      return reply.send(task);
    }
    reply.header('preference-applied', `wait=${wait}`);
    if (unsubscribe) return reply.send(await ended(o.tasks, p, task.id, end!, unsubscribe, wait * 1000));
    return reply.send(await waitForEnd(o.tasks, p, task.id, wait * 1000)); // an idempotent replay
  });

  app.get<{ Params: { id: string } }>('/tasks/:id', async (req) => {
    const p = principal(req);
    requireScope(p, 'tasks');
    return o.tasks.get(p, req.params.id);
  });

  app.post<{ Params: { id: string } }>('/tasks/:id/cancel', async (req) => {
    const p = principal(req);
    requireScope(p, 'tasks');
    return o.tasks.cancel(p, req.params.id);
  });

  app.get<{ Params: { id: string } }>('/tasks/:id/events', async (req, reply) => streamEvents(req, reply, o));

  app.get('/recipes', async (req) => {
    requireScope(principal(req), 'tasks');
    return { recipes: o.recipes.list() };
  });

  app.get<{ Params: { name: string } }>('/recipes/:name', async (req) => {
    requireScope(principal(req), 'tasks');
    return o.recipes.get(req.params.name);
  });

  app.get('/agents', async (req) => {
    const p = principal(req);
    requireScope(p, 'tasks');
    const [stored, present] = await Promise.all([o.store.agents.listByUser(p.userId), o.tasks.present(p.userId)]);
    const where = new Map(present.map((e) => [e.agentId, e]));
    return {
      agents: stored.map((a) => {
        const live = o.agents.get(a.id);
        const seen = where.get(a.id);
        return {
          id: a.id, name: a.name, version: a.version, connected: !!live || !!seen, node: seen?.nodeId, connectedSince: seen?.since,
          grants: live ? [...live.grants] : seen?.grants ?? a.grants, lastSeenAt: a.lastSeenAt,
        };
      }),
    };
  });

  app.post('/clients', async (req, reply) => {
    const p = requireAdmin(req);
    const body = parse(CreateClient, req.body, 'client');
    const { record, secret } = newApiClient(p.userId, body.name, body.scopes ?? ['tasks']);
    await o.store.clients.create(record);
    o.events.emit({
      class: 'account_change', activity: 'client.create', outcome: 'success', message: `API client ${record.clientId} created`,
      actor: { userId: p.userId, clientId: p.clientId }, data: { newClientId: record.clientId },
    });
    return reply.code(201).send({ clientId: record.clientId, clientSecret: secret, name: record.name, scopes: record.scopes, createdAt: record.createdAt });
  });

  // Password accounts: an admin creates them; the person then signs in with the password.
  app.post('/users', async (req, reply) => {
    const p = requireAdmin(req, 'create accounts');
    const body = parse(CreateUser, req.body, 'user');
    checkPasswordRules(body.password);
    const taken = () => new PalisadeError('PAL_ERR_CONFLICT', `the username ${body.username} is taken`);
    if (await o.store.users.byUsername(body.username)) throw taken();
    const user = { id: newUserId(), username: body.username, passwordHash: await hashPassword(body.password), role: 'user' as const, createdAt: new Date().toISOString() };
    try {
      await o.store.users.create(user);
    } catch (e) {
      // Another request took the name meanwhile (the column is unique).
      if (await o.store.users.byUsername(body.username)) throw taken();
      throw e;
    }
    o.events.emit({
      class: 'account_change', activity: 'user.create', outcome: 'success', message: `account ${user.username} created`,
      actor: { userId: p.userId, clientId: p.clientId }, src: { ip: req.ip }, data: { newUserId: user.id },
    });
    return reply.code(201).send({ id: user.id, username: user.username, role: user.role, createdAt: user.createdAt });
  });

  app.get('/clients', async (req) => {
    const p = requireAdmin(req);
    const list = await o.store.clients.listByOwner(p.userId);
    return { clients: list.map((c) => ({ clientId: c.clientId, name: c.name, scopes: c.scopes, createdAt: c.createdAt })) };
  });

  app.delete<{ Params: { id: string } }>('/clients/:id', async (req, reply) => {
    const p = requireAdmin(req);
    const c = await o.store.clients.byId(req.params.id);
    if (!c || c.ownerUserId !== p.userId || !(await o.clients.revoke(c.clientId))) {
      throw new PalisadeError('PAL_ERR_NOT_FOUND', `no client ${req.params.id}`);
    }
    o.events.emit({ class: 'account_change', activity: 'client.revoke', outcome: 'success', message: `API client ${c.clientId} revoked`, actor: { userId: p.userId } });
    return reply.code(204).send();
  });

  // Token-signing keys (admins): list, and rotate without downtime (auth/keys.ts).
  app.get('/keys', async (req) => {
    requireAdmin(req, 'manage signing keys');
    return { keys: o.keyView() };
  });

  app.post('/keys/rotate', async (req) => {
    const p = requireAdmin(req, 'manage signing keys');
    const keys = await o.rotateKeys();
    o.events.emit({ class: 'account_change', activity: 'keys.rotate', outcome: 'success', severity: 'medium', message: 'token-signing keys rotated', actor: { userId: p.userId, clientId: p.clientId }, src: { ip: req.ip }, data: { current: keys.find((k) => k.status === 'current')?.kid } });
    return { keys };
  });

  // A person's own sessions (sign-ins of the extension, the CLI): listed and revoked by a person's
  // token with the `tasks` scope (the CLI's), never by an API client's nor by an agent-only token
  // (the extension's: a stolen one must not list or end the person's other sign-ins).
  app.get('/sessions', async (req) => {
    const p = requirePerson(req);
    const list = await o.sessions.list(p.userId);
    return { sessions: list.map((s) => ({ ...s, current: s.id === p.sessionId })) };
  });

  app.delete<{ Params: { id: string } }>('/sessions/:id', async (req, reply) => {
    const p = requirePerson(req);
    if (!(await o.sessions.revoke(p.userId, req.params.id, { ip: req.ip }))) throw new PalisadeError('PAL_ERR_NOT_FOUND', `no session ${req.params.id}`);
    return reply.code(204).send();
  });

  app.delete('/sessions', async (req) => {
    const p = requirePerson(req);
    return { revoked: await o.sessions.revokeAll(p.userId, { ip: req.ip }) };
  });
}

function requirePerson(req: FastifyRequest): Principal {
  const p = req.principal!;
  if (p.kind !== 'user') throw new PalisadeError('PAL_ERR_FORBIDDEN', "sessions are managed with a person's token (palisade login), not an API client's");
  requireScope(p, 'tasks');
  return p;
}

/** Longest `Prefer: wait=N` honoured, seconds. */
export const MAX_PREFER_WAIT_S = 60;

/** Reads `Prefer: wait=N` (RFC 7240), capped at `MAX_PREFER_WAIT_S`. */
function preferWait(header: string | undefined): number | undefined {
  const m = header ? /(?:^|[,;\s])wait=(\d{1,6})(?:$|[,;\s])/.exec(header) : null;
  return m ? Math.min(Number(m[1]), MAX_PREFER_WAIT_S) : undefined;
}

/** A task listener and the promise of the view its `end` event carries. */
function endListener(): { listener: TaskListener; end: Promise<TaskView> } {
  let done!: (v: TaskView) => void;
  const end = new Promise<TaskView>((r) => (done = r));
  const listener: TaskListener = (e) => {
    if (e.type === 'end') done(e.task);
  };
  return { listener, end };
}

/** The task's view once it ends, or its current view after `ms`; unsubscribes either way. */
async function ended(tasks: TaskService, p: Principal, id: string, { end }: { end: Promise<TaskView> }, unsubscribe: () => void, ms: number): Promise<TaskView> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)));
  const result = await Promise.race([end, timeout]);
  clearTimeout(timer);
  unsubscribe();
  return result ?? (await tasks.get(p, id));
}

/** Subscribes to a task already stored, then as `ended`. */
async function waitForEnd(tasks: TaskService, p: Principal, id: string, ms: number): Promise<TaskView> {
  const end = endListener();
  const { task, unsubscribe } = await tasks.watch(p, id, end.listener);
  if (FINAL_STATES.has(task.state)) {
    unsubscribe();
    return task;
  }
  return ended(tasks, p, id, end, unsubscribe, ms);
}

function requireAdmin(req: FastifyRequest, what = 'manage API clients'): Principal {
  const p = principal(req);
  requireScope(p, 'admin');
  if (p.role !== 'admin') throw new PalisadeError('PAL_ERR_FORBIDDEN', `only an admin may ${what}`);
  return p;
}

/**
 * `GET /tasks/:id/events` as Server-Sent Events; ends after the `end` event. Events carry ids, and
 * `Last-Event-ID` resumes after the last one seen; kept events are replayed to a late subscriber.
 */
async function streamEvents(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, o: ApiOptions): Promise<void> {
  const p = principal(req);
  requireScope(p, 'tasks');
  // HEAD: the stream's headers (and a 404 for a task that isn't the caller's), no stream.
  if (req.method === 'HEAD') {
    await o.tasks.get(p, req.params.id);
    return void reply.code(200).header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-store').send();
  }
  const lastId = Number(String(req.headers['last-event-id'] ?? '-1'));
  const queue: [TaskEvent, number][] = [];
  let write: ((e: TaskEvent, seq?: number) => void) | undefined;
  const { task, backlog, unsubscribe } = await o.tasks.watch(p, req.params.id, (e, seq) => (write ? write(e, seq) : queue.push([e, seq])), Number.isInteger(lastId) ? lastId : -1);
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    connection: 'keep-alive',
  });
  let ended = false;
  let sent = -1;
  const keepAlive = setInterval(() => res.write(': ping\n\n'), o.sseKeepAliveMs ?? 15_000);
  keepAlive.unref();
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(keepAlive);
    unsubscribe();
    res.end();
  };
  write = (e: TaskEvent, seq?: number) => {
    if (ended || (seq !== undefined && seq <= sent)) return;
    if (seq !== undefined) sent = seq;
    res.write(`${seq !== undefined ? `id: ${seq}\n` : ''}event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    if (e.type === 'end') end();
  };
  req.raw.on('close', end);
  if (backlog.length === 0) write({ type: 'state', taskId: task.id, state: task.state, at: task.updatedAt });
  // A kept `end` event has no result; the task read on subscribing has it.
  for (const { seq, event } of backlog) write(event.type === 'end' ? { type: 'end', task } : event, seq);
  if (FINAL_STATES.has(task.state)) write({ type: 'end', task });
  for (const [e, seq] of queue.splice(0)) write(e, seq);
}
