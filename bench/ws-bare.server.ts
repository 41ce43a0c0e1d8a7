/**
 * The baseline of `connections.bench.ts`: a bare `ws` server, what a minimal production WebSocket
 * service holds per idle connection. One of N processes sharing a port with SO_REUSEPORT (as
 * Palisade's `--workers`). Same endpoint and same wire exchange as Palisade's agent endpoint
 * (`palisade.v1` selected; the first frame, the hello, is answered with a welcome frame) and the
 * same heartbeat (a ping every 30 s, or `heartbeatMs`; a peer that missed the last pong is dropped) — the pattern of
 * the `ws` README — but no authentication, validation, registry, presence or store.
 *
 *   BENCH_BARE='{"port":P,"tls":{"key","cert"}?,"heartbeatMs":N?}' node bench/ws-bare.server.ts   (IPC: { ready: pid })
 */
import { createServer as createHttp } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { WebSocketServer, type WebSocket } from 'ws';

const input = JSON.parse(process.env.BENCH_BARE ?? '{}') as { port: number; tls?: { key: string; cert: string }; heartbeatMs?: number };
const server = input.tls ? createHttps({ key: input.tls.key, cert: input.tls.cert, minVersion: 'TLSv1.3' }) : createHttp();
const wss = new WebSocketServer({
  server, path: '/ws/agent', perMessageDeflate: false, maxPayload: 1024 * 1024,
  handleProtocols: (protocols) => (protocols.has('palisade.v1') ? 'palisade.v1' : false),
});
const alive = new WeakSet<WebSocket>();
wss.on('connection', (ws) => {
  alive.add(ws);
  ws.on('pong', () => alive.add(ws));
  ws.once('message', () => ws.send('{"type":"welcome","v":1}'));
  ws.on('error', () => undefined);
});
setInterval(() => {
  for (const ws of wss.clients) {
    if (!alive.has(ws)) {
      ws.terminate();
      continue;
    }
    alive.delete(ws);
    ws.ping();
  }
}, input.heartbeatMs ?? 30_000);
server.listen({ host: '127.0.0.1', port: input.port, reusePort: true, backlog: 4096 }, () => process.send!({ ready: process.pid }));
process.on('disconnect', () => process.exit(0));
