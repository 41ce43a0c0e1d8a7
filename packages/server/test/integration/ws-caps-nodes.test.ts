/**
 * Connection caps per user and per IP hold across the cluster: two nodes sharing PostgreSQL and
 * Redis count the same connections, so spreading them over nodes does not multiply a cap.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import type { WebSocket } from 'ws';
import { decodeJwt } from 'jose';
import { WS_BEARER_PREFIX, WS_SUBPROTOCOL, type Problem } from '@palisade/protocol';
import { SyntheticAgent, rawAgentSocket } from '../support/agent.ts';
import { deviceLogin, type TestServer } from '../support/harness.ts';
import { startTwoNodes, twoNodesSkip, type TwoNodes } from '../support/two-nodes.ts';
import { countPrefix } from '../support/redis.ts';

const skip = await twoNodesSkip('cluster-wide connection caps');

const open = (t: TestServer, token?: string) => rawAgentSocket(t.url, token ? [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token] : [WS_SUBPROTOCOL], { ca: t.server.tls?.ca });
const closeAll = async (sockets: WebSocket[]) => {
  await Promise.all(sockets.map((ws) => new Promise<void>((resolve) => {
    ws.once('close', () => resolve());
    ws.close();
  })));
};

async function until(fn: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('connection caps across two nodes', { skip }, () => {
  let nodes: TwoNodes | undefined;
  let a: TestServer;
  let b: TestServer;
  let token: string;
  before(async () => {
    nodes = await startTwoNodes('caps', { shared: { maxConnectionsPerUser: 2, maxConnectionsPerIp: 3 } });
    ({ a, b } = nodes);
    token = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
  });
  after(() => nodes?.close());

  const userCount = async () => a.server.hot.tallies.count(a.server.nodeId, `user:${String(decodeJwt(token).sub)}`);

  it('per user: one connection on each node fills a cap of 2; the third is refused on either node until one closes', async () => {
    const onA = await open(a, token);
    const onB = await open(b, token);
    assert.ok(onA.ws && onB.ws);
    for (const t of [a, b]) {
      const refused = await open(t, token);
      assert.equal(refused.status, 429, `refused on ${t.server.nodeId}`);
      assert.match((JSON.parse(refused.body!) as Problem).detail!, /more than 2 connections of one user/);
    }
    assert.equal(await userCount(), 2);
    // Without a bearer the user is known from the auth frame: checked then, across nodes too.
    const late = await open(b);
    assert.ok(late.ws);
    const frames: { type: string; code?: string }[] = [];
    late.ws!.on('message', (d) => frames.push(JSON.parse(String(d)) as { type: string; code?: string }));
    const end = new Promise<number>((resolve) => late.ws!.once('close', (code) => resolve(code)));
    late.ws!.send(JSON.stringify({ type: 'auth', token }));
    assert.equal(await end, 1013);
    assert.equal(frames.find((f) => f.type === 'error')?.code, 'PAL_ERR_TOO_MANY_CONNECTIONS');
    const event = b.securityEvents.find((e) => e.status_code === 'PAL_ERR_TOO_MANY_CONNECTIONS' && e.activity_name === 'ws.close');
    assert.equal(event?.actor.user?.uid, String(decodeJwt(token).sub), 'the refusal names the user');
    assert.equal(await userCount(), 2);
    await closeAll([onA.ws!]);
    await until(async () => (await userCount()) === 1);
    const again = await open(b, token);
    assert.ok(again.ws, 'the place freed on node A is taken on node B');
    await closeAll([onB.ws!, again.ws!]);
    await until(async () => (await userCount()) === 0);
  });

  it('per IP: three connections spread over the nodes fill a cap of 3, before any token is checked', async () => {
    const held = [await open(a), await open(b), await open(a)];
    assert.ok(held.every((h) => h.ws));
    const refused = await open(b);
    assert.equal(refused.status, 429);
    assert.match((JSON.parse(refused.body!) as Problem).detail!, /more than 3 connections from one address/);
    await closeAll(held.map((h) => h.ws!));
    await until(() => a.server.connections!.total === 0 && b.server.connections!.total === 0);
    for (const t of [a, b]) assert.deepEqual(t.server.connections!.tracked, { ips: 0, users: 0, synced: true });
    const next = await open(b);
    assert.ok(next.ws, 'the places are free again');
    await closeAll([next.ws!]);
  });
});

/**
 * Writes a WebSocket upgrade request over TLS and destroys the socket at once: it goes while the
 * upgrade pipeline awaits the hot store (the IP place is taken, the token being checked).
 */
async function upgradeAndVanish(t: TestServer, token: string): Promise<void> {
  const u = new URL(t.url);
  const socket = tlsConnect({ host: u.hostname, port: Number(u.port), ca: t.server.tls?.ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  socket.write([
    'GET /ws/agent HTTP/1.1', `Host: ${u.host}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}, ${WS_BEARER_PREFIX}${token}`, '', '',
  ].join('\r\n'));
  socket.destroy();
}

describe('connection churn across two nodes', { skip }, () => {
  let nodes: TwoNodes | undefined;
  let a: TestServer;
  let b: TestServer;
  let token: string;
  before(async () => {
    nodes = await startTwoNodes('churn', { shared: { maxConnectionsPerUser: 2, maxConnectionsPerIp: 3, authTimeoutMs: 300 } });
    ({ a, b } = nodes);
    token = (await deviceLogin(a, 'palisade-extension', 'openid offline_access agent')).access_token;
  });
  after(() => nodes?.close());

  it('connections opened and closed on both nodes by every path leave no share behind in Redis', async () => {
    const user = `user:${String(decodeJwt(token).sub)}`;
    const rounds = 12;
    for (let i = 0; i < rounds; i++) {
      const [x, y] = i % 2 === 0 ? [a, b] : [b, a];
      // Two agents fill the user's cap, one on each node; a third is refused at the upgrade.
      const one = await SyntheticAgent.connect({ url: x.url, token, ca: x.server.tls?.ca, grants: ['http://127.0.0.1'] });
      const two = await SyntheticAgent.connect({ url: y.url, token, ca: y.server.tls?.ca, grants: ['http://127.0.0.1'] });
      assert.equal((await open(x, token)).status, 429, `round ${i}: the third connection of the user is refused`);
      // A socket without a token holds the address's third place, then goes by one of three paths.
      const anonymous = await open(y);
      const gone = new Promise<number>((resolve) => anonymous.ws!.once('close', (code) => resolve(code)));
      if (i % 3 === 0) anonymous.ws!.send('not json');
      else if (i % 3 === 1) anonymous.ws!.terminate();
      // else: it says nothing, and the auth timeout closes it.
      const code = await gone;
      if (i % 3 === 2) assert.equal(code, 4401, `round ${i}: closed for want of a hello`);
      // An upgrade whose socket vanishes while the pipeline runs, on either node.
      await upgradeAndVanish(i % 4 < 2 ? x : y, token);
      // The agents go: one says goodbye, the other's connection is cut.
      const closed = [one.closed(), two.closed()];
      one.close();
      two.ws.terminate();
      await Promise.all(closed);
    }
    await until(() => a.server.connections!.total === 0 && b.server.connections!.total === 0);
    await until(async () => (await a.server.hot.tallies.count(a.server.nodeId, user)) === 0);
    assert.equal(await a.server.hot.tallies.count(a.server.nodeId, 'ip:127.0.0.1'), 0, 'no address place is left');
    for (const t of [a, b]) assert.deepEqual(t.server.connections!.tracked, { ips: 0, users: 0, synced: true });
    // Every share emptied its node's hash, and an emptied hash is deleted: no tally key is left.
    assert.equal(await countPrefix(`${nodes!.prefix}:tally`), 0, 'no tally key is left in Redis');
  });
});
