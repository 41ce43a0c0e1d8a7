/**
 * WebSocket limits, each crossed against a real server: connections per IP, per user and per node,
 * the upgrade rate, the per-connection frame rate (token bucket), a slow consumer, and every count
 * back at zero after many connections open and close.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { WS_BEARER_PREFIX, WS_SUBPROTOCOL, type Problem } from '@palisade/protocol';
import { DEFAULT_RATE_LIMITS } from '../../src/config.ts';
import { rawAgentSocket, SyntheticAgent } from '../support/agent.ts';
import { createAdmin, deviceLogin, ROOMY_RATE_LIMITS, startTestServer, type TestServer } from '../support/harness.ts';
import type { CreateOptions } from '../../src/app.ts';

const SITE = 'http://127.0.0.1:9';

async function serverWithAgentToken(options: CreateOptions): Promise<{ t: TestServer; token: string }> {
  const t = await startTestServer(options);
  await createAdmin(t);
  const token = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
  return { t, token };
}

const open = (t: TestServer, token?: string) => rawAgentSocket(t.url, token ? [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token] : [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
const closed = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));

async function until(fn: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('WebSocket limits', () => {
  it('per IP: past the cap the upgrade is refused with 429 PAL_ERR_TOO_MANY_CONNECTIONS; a closed connection frees its place', async () => {
    const { t, token } = await serverWithAgentToken({ maxConnectionsPerIp: 3, maxConnectionsPerUser: 100 });
    try {
      const held = await Promise.all([1, 2, 3].map(() => open(t, token)));
      assert.ok(held.every((h) => h.ws));
      const refused = await open(t, token);
      assert.equal(refused.status, 429);
      assert.equal((JSON.parse(refused.body!) as Problem).code, 'PAL_ERR_TOO_MANY_CONNECTIONS');
      assert.ok(t.securityEvents.some((e) => e.activity_name === 'ws.upgrade.reserveConnection' && e.status_code === 'PAL_ERR_TOO_MANY_CONNECTIONS'));
      const gone = closed(held[0]!.ws!);
      held[0]!.ws!.close();
      await gone;
      await until(() => t.server.connections!.total === 2);
      const again = await open(t, token);
      assert.ok(again.ws, 'a place was freed');
      for (const h of [...held.slice(1), again]) h.ws!.close();
      await until(() => t.server.connections!.total === 0);
    } finally {
      await t.close();
    }
  });

  it('per user: refused at the upgrade with a bearer token, and closed (1013) when the token comes in an auth frame', async () => {
    const { t, token } = await serverWithAgentToken({ maxConnectionsPerUser: 2 });
    try {
      const held = await Promise.all([1, 2].map(() => open(t, token)));
      const refused = await open(t, token);
      assert.equal(refused.status, 429);
      assert.match((JSON.parse(refused.body!) as Problem).detail!, /connections of one user/);
      // Without a bearer, the user is known only from the auth frame.
      const late = await open(t);
      assert.ok(late.ws);
      const frames: { type: string; code?: string }[] = [];
      late.ws!.on('message', (d) => frames.push(JSON.parse(String(d)) as { type: string; code?: string }));
      const end = closed(late.ws!);
      late.ws!.send(JSON.stringify({ type: 'auth', token }));
      assert.equal((await end).code, 1013);
      assert.equal(frames.find((f) => f.type === 'error')?.code, 'PAL_ERR_TOO_MANY_CONNECTIONS');
      for (const h of held) h.ws!.close();
      await until(() => t.server.connections!.total === 0);
      assert.deepEqual(t.server.connections!.tracked, { ips: 0, users: 0, synced: true });
    } finally {
      await t.close();
    }
  });

  it('per node: past maxConnections the upgrade gets 503 with Retry-After', async () => {
    const { t, token } = await serverWithAgentToken({ maxConnections: 2 });
    try {
      const held = await Promise.all([1, 2].map(() => open(t, token)));
      const refused = await open(t, token);
      assert.equal(refused.status, 503);
      assert.equal((JSON.parse(refused.body!) as Problem).code, 'PAL_ERR_UNAVAILABLE');
      for (const h of held) h.ws!.close();
    } finally {
      await t.close();
    }
  });

  it('upgrade rate per IP: past the burst, 429 with Retry-After, before the token is even checked', async () => {
    const rateLimits = { ...ROOMY_RATE_LIMITS, classes: { ...ROOMY_RATE_LIMITS.classes, ws: { ip: { limit: 2, periodMs: 60_000, burst: 2 }, principal: DEFAULT_RATE_LIMITS.classes.ws.principal } } };
    const { t, token } = await serverWithAgentToken({ rateLimits });
    try {
      const held = await Promise.all([1, 2].map(() => open(t, token)));
      assert.ok(held.every((h) => h.ws));
      const refused = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + 'not-a-token'], { ca: t.server.tls?.ca });
      assert.equal(refused.status, 429);
      assert.equal((JSON.parse(refused.body!) as Problem).code, 'PAL_ERR_RATE_LIMITED');
      assert.ok(!t.securityEvents.some((e) => e.activity_name === 'ws.upgrade.authenticate'), 'the bad token was never checked');
      for (const h of held) h.ws!.close();
    } finally {
      await t.close();
    }
  });

  it('frame rate: within the rate the connection stays; a burst past the bucket closes it with 1008 PAL_ERR_RATE_LIMITED', async () => {
    const { t, token } = await serverWithAgentToken({ wsMessageRate: 10, wsMessageBurst: 5 });
    try {
      const steady = await SyntheticAgent.connect({ url: t.url, token, ca: t.server.tls?.ca, grants: [SITE] }); // hello took one
      for (let i = 0; i < 8; i++) {
        steady.send({ type: 'ping', t: i });
        await new Promise((r) => setTimeout(r, 120));
      }
      await until(() => steady.frames.filter((f) => f.type === 'pong').length === 8);
      assert.equal(steady.ws.readyState, WebSocket.OPEN, 'a peer within the rate stays');
      const flood = await SyntheticAgent.connect({ url: t.url, token, ca: t.server.tls?.ca, grants: [SITE] });
      const end = flood.closed();
      for (let i = 0; i < 20; i++) flood.send({ type: 'ping', t: i });
      assert.equal((await end).code, 1008);
      assert.ok(flood.frames.filter((f) => f.type === 'pong').length <= 5, 'frames past the bucket were not handled');
      const err = flood.frames.find((f) => f.type === 'error');
      assert.equal(err?.type === 'error' ? err.code : '', 'PAL_ERR_RATE_LIMITED');
      steady.close();
    } finally {
      await t.close();
    }
  });

  it('a slow consumer (reads nothing while the server has frames for it) is cut off past the send-buffer cap', async () => {
    const { t, token } = await serverWithAgentToken({ maxSendBufferBytes: 256 * 1024, wsMessageRate: 1e6, wsMessageBurst: 1e6 });
    try {
      const a = await SyntheticAgent.connect({ url: t.url, token, ca: t.server.tls?.ca, grants: [SITE] });
      // Stop reading: the server's pongs fill the kernel's socket buffers (~4 MB on loopback here),
      // then the server's own send buffer, until it passes the cap.
      const socket = (a.ws as unknown as { _socket: { pause(): void; destroy(): void } })._socket;
      socket.pause();
      const slow = () => t.securityEvents.some((e) => e.status_code === 'PAL_ERR_SLOW_CONSUMER');
      const ping = JSON.stringify({ type: 'ping', t: 1.2345678901234567e300 });
      let sent = 0;
      // In batches the server handles before the next (under its limit of frames waiting).
      while (!slow() && sent < 400_000) {
        for (let i = 0; i < 200; i++) a.ws.send(ping);
        sent += 200;
        await new Promise((r) => setTimeout(r, 2));
      }
      await until(slow, 5000);
      socket.destroy();
      await until(() => t.server.connections!.total === 0);
      assert.ok(t.securityEvents.some((e) => e.status_code === 'PAL_ERR_SLOW_CONSUMER'), `closed as a slow consumer after ${sent} pings`);
    } finally {
      await t.close();
    }
  });

  it('many connections opened and closed: every count, timer and index is back at zero', async () => {
    const { t, token } = await serverWithAgentToken({ maxConnectionsPerUser: 1000, maxConnectionsPerIp: 1000 });
    try {
      for (let round = 0; round < 5; round++) {
        const agents = await Promise.all(Array.from({ length: 20 }, () => SyntheticAgent.connect({ url: t.url, token, ca: t.server.tls?.ca, grants: [SITE] })));
        // Half close cleanly, half vanish (socket destroyed without a close frame).
        agents.forEach((a, i) => (i % 2 === 0 ? a.close() : (a.ws as unknown as { _socket: { destroy(): void } })._socket.destroy()));
        // Refused upgrades hold nothing either.
        await open(t, 'bad-token');
      }
      await until(() => t.server.connections!.total === 0);
      assert.deepEqual(t.server.connections!.tracked, { ips: 0, users: 0, synced: true });
      assert.equal(t.server.agents.size, 0);
    } finally {
      await t.close();
    }
  });
  it('frames nested past maxJsonDepth are refused before parsing; error messages quote input clipped; a refused Origin is clipped too', async () => {
    const { t, token } = await serverWithAgentToken({ maxJsonDepth: 8 });
    try {
      const { ws } = await open(t, token);
      const frames: { type: string; code?: string; message?: string }[] = [];
      ws!.on('message', (d) => frames.push(JSON.parse(String(d)) as { type: string; code?: string; message?: string }));
      // A `type` nested 100,000 deep once overflowed the validator's stack (PAL_ERR_INTERNAL).
      ws!.send(`{"type":${'['.repeat(100_000)}${']'.repeat(100_000)}}`);
      ws!.send(`{"type":${JSON.stringify('t'.repeat(10_000))}}`);
      ws!.send(JSON.stringify({ type: 'hello', ['k'.repeat(5000)]: 1 }));
      await until(() => frames.length >= 3);
      assert.equal(frames[0]!.code, 'PAL_ERR_VALIDATION');
      assert.match(frames[0]!.message!, /deeper than 8 levels/);
      for (const f of frames.slice(1)) {
        assert.equal(f.code, 'PAL_ERR_VALIDATION');
        assert.ok(f.message!.length < 400, `clipped: ${f.message!.length} chars`);
      }
      assert.match(frames[1]!.message!, /unknown type "t{64}…\(10000 chars\)"/);
      assert.equal(ws!.readyState, WebSocket.OPEN, 'a bad frame is answered, not fatal');
      ws!.close();
      const refused = await rawAgentSocket(t.url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token], { ca: t.server.tls?.ca, origin: `https://${'o'.repeat(3000)}.example` });
      assert.equal(refused.status, 403);
      assert.ok((JSON.parse(refused.body!) as Problem).detail!.length < 200);
    } finally {
      await t.close();
    }
  });
});
