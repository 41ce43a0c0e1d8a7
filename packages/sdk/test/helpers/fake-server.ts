/**
 * A test double of the Palisade server: just enough of docs/API.md (discovery, token
 * endpoint with client credentials / device code / rotating refresh tokens, tasks, SSE events,
 * recipes, agents, clients, me) to exercise the real SDK over real HTTP.
 *
 * Recipes drive task behaviour: `ok` succeeds with outputs, `fail` fails at step 1
 * (PAL_ERR_STEP_FAILED), `no-agent` fails with PAL_ERR_NO_AGENT, `slow` runs until cancelled,
 * `drop` succeeds but the first event stream is cut after one event; any other name is unknown.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { TaskEvent, TaskView } from '@palisade/protocol';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

export interface FakeServerOptions {
  clientId?: string;
  clientSecret?: string;
  /** Lifetime of issued access tokens, seconds. */
  expiresIn?: number;
  /** Answers of successive device-code polls before approval (e.g. ['authorization_pending', 'slow_down']). */
  devicePolls?: string[];
  /** The final answer of the device poll: 'approve' (default), 'access_denied' or 'expired_token'. */
  deviceOutcome?: 'approve' | 'access_denied' | 'expired_token';
  /** Delay before the token endpoint answers, ms. */
  tokenDelayMs?: number;
  tls?: { key: string; cert: string };
}

interface TaskRecord {
  view: TaskView;
  history: Array<{ name: string; event: TaskEvent }>;
  emitter: EventEmitter;
  timers: NodeJS.Timeout[];
  streams: number;
}

const now = () => new Date().toISOString();

export async function startFakeServer(options: FakeServerOptions = {}) {
  const clientId = options.clientId ?? 'svc-1';
  const clientSecret = options.clientSecret ?? 's3cret: with spaces+plus';
  const state = {
    requests: [] as RecordedRequest[],
    validTokens: new Set<string>(),
    issued: { clientCredentials: 0, device: 0, refresh: 0 },
    refreshTokens: new Set<string>(),
    revoked: [] as string[],
    tasks: new Map<string, TaskRecord>(),
    cancels: [] as string[],
    devicePollsSeen: 0,
    clients: [] as Array<{ clientId: string; name: string; scopes: string[]; createdAt: string }>,
  };
  let seq = 0;
  const idempotency = new Map<string, string>();
  let base = '';

  const issue = (kind: 'cc' | 'device' | 'refresh') => {
    seq++;
    const access = `at-${kind}-${seq}`;
    state.validTokens.add(access);
    const body: Record<string, unknown> = { access_token: access, token_type: 'Bearer', expires_in: options.expiresIn ?? 900 };
    if (kind !== 'cc') {
      const refresh = `rt-${seq}`;
      state.refreshTokens.add(refresh);
      body.refresh_token = refresh;
      body.scope = 'openid offline_access tasks admin';
    } else body.scope = 'tasks';
    return body;
  };

  const json = (res: ServerResponse, status: number, body: unknown, type = 'application/json') => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const problem = (res: ServerResponse, status: number, code: string, detail: string) =>
    json(res, status, { type: `urn:palisade:error:${code}`, title: code, status, code, detail }, 'application/problem+json');

  const push = (task: TaskRecord, event: TaskEvent) => {
    const name = event.type;
    task.history.push({ name, event });
    task.emitter.emit('event', { name, event });
  };
  const setState = (task: TaskRecord, s: TaskView['state'], extra: Partial<TaskView> = {}) => {
    Object.assign(task.view, { state: s, updatedAt: now() }, extra);
    push(task, { type: 'state', taskId: task.view.id, state: s, at: now() });
    if (s === 'succeeded' || s === 'failed' || s === 'cancelled' || s === 'expired') {
      task.timers.forEach(clearTimeout);
      push(task, { type: 'end', task: structuredClone(task.view) });
    }
  };

  const startTask = (task: TaskRecord, recipe: string) => {
    const at = (ms: number, fn: () => void) => task.timers.push(setTimeout(fn, ms));
    const id = task.view.id;
    const progress = (step: number, stepType: string, status: 'started' | 'done') =>
      push(task, { type: 'progress', taskId: id, step, stepType, status, elapsedMs: 5 });
    if (recipe === 'no-agent') {
      at(10, () => setState(task, 'failed', { error: { code: 'PAL_ERR_NO_AGENT', message: 'no connected agent has https://example.com granted' } }));
      return;
    }
    at(10, () => setState(task, 'dispatched', { agentId: 'agent-1' }));
    at(20, () => setState(task, 'running'));
    at(30, () => progress(0, 'navigate', 'started'));
    at(40, () => progress(0, 'navigate', 'done'));
    if (recipe === 'slow') return;
    at(50, () => progress(1, 'extract', 'started'));
    if (recipe === 'fail') {
      at(60, () => setState(task, 'failed', { error: { code: 'PAL_ERR_STEP_FAILED', message: 'no element matches the selectors', step: 1 } }));
      return;
    }
    at(60, () => progress(1, 'extract', 'done'));
    at(70, () =>
      setState(task, 'succeeded', {
        result: { outputs: { title: 'Example Domain', n: 3 }, artifacts: [{ name: 'shot', kind: 'screenshot', mimeType: 'image/png', bytes: 10 }], timings: { totalMs: 55, steps: [] } },
      }),
    );
  };

  /** Writes SSE in awkward pieces: CRLF line ends, comments, a multi-line data field, tiny chunks. */
  const writeEvent = (res: ServerResponse, name: string, event: TaskEvent) => {
    const data = JSON.stringify(event, null, 1).split('\n');
    const text = `: keep-alive\r\nevent: ${name}\r\n${data.map((l) => `data: ${l}`).join('\r\n')}\r\n\r\n`;
    const bytes = Buffer.from(text);
    for (let i = 0; i < bytes.length; i += 7) res.write(bytes.subarray(i, i + 7));
  };

  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    state.requests.push({ method: req.method ?? 'GET', path, headers: req.headers, body });
    const method = req.method ?? 'GET';

    if (path === '/oauth2/.well-known/openid-configuration') {
      return json(res, 200, {
        issuer: `${base}/oauth2`,
        token_endpoint: `${base}/oauth2/token`,
        device_authorization_endpoint: `${base}/oauth2/device/auth`,
        revocation_endpoint: `${base}/oauth2/token/revocation`,
      });
    }
    if (path === '/oauth2/device/auth' && method === 'POST') {
      const form = new URLSearchParams(body);
      if (form.get('client_id') !== 'palisade-cli') return json(res, 400, { error: 'invalid_client' });
      return json(res, 200, {
        device_code: 'dc-1',
        user_code: 'WXYZ-1234',
        verification_uri: `${base}/oauth2/device`,
        verification_uri_complete: `${base}/oauth2/device?user_code=WXYZ-1234`,
        expires_in: 600,
        interval: 1,
      });
    }
    if (path === '/oauth2/token/revocation' && method === 'POST') {
      const form = new URLSearchParams(body);
      const t = form.get('token') ?? '';
      state.revoked.push(t);
      state.refreshTokens.delete(t);
      res.writeHead(200).end();
      return;
    }
    if (path === '/oauth2/token' && method === 'POST') {
      if (options.tokenDelayMs) await new Promise((r) => setTimeout(r, options.tokenDelayMs));
      const form = new URLSearchParams(body);
      const grant = form.get('grant_type');
      if (grant === 'client_credentials') {
        const auth = req.headers.authorization ?? '';
        const [id, secret] = Buffer.from(auth.replace(/^Basic /, ''), 'base64')
          .toString()
          .split(':')
          .map((p) => decodeURIComponent(p.replace(/\+/g, ' ')));
        if (id !== clientId || secret !== clientSecret) return json(res, 401, { error: 'invalid_client', error_description: 'client authentication failed' });
        if (form.get('scope') !== 'tasks') return json(res, 400, { error: 'invalid_scope' });
        state.issued.clientCredentials++;
        return json(res, 200, issue('cc'));
      }
      if (grant === 'urn:ietf:params:oauth:grant-type:device_code') {
        if (form.get('device_code') !== 'dc-1' || form.get('client_id') !== 'palisade-cli') return json(res, 400, { error: 'invalid_grant' });
        const polls = options.devicePolls ?? [];
        const i = state.devicePollsSeen++;
        if (i < polls.length) return json(res, 400, { error: polls[i] });
        const outcome = options.deviceOutcome ?? 'approve';
        if (outcome !== 'approve') return json(res, 400, { error: outcome });
        state.issued.device++;
        return json(res, 200, issue('device'));
      }
      if (grant === 'refresh_token') {
        const rt = form.get('refresh_token') ?? '';
        if (!state.refreshTokens.has(rt)) return json(res, 400, { error: 'invalid_grant', error_description: 'grant request is invalid' });
        state.refreshTokens.delete(rt); // rotation: the old one is spent
        state.issued.refresh++;
        return json(res, 200, issue('refresh'));
      }
      return json(res, 400, { error: 'unsupported_grant_type' });
    }

    if (!path.startsWith('/api/v1/')) return problem(res, 404, 'PAL_ERR_NOT_FOUND', 'no such route');
    const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (!state.validTokens.has(token)) return problem(res, 401, 'PAL_ERR_TOKEN_INVALID', 'the access token is invalid');

    if (path === '/api/v1/tasks' && method === 'POST') {
      let sub: Record<string, unknown>;
      try {
        sub = JSON.parse(body) as Record<string, unknown>;
      } catch {
        return problem(res, 400, 'PAL_ERR_VALIDATION', 'request body is not valid JSON');
      }
      const key = (req.headers['idempotency-key'] as string | undefined) ?? (sub.idempotencyKey as string | undefined);
      if (key && idempotency.has(key)) return json(res, 200, state.tasks.get(idempotency.get(key) as string)?.view);
      const recipe = typeof sub.recipe === 'string' ? sub.recipe : undefined;
      if (recipe && !['ok', 'fail', 'no-agent', 'slow', 'drop'].includes(recipe)) {
        return problem(res, 404, 'PAL_ERR_UNKNOWN_RECIPE', `no recipe named "${recipe}"`);
      }
      if (!recipe && !Array.isArray(sub.steps)) return problem(res, 400, 'PAL_ERR_VALIDATION', 'give recipe or steps');
      const id = `t${++seq}`;
      const view: TaskView = {
        id,
        state: 'queued',
        site: (sub.site as string | undefined) ?? 'https://example.com',
        attempts: 0,
        createdAt: now(),
        updatedAt: now(),
        deadline: now(),
      };
      if (recipe) view.recipe = recipe;
      const task: TaskRecord = { view, history: [], emitter: new EventEmitter(), timers: [], streams: 0 };
      state.tasks.set(id, task);
      if (key) idempotency.set(key, id);
      push(task, { type: 'state', taskId: id, state: 'queued', at: now() });
      startTask(task, recipe ?? 'ok');
      return json(res, 201, view);
    }
    const m = /^\/api\/v1\/tasks\/([^/]+)(\/events|\/cancel)?$/.exec(path);
    if (m) {
      const task = state.tasks.get(decodeURIComponent(m[1] as string));
      if (!task) return problem(res, 404, 'PAL_ERR_NOT_FOUND', 'no such task');
      if (!m[2] && method === 'GET') return json(res, 200, task.view);
      if (m[2] === '/cancel' && method === 'POST') {
        state.cancels.push(task.view.id);
        if (['succeeded', 'failed', 'cancelled', 'expired'].includes(task.view.state)) {
          return problem(res, 409, 'PAL_ERR_TASK_FINISHED', 'the task has already finished');
        }
        setState(task, 'cancelled', { error: { code: 'PAL_ERR_TASK_CANCELLED', message: 'cancelled by the caller' } });
        return json(res, 200, task.view);
      }
      if (m[2] === '/events' && method === 'GET') {
        task.streams++;
        const cut = task.view.recipe === 'drop' && task.streams === 1;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        res.write('\ufeff: hello\n\n');
        let sent = 0;
        const send = ({ name, event }: { name: string; event: TaskEvent }) => {
          writeEvent(res, name, event);
          sent++;
          if (name === 'end') {
            task.emitter.off('event', send);
            res.end();
          } else if (cut && sent === 1) {
            task.emitter.off('event', send);
            res.destroy();
          }
        };
        for (const h of [...task.history]) {
          if (res.destroyed || res.writableEnded) return;
          send(h);
        }
        if (res.destroyed || res.writableEnded) return;
        task.emitter.on('event', send);
        res.on('close', () => task.emitter.off('event', send));
        return;
      }
    }
    if (path === '/api/v1/recipes' && method === 'GET') {
      return json(res, 200, { recipes: [{ palisade: 1, name: 'ok', title: 'OK', site: 'https://example.com', inputs: {}, steps: [{ type: 'navigate', url: 'https://example.com/' }] }] });
    }
    if (path.startsWith('/api/v1/recipes/') && method === 'GET') {
      const name = decodeURIComponent(path.slice('/api/v1/recipes/'.length));
      if (name !== 'ok') return problem(res, 404, 'PAL_ERR_UNKNOWN_RECIPE', `no recipe named "${name}"`);
      return json(res, 200, { palisade: 1, name: 'ok', title: 'OK', site: 'https://example.com', inputs: { q: { required: true, description: 'query' } }, steps: [{ type: 'navigate', url: 'https://example.com/' }] });
    }
    if (path === '/api/v1/agents' && method === 'GET') {
      return json(res, 200, { agents: [{ id: 'agent-1', name: 'Chrome', version: '0.1.0', connected: true, grants: ['https://example.com'], lastSeenAt: now() }] });
    }
    if (path === '/api/v1/me' && method === 'GET') {
      return json(res, 200, { sub: token.startsWith('at-cc') ? clientId : 'user-1', clientId: token.startsWith('at-cc') ? clientId : 'palisade-cli', scopes: ['tasks'] });
    }
    if (path === '/api/v1/clients' && method === 'POST') {
      const b = JSON.parse(body) as { name: string; scopes?: string[] };
      const c = { clientId: `c${++seq}`, name: b.name, scopes: b.scopes ?? ['tasks'], createdAt: now() };
      state.clients.push(c);
      return json(res, 201, { ...c, clientSecret: 'shown-once' });
    }
    if (path === '/api/v1/clients' && method === 'GET') return json(res, 200, { clients: state.clients });
    if (path.startsWith('/api/v1/clients/') && method === 'DELETE') {
      const id = decodeURIComponent(path.slice('/api/v1/clients/'.length));
      const i = state.clients.findIndex((c) => c.clientId === id);
      if (i < 0) return problem(res, 404, 'PAL_ERR_NOT_FOUND', 'no such client');
      state.clients.splice(i, 1);
      res.writeHead(204).end();
      return;
    }
    return problem(res, 404, 'PAL_ERR_NOT_FOUND', 'no such route');
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handler(req, res).catch((err: unknown) => {
      if (!res.headersSent) problem(res, 500, 'PAL_ERR_INTERNAL', String(err));
    });
  };
  const server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, listener) : createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  base = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;

  return {
    url: base,
    state,
    clientId,
    clientSecret,
    /** Requests to one path. */
    requestsTo: (p: string) => state.requests.filter((r) => r.path === p),
    async close() {
      for (const t of state.tasks.values()) t.timers.forEach(clearTimeout);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type FakeServer = Awaited<ReturnType<typeof startFakeServer>>;
