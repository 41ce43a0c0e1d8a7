/**
 * The agent connection's reaction to the server closing it: a node shutting down closes with 1012
 * ("service restart") and the agent must reconnect with backoff (to another node, or the same one
 * restarted), never stop; closes that mean "refused for good" (4403, 1002) stop it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROTOCOL_VERSION, WS_SUBPROTOCOL, type AgentFrame } from '@palisade/protocol';
import { AgentConnection, type ConnectionState } from '../../src/worker/connection.ts';

/** A WebSocket stand-in driven by the test: `open()`, `receive()`, `serverClose()`. */
class FakeSocket {
  readyState = 0;
  protocol = WS_SUBPROTOCOL;
  readonly sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: (() => void) | null = null;
  readonly url: string;
  readonly protocols: string[];
  constructor(url: string, protocols: string[]) {
    this.url = url;
    this.protocols = protocols;
  }
  send(data: string): void {
    this.sent.push(data);
  }
  close(): void {
    this.readyState = 3;
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverClose(code: number, reason: string): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function until(fn: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const timeouts = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

function setup(hello?: () => Promise<AgentFrame>) {
  const sockets: FakeSocket[] = [];
  const states: [ConnectionState, string | undefined][] = [];
  const backoffs: number[] = [];
  let refreshes = 0;
  const conn = new AgentConnection({
    socket: (url, protocols) => {
      const s = new FakeSocket(url, protocols);
      sockets.push(s);
      return s as unknown as WebSocket;
    },
    url: () => 'wss://palisade.example/ws/agent',
    token: async () => 'access-token',
    refreshToken: async () => {
      refreshes++;
      return 'fresh-token';
    },
    signedIn: () => true,
    hello: hello ?? (async (): Promise<AgentFrame> => ({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'test', version: '0.0.0', instanceId: 'i-1' }, grants: [] })),
    onFrame: () => undefined,
    onState: (state, detail) => void states.push([state, detail]),
    backoff: (attempt) => {
      backoffs.push(attempt);
      return 20;
    },
  });
  /** Opens the newest socket and welcomes it (the connection is then established). */
  const welcome = async () => {
    const s = sockets.at(-1)!;
    s.open();
    await tick();
    s.receive({ type: 'welcome', v: PROTOCOL_VERSION, agentId: 'ag_1', heartbeatMs: 30_000 });
    return s;
  };
  return { conn, sockets, states, backoffs, refreshes: () => refreshes, welcome };
}

test('close 1012 (server restarting): reconnects after a backoff delay, with the same token, and keeps going', async () => {
  const { conn, sockets, states, backoffs, refreshes, welcome } = setup();
  conn.ensure();
  await until(() => sockets.length === 1);
  const first = await welcome();
  assert.equal(conn.state, 'connected');
  first.serverClose(1012, 'server restarting; reconnect');
  assert.equal(conn.state, 'reconnecting', 'not stopped');
  assert.match(states.at(-1)![1]!, /1012: server restarting/);
  assert.deepEqual(backoffs, [0], 'waits a backoff delay (attempt 0) before reconnecting, not at once');
  assert.equal(sockets.length, 1, 'no new socket before the delay');
  await until(() => sockets.length === 2);
  assert.equal(refreshes(), 0, 'the token is still good: no refresh');
  await welcome();
  assert.equal(conn.state, 'connected');
  conn.stop();
});

test('every node restarting in turn: 1012 closes before a welcome back off further each time', async () => {
  const { conn, sockets, backoffs, welcome } = setup();
  conn.ensure();
  await until(() => sockets.length === 1);
  await welcome();
  for (let i = 1; i <= 3; i++) {
    sockets.at(-1)!.serverClose(1012, 'server restarting; reconnect');
    await until(() => sockets.length === i + 1);
    if (i === 3) break;
    // Opened, but closed again before a welcome (the node it reached is draining too).
    sockets.at(-1)!.open();
    await tick();
  }
  assert.deepEqual(backoffs, [0, 1, 2], 'the attempt count grows until a welcome');
  await welcome();
  sockets.at(-1)!.serverClose(1012, 'server restarting; reconnect');
  assert.equal(backoffs.at(-1), 0, 'a welcome resets the backoff');
  conn.stop();
});

test('1001 and 1013 reconnect too; 4403 and 1002 stop (refused for good)', async () => {
  for (const [code, expected] of [[1001, 'reconnecting'], [1013, 'reconnecting'], [4403, 'error'], [1002, 'error']] as const) {
    const { conn, sockets, welcome } = setup();
    conn.ensure();
    await until(() => sockets.length === 1);
    await welcome();
    sockets[0]!.serverClose(code, 'closed');
    assert.equal(conn.state, expected, `close ${code}`);
    if (expected === 'reconnecting') await until(() => sockets.length === 2);
    else {
      await new Promise((r) => setTimeout(r, 60));
      assert.equal(sockets.length, 1, `close ${code}: no reconnection`);
    }
    conn.stop();
  }
});

test('closed while the hello is being made: no hello sent on it, and its ping timer is not left running beside the next connection\'s', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { conn, sockets, welcome } = setup(async () => {
    await gate;
    return { type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'test', version: '0.0.0', instanceId: 'i-1' }, grants: [] };
  });
  const before = timeouts();
  conn.ensure();
  await until(() => sockets.length === 1);
  sockets[0]!.open();
  sockets[0]!.serverClose(1012, 'server restarting; reconnect');
  release();
  await tick();
  assert.deepEqual(sockets[0]!.sent, [], 'nothing sent on the closed socket');
  // The reconnection opens and is welcomed: it has its own ping timer.
  await until(() => sockets.length === 2);
  await welcome();
  assert.equal(conn.state, 'connected');
  conn.stop();
  await tick();
  assert.equal(timeouts(), before, 'every timer of the connection is gone (the first socket\'s ping interval would stay)');
});
