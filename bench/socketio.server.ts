/**
 * The Socket.IO side of `dispatch-nodes.bench.ts`: one Socket.IO server in a process of its own,
 * sharing Redis with the others through `@socket.io/redis-adapter`, so a request reaching one server
 * is routed to an "agent" socket connected to another.
 *
 * What it does, to mirror Palisade's `POST /api/v1/tasks` with `Prefer: wait`:
 * - an HTTPS (TLS 1.3) Fastify server with Socket.IO attached to it (WebSocket transport);
 * - an agent connects with `auth: { agent: <id> }` and joins the room `agent:<id>`;
 * - `POST /api/v1/tasks` (JSON body: site and steps) picks one of the `agents` ids at random and sends
 *   `{ type: 'task.dispatch', taskId, site, steps, deadline }` to its room with
 *   `io.to(room).timeout(ms).emitWithAck('task', frame)` — the adapter's documented request/response
 *   across servers: it publishes the request on Redis, the server holding the socket emits it and
 *   publishes the agent's acknowledgement (and its client count) back, and the asking server also
 *   asks Redis how many servers there are (`PUBSUB NUMSUB`) to know when every answer is in;
 * - the answer is a task view of the same shape as Palisade's (`id`, `state`, `site`, `result`, …).
 *
 * It has none of Palisade's checks: no token, no validation beyond JSON parsing, no store, no audit.
 * Started by the benchmark with `BENCH_SIO` (JSON: tls key and cert, Redis URL and channel key,
 * number of agents); answers the benchmark's asks (`cpu`, `stop`) over IPC.
 */
import { randomBytes } from 'node:crypto';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { answerAsks } from './lib.ts';

export interface SioServeInput {
  key: string;
  cert: string;
  redisUrl: string;
  /** Channel prefix of the adapter (unique per run). */
  channel: string;
  /** Agent ids are `0` … `agents - 1`. */
  agents: number;
  /** How long a request waits for the agent's answer, ms. */
  timeoutMs: number;
}

interface Submission { site: string; steps: unknown[] }
interface AgentAnswer { taskId: string; outcome: 'succeeded' | 'failed'; result: unknown }

const input = JSON.parse(process.env.BENCH_SIO ?? '{}') as SioServeInput;
const app = Fastify({ https: { key: input.key, cert: input.cert, minVersion: 'TLSv1.3' } });
const pub = new Redis(input.redisUrl);
const sub = pub.duplicate();
const io = new Server(app.server, {
  transports: ['websocket'],
  adapter: createAdapter(pub, sub, { key: input.channel, publishOnSpecificResponseChannel: true }),
});
io.on('connection', (socket) => {
  const agent = (socket.handshake.auth as { agent?: unknown }).agent;
  if (typeof agent === 'string') void socket.join(`agent:${agent}`);
});

app.post<{ Body: Submission }>('/api/v1/tasks', async (req, reply) => {
  const agentId = String(Math.floor(Math.random() * input.agents));
  const at = new Date().toISOString();
  const deadline = Date.now() + 120_000;
  const taskId = `t_${randomBytes(12).toString('base64url')}`;
  const answers = (await io.to(`agent:${agentId}`).timeout(input.timeoutMs)
    .emitWithAck('task', { type: 'task.dispatch', taskId, site: req.body.site, steps: req.body.steps, deadline })) as AgentAnswer[];
  const answer = answers[0];
  if (!answer) return reply.code(503).send({ error: 'no agent answered' });
  return reply.code(201).send({
    id: taskId, state: answer.outcome, site: req.body.site, attempts: 1, createdAt: at, updatedAt: new Date().toISOString(),
    deadline: new Date(deadline).toISOString(), agentId, result: answer.result,
  });
});

await app.listen({ host: '127.0.0.1', port: 0 });
const url = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
answerAsks(async () => {
  await io.close();
  await app.close().catch(() => undefined);
  pub.disconnect();
  sub.disconnect();
});
// The benchmark gone (crashed or killed), this server goes too.
process.on('disconnect', () => process.exit(0));
process.send!({ ready: { url } });
