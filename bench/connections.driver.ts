/**
 * The load side of `connections.bench.ts`: one process opening up to ~19,000 idle agent WebSocket
 * connections (this machine allows a process 20,000 open files) from its own 127.x.y.z source
 * addresses, and holding them.
 *
 * The client is a minimal WebSocket client over `net` (or `tls`) sockets rather than the `ws`
 * package, so that the load generator's own memory and CPU — on the same 2 cores and 24 GB as the
 * servers under test — stay small: per connection it keeps the socket and a few fields. It speaks
 * the real protocol: the upgrade request offers `palisade.v1` and the bearer subprotocol with the
 * agent's access token, the answer must be `101` with `palisade.v1` selected, then a masked `hello`
 * frame (a distinct instanceId per connection) and the server's `welcome`; pings are answered with
 * pongs (the server's heartbeat), any other frame is ignored. The bare baseline gets exactly the
 * same bytes.
 *
 * A refusal that says "try again" — an upgrade answered 503, a close 1013, an error frame
 * `PAL_ERR_UNAVAILABLE` (the server shedding load, or a store call timing out during the storm) — is
 * retried as the extension retries it: after the extension's own backoff (exponential from 0.5 s,
 * capped at 30 s, equal jitter), up to `MAX_ATTEMPTS` attempts; every retry is counted by reason.
 * Any other failure is final.
 *
 * Input: `BENCH_CONN` (JSON, below). Over IPC it reports `{ progress }` while connecting, `{ done }`
 * when every connection has been tried (or, told `{ ask: 'halt' }`, when those under way are done),
 * and answers `{ ask: 'count' }` with how many are open and `{ ask: 'stop' }` by closing everything
 * and exiting.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '../packages/extension/src/worker/backoff.ts';

interface Input {
  port: number;
  count: number;
  /** Source addresses (each gives ~28,000 ephemeral ports per destination). */
  localAddresses: string[];
  token: string;
  /** Upgrades in flight at once. */
  concurrency: number;
  /** PEM of the CA when the server speaks TLS. */
  ca?: string;
}

const input = JSON.parse(process.env.BENCH_CONN ?? '{}') as Input;
const HOST = '127.0.0.1';
const PATH = '/ws/agent';
const UPGRADE_TIMEOUT_MS = 60_000;
/** Attempts per connection when the server says "try again" (the last waits ~16 s after the one before). */
const MAX_ATTEMPTS = 6;
/** Refusals a real agent retries: the server is shedding load or a store is briefly unreachable. */
const retryable = (reason: string) => reason.startsWith('upgrade 503') || reason.startsWith('closed 1013') || reason.includes('PAL_ERR_UNAVAILABLE');

const request = (): string => `GET ${PATH} HTTP/1.1\r\nHost: ${HOST}:${input.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
  + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n`
  + `Sec-WebSocket-Protocol: palisade.v1, palisade.bearer.${input.token}\r\n\r\n`;

/** One masked client frame (RFC 6455 §5.3): text (0x1) or pong (0xA). */
function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = randomBytes(4);
  mask.copy(out, head);
  for (let i = 0; i < len; i++) out[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

const hello = () => frame(0x1, Buffer.from(JSON.stringify({
  type: 'hello', v: 1, agent: { name: 'bench', version: '0.0.0', instanceId: randomUUID() }, grants: ['http://127.0.0.1:9'],
})));

let open = 0;
let failed = 0;
/** Told to stop opening connections (the benchmark's deadline): those under way finish, no more start. */
let halted = false;
/** Connections that were up and later closed (by the server, a missed pong, …). */
let dropped = 0;
const reasons = new Map<string, number>();
/** Refusals that were retried, by reason (a connection that got through on a later attempt counts here only). */
const retries = new Map<string, number>();
const sockets = new Set<Socket>();
const count = (m: Map<string, number>, reason: string) => m.set(reason, (m.get(reason) ?? 0) + 1);

/** Opens one connection, retrying "try again" refusals with backoff; resolves once it is up or has failed for good. */
async function connectOne(localAddress: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const reason = await one(localAddress);
    if (reason === undefined) return;
    if (!retryable(reason) || attempt + 1 >= MAX_ATTEMPTS || halted) {
      failed++;
      count(reasons, reason);
      return;
    }
    count(retries, reason);
    await sleep(backoffDelay(attempt));
  }
}

/** One attempt at a connection; resolves once it is up (welcome received: undefined) or has failed (the reason). */
function one(localAddress: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const opts = { host: HOST, port: input.port, localAddress };
    const sock: Socket = input.ca ? tlsConnect({ ...opts, ca: input.ca, servername: 'localhost' }) : netConnect(opts);
    let state: 'upgrade' | 'welcome' | 'open' | 'gone' = 'upgrade';
    let buf: Buffer | undefined;
    const done = (reason?: string) => {
      if (state === 'open' || state === 'gone') return;
      clearTimeout(timer);
      if (reason) {
        state = 'gone';
        sock.destroy();
      } else {
        state = 'open';
        open++;
      }
      resolve(reason);
    };
    const timer = setTimeout(() => done('timeout'), UPGRADE_TIMEOUT_MS);
    sock.setNoDelay(true);
    sock.once(input.ca ? 'secureConnect' : 'connect', () => sock.write(request()));
    sock.on('error', (e: NodeJS.ErrnoException) => done(`socket ${e.code ?? e.message}`));
    sock.on('close', () => {
      sockets.delete(sock);
      if (state === 'open') {
        open--;
        dropped++;
        state = 'gone';
      } else done('closed before welcome');
    });
    sockets.add(sock);
    sock.on('data', (chunk: Buffer) => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      if (state === 'upgrade') {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        if (!head.startsWith('HTTP/1.1 101')) return done(`upgrade ${head.slice(9, 12)}: ${buf.subarray(end + 4).toString().slice(0, 120)}`);
        if (!/\r\nsec-websocket-protocol: palisade\.v1\r?$/im.test(head)) return done('no palisade.v1 subprotocol');
        state = 'welcome';
        buf = buf.subarray(end + 4);
        sock.write(hello());
      }
      // Server frames are unmasked: opcode, length (7, 16 or 64 bits), payload.
      while (buf && buf.length >= 2) {
        const opcode = buf[0]! & 0x0f;
        let len: number = buf[1]! & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + len) return;
        const payload = buf.subarray(at, at + len);
        buf = buf.length === at + len ? undefined : buf.subarray(at + len);
        if (opcode === 0x9) sock.write(frame(0xa, payload));
        else if (opcode === 0x8) done(`closed ${payload.length >= 2 ? payload.readUInt16BE(0) : ''} ${payload.subarray(2).toString()}`);
        else if (opcode === 0x1 && state === 'welcome') {
          const text = payload.toString();
          if (text.includes('"type":"welcome"')) done();
          else done(`frame ${text.slice(0, 120)}`);
        }
      }
    });
  });
}

const started = performance.now();
let next = 0;
process.on('message', (m: { ask: 'count' | 'stop' | 'halt' }) => {
  if (m.ask === 'halt') halted = true;
  else if (m.ask === 'count') process.send!({ count: { open, dropped, failed } });
  else if (m.ask === 'stop') {
    for (const s of sockets) s.destroy();
    process.exit(0);
  }
});
const progress = setInterval(() => process.send!({ progress: { open, failed } }), 2000);
await Promise.all(Array.from({ length: Math.min(input.concurrency, input.count) }, async () => {
  while (!halted && next < input.count) {
    const i = next++;
    await connectOne(input.localAddresses[i % input.localAddresses.length]!);
  }
}));
clearInterval(progress);
process.send!({ done: { open, failed, reasons: Object.fromEntries(reasons), retries: Object.fromEntries(retries), ms: performance.now() - started } });

process.on('disconnect', () => process.exit(0));
