/**
 * @module fuzz/ws — the WebSocket surface (`/ws/agent`): generated units, each one of
 *  - `frames`: frames on an authenticated agent connection that said hello (valid frames from the
 *    schemas, mutated ones, binary, invalid UTF-8, oversized, fragmented, bursts), then a sentinel
 *    `ping` whose `pong` proves the connection is still served in order;
 *  - `preauth`: a fresh connection without a bearer token, then its first frames (`auth` or not);
 *  - `upgrade`: a hand-written upgrade request (paths, origins, subprotocols, tokens, keys, versions);
 *  - `raw`: hand-made frames after a valid upgrade (bad opcodes, reserved bits, missing masks,
 *    lengths that lie, bad close codes, fragmented control frames).
 * Every server frame must match the protocol's `ServerFrame` schema, error frames carry a known
 * code other than `PAL_ERR_INTERNAL`, and closes use documented codes.
 */
import WebSocket from 'ws';
import {
  AgentFrame, AuthFrame, GrantsFrame, HelloFrame, PingFrame, TaskAcceptFrame, TaskProgressFrame, TaskResultFrame,
  PROTOCOL_VERSION, WS_BEARER_PREFIX, WS_SUBPROTOCOL, isErrorCode, serverFrameValidator,
} from '@palisade/protocol';
import type { TSchema } from '@sinclair/typebox';
import { rngFor, type Rng } from './rng.ts';
import { encode, mutate, mutateText, valid, word, str, deep, tagDeep, tamper, GRANTED, PH } from './gen.ts';
import { closeCode, exchange, frameBytes, parseFrames, type Target } from './raw.ts';
import { DOCUMENTED_CLOSE_CODES, leaks, printable, problemViolations, type Violation } from './oracle.ts';

export interface WsContext {
  target: Target;
  /** `wss://127.0.0.1:PORT/ws/agent` */
  wsUrl: string;
  agentToken: string;
  adminToken: string;
  clientToken: string;
}

/** One frame to send on a `ws` connection. */
export interface OutFrame {
  data: Buffer;
  /** Binary opcode instead of text. */
  binary: boolean;
  /** Split into this many fragments (1 = one frame). */
  fragments: number;
}

export type WsUnit =
  | { index: number; kind: 'frames'; frames: OutFrame[]; tags: string[] }
  | { index: number; kind: 'preauth'; frames: OutFrame[]; tags: string[] }
  | { index: number; kind: 'upgrade'; request: Buffer; tags: string[] }
  | {
    index: number; kind: 'raw'; bearer: boolean; frames: Buffer[]; tags: string[];
    /** The server should close (we broke the protocol or sent close). */
    expectClose: boolean;
    /** The close code we sent, which the server may echo (RFC 6455 §5.5.1). */
    closeSent?: number | undefined;
  };

// ── generation ───────────────────────────────────────────────────────────────────────────────────

const MEMBERS: [string, TSchema, number][] = [
  ['ping', PingFrame, 12], ['task.progress', TaskProgressFrame, 16], ['task.result', TaskResultFrame, 16], ['task.accept', TaskAcceptFrame, 14],
  ['grants', GrantsFrame, 10], ['auth', AuthFrame, 8], ['hello', HelloFrame, 6], ['union', AgentFrame, 4],
];

/** The JSON text of one generated agent frame (valid, mutated, broken), or bytes. */
function frameText(rng: Rng, tags: string[]): { data: Buffer; binary: boolean } {
  const [name, schema] = rng.weighted(MEMBERS.map((m) => [m, m[2]] as const));
  const mode = rng.weighted<string>([['valid', 32], ['mutated', 36], ['text', 10], ['binary', 4], ['junk', 3], ['literal', 4], ['deep', 3], ['big', 0.5], ['oversized', 0.2], ['bad-utf8', 3]]);
  tags.push(`${name}:${mode}`);
  const v = () => {
    const f = valid(rng, schema) as Record<string, unknown>;
    if (name === 'hello' && rng.chance(0.8)) f.v = PROTOCOL_VERSION;
    return f;
  };
  switch (mode) {
    case 'valid':
      return { data: Buffer.from(encode(v())), binary: false };
    case 'mutated': {
      const m = mutate(rng, v());
      tags.push(...m.did.map((d) => `mut:${d}`));
      return { data: Buffer.from(tagDeep(encode(m.value), tags)), binary: false };
    }
    case 'text': {
      const inner = rng.chance(0.5) ? undefined : mutate(rng, v());
      if (inner) tags.push(...inner.did.map((d) => `mut:${d}`));
      const m = mutateText(rng, tagDeep(encode(inner ? inner.value : v()), tags));
      tags.push(`text:${m.did}`);
      return { data: m.bytes, binary: false };
    }
    case 'bad-utf8': {
      const m = mutateText(rng, encode(v()));
      const bytes = m.did === 'bad-utf8' ? m.bytes : Buffer.concat([Buffer.from(encode(v())).subarray(0, 5), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), Buffer.from('"}')]);
      return { data: bytes, binary: false };
    }
    case 'binary':
      return { data: rng.chance(0.5) ? Buffer.from(encode(v())) : rng.bytes(rng.int(0, 512)), binary: true };
    case 'junk':
      return { data: Buffer.from(rng.chance(0.5) ? str(rng) : rng.bytes(rng.int(1, 256)).toString('latin1')), binary: false };
    case 'literal':
      return { data: Buffer.from(rng.pick(['', ' ', 'null', '[]', '{}', '"ping"', '1', 'true', '{"type":null}', '{"type":"ping"}', '{"type":"ping","t":"1"}', '{"type":"ping","t":1e309}', '[{"type":"ping","t":1}]'])), binary: false };
    case 'deep': {
      const d = deep(rng);
      tags.push(`deep:${d.text.length}`);
      if (rng.chance(0.6)) {
        // Where the schema takes any value: task.result outputs.
        return { data: Buffer.from(encode({ type: 'task.result', taskId: PH.task, outcome: 'succeeded', result: { outputs: { x: d }, artifacts: [], timings: { totalMs: 1, steps: [] } } })), binary: false };
      }
      return { data: Buffer.from(encode({ ...v(), [rng.pick(['grants', 't', 'agent', 'result', 'x'])]: d })), binary: false };
    }
    case 'big': {
      // Large but under the 1 MiB frame limit: many grants, big outputs, long strings.
      const n = rng.pick([1000, 100_000, 900_000]);
      return {
        data: Buffer.from(rng.chance(0.5)
          ? encode({ type: 'task.result', taskId: PH.task, outcome: 'succeeded', result: { outputs: { x: 'o'.repeat(n) }, artifacts: [], timings: { totalMs: 1, steps: [] } } })
          : encode({ type: 'grants', grants: Array.from({ length: Math.min(300, n / 100) }, () => rng.pick(GRANTED)) })),
        binary: false,
      };
    }
    default: {
      tags.push('oversized');
      return { data: Buffer.from(encode({ type: 'ping', t: 1, pad: 'x'.repeat(1024 * 1024) })), binary: false };
    }
  }
}

function outFrames(rng: Rng, tags: string[]): OutFrame[] {
  const burst = rng.weighted<number>([[1, 88], [rng.int(2, 10), 8], [rng.int(20, 120), 3], [rng.int(257, 400), 0.6]]);
  if (burst > 1) tags.push(`burst:${burst}`);
  const first = frameText(rng, tags);
  const fragments = !first.binary && first.data.length > 1 && rng.chance(0.08) ? rng.int(2, 6) : 1;
  if (fragments > 1) tags.push(`fragments:${fragments}`);
  const frames: OutFrame[] = [{ ...first, fragments }];
  // A burst repeats its first few frames when they are small, pings otherwise: hundreds of distinct
  // or large frames would measure the fuzzer's generator and the TLS link, not the server.
  const ping: OutFrame = { data: Buffer.from(encode({ type: 'ping', t: 1 })), binary: false, fragments: 1 };
  for (let k = 1; k < burst; k++) {
    if (k < 4) frames.push({ ...frameText(rng, tags), fragments: 1 });
    else frames.push(frames[k % 4]!.data.length <= 2048 ? frames[k % 4]! : ping);
  }
  return frames;
}

function upgradeRequest(rng: Rng, tags: string[]): Buffer {
  const path = rng.weighted<string>([
    ['/ws/agent', 60], [rng.pick(['/ws/agent?token=x', '/ws/agent?', '/ws/agent/', '/WS/AGENT', '/ws/agent#x', '/ws/%61gent', '/ws/agent/../agent', '//ws/agent', '/ws/agent;x', '/ws/agent%00']), 20],
    [rng.pick(['/api/v1/me', '/oauth2/token', '/', '/healthz', '/ws/client', '/ws']), 10], [`/ws/agent/${'a'.repeat(rng.pick([100, 5000, 20_000]))}`, 2],
  ]);
  const token = rng.weighted<string>([[PH.agentToken, 55], [PH.adminToken, 8], [PH.clientToken, 8], [word(rng, 10, 80), 10], ['@@TAMPERED_AGENT@@', 8], ['', 4], ['x'.repeat(9000), 1], [str(rng).replace(/[\r\n,]/g, ''), 4]]);
  const protocols = rng.weighted<string | undefined>([
    [`${WS_SUBPROTOCOL}, ${WS_BEARER_PREFIX}${token}`, 55], [WS_SUBPROTOCOL, 10], [`${WS_BEARER_PREFIX}${token}`, 5], [undefined, 5],
    ['palisade.v2', 3], [`${WS_SUBPROTOCOL}, ${WS_BEARER_PREFIX}${token}, ${WS_BEARER_PREFIX}${word(rng)}`, 4], [`${WS_SUBPROTOCOL},${WS_SUBPROTOCOL}`, 2],
    [`${WS_SUBPROTOCOL}, ${Array.from({ length: rng.int(50, 500) }, () => word(rng)).join(', ')}`, 2], ['', 2], [`${WS_SUBPROTOCOL}, palisade.bearer.`, 3], [' , ,', 1],
  ]);
  const origin = rng.weighted<string | undefined>([[undefined, 60], ['chrome-extension://abcdefghijklmnopabcdefghijklmnop', 15], ['https://evil.example', 10], ['null', 4], ['chrome-extension://', 3], [str(rng).replace(/[\r\n]/g, ''), 4]]);
  const key = rng.weighted<string | undefined>([['dGhlIHNhbXBsZSBub25jZQ==', 80], [undefined, 5], ['short', 5], ['', 3], ['!!!!!!!!!!!!!!!!!!!!!!==', 3], ['dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==', 2]]);
  const version = rng.weighted<string | undefined>([['13', 85], ['8', 4], [undefined, 4], ['x', 3], ['13, 8', 2], ['1300000', 2]]);
  const method = rng.chance(0.95) ? 'GET' : rng.pick(['POST', 'PUT', 'HEAD', 'get']);
  const lines = [`${method} ${path} ${rng.chance(0.97) ? 'HTTP/1.1' : 'HTTP/1.0'}`, 'host: @@HOSTPORT@@'];
  if (rng.chance(0.95)) lines.push(`upgrade: ${rng.weighted([['websocket', 90], ['WebSocket', 4], ['h2c', 3], ['websocketx', 3]])}`);
  if (rng.chance(0.95)) lines.push(`connection: ${rng.weighted([['Upgrade', 90], ['keep-alive, Upgrade', 4], ['close', 3], ['upgrade', 3]])}`);
  if (key !== undefined) lines.push(`sec-websocket-key: ${key}`);
  if (version !== undefined) lines.push(`sec-websocket-version: ${version}`);
  if (protocols !== undefined) lines.push(`sec-websocket-protocol: ${protocols}`);
  if (origin !== undefined) lines.push(`origin: ${origin}`);
  if (rng.chance(0.05)) lines.push(`sec-websocket-extensions: ${rng.pick(['permessage-deflate', 'permessage-deflate; client_max_window_bits', 'x-webkit-deflate-frame', 'permessage-deflate; server_max_window_bits=1'])}`);
  if (rng.chance(0.05)) lines.push(`authorization: Bearer ${token}`);
  tags.push(`path:${path.slice(0, 40)}`, `protocols:${protocols === undefined ? 'none' : protocols.includes(WS_BEARER_PREFIX) ? 'bearer' : 'other'}`, `token:${token === PH.agentToken ? 'agent' : 'other'}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
}

/** The upgrade request raw units start with (valid; with or without the bearer subprotocol). */
export function validUpgrade(bearer: boolean): Buffer {
  return Buffer.from([
    'GET /ws/agent HTTP/1.1', 'host: @@HOSTPORT@@', 'upgrade: websocket', 'connection: Upgrade', 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version: 13',
    `sec-websocket-protocol: ${WS_SUBPROTOCOL}${bearer ? `, ${WS_BEARER_PREFIX}${PH.agentToken}` : ''}`, '', '',
  ].join('\r\n'));
}

const closeFrame = (code: number, reason = '') => {
  const p = Buffer.alloc(2 + Buffer.byteLength(reason));
  p.writeUInt16BE(code, 0);
  p.write(reason, 2);
  return frameBytes({ opcode: 8, payload: p });
};

function rawFrames(rng: Rng, tags: string[]): { frames: Buffer[]; expectClose: boolean; closeSent?: number } {
  const ping = Buffer.from(encode({ type: 'ping', t: 7 }));
  const hello = Buffer.from(encode({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'raw', version: '0', instanceId: PH.instance }, grants: GRANTED }));
  const how = rng.weighted<string>([
    ['bad-opcode', 10], ['rsv', 8], ['unmasked', 6], ['big-control', 5], ['fragmented-control', 5], ['orphan-continuation', 5], ['interleaved-data', 5],
    ['len64-msb', 3], ['len-over-limit', 3], ['len-lie-long', 4], ['len-lie-short', 5], ['close-codes', 10], ['close-short', 3], ['close-bad-utf8', 3],
    ['text-bad-utf8', 5], ['ping-payload', 4], ['tiny-fragments', 4], ['empty-text', 3], ['garbage', 5], ['valid', 5], ['non-minimal-length', 3], ['pong-unsolicited', 2],
  ]);
  tags.push(`raw:${how}`);
  const text = (p: Buffer, o: Partial<Parameters<typeof frameBytes>[0]> = {}) => frameBytes({ opcode: 1, payload: p, ...o });
  const bye = closeFrame(1000);
  switch (how) {
    case 'bad-opcode':
      return { frames: [frameBytes({ opcode: rng.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), payload: rng.chance(0.5) ? ping : rng.bytes(rng.int(0, 200)) })], expectClose: true };
    case 'rsv':
      return { frames: [text(ping, { rsv: rng.int(1, 7) })], expectClose: true };
    case 'unmasked':
      return { frames: [text(ping, { mask: false })], expectClose: true };
    case 'big-control':
      return { frames: [frameBytes({ opcode: rng.pick([8, 9, 10]), payload: rng.bytes(rng.int(126, 3000)) })], expectClose: true };
    case 'fragmented-control':
      return { frames: [frameBytes({ opcode: rng.pick([8, 9, 10]), fin: false, payload: Buffer.from('x') })], expectClose: true };
    case 'orphan-continuation':
      return { frames: [frameBytes({ opcode: 0, payload: ping })], expectClose: true };
    case 'interleaved-data':
      return { frames: [text(ping.subarray(0, 5), { fin: false }), text(ping)], expectClose: true };
    case 'len64-msb':
      return { frames: [text(ping, { declaredLength: 0x8000000000000000n + BigInt(rng.int(0, 1000)), lengthForm: 64 })], expectClose: true };
    case 'len-over-limit':
      return { frames: [text(Buffer.alloc(0), { declaredLength: rng.pick([1024 * 1024 + 1, 2 ** 32, 2 ** 40]), lengthForm: 64 })], expectClose: true };
    case 'len-lie-long':
      // Declares more than it sends: the server waits for the rest; it must still end the
      // connection (the auth/hello timeout) rather than hold it forever.
      return { frames: [text(ping, { declaredLength: ping.length + rng.int(1, 5000) })], expectClose: false };
    case 'len-lie-short':
      return { frames: [text(ping, { declaredLength: rng.int(0, ping.length - 1) }), bye], expectClose: true };
    case 'close-codes': {
      const code = rng.pick([0, 1, 999, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 3000, 4000, 4999, 5000, 65535]);
      return { frames: [closeFrame(code, rng.chance(0.3) ? word(rng) : '')], expectClose: true, closeSent: code };
    }
    case 'close-short':
      return { frames: [frameBytes({ opcode: 8, payload: Buffer.from([3]) })], expectClose: true };
    case 'close-bad-utf8':
      return { frames: [frameBytes({ opcode: 8, payload: Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from([0xff, 0xc0, 0x80])]) })], expectClose: true };
    case 'text-bad-utf8':
      return { frames: [text(Buffer.concat([ping.subarray(0, 10), Buffer.from(rng.pick([[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82]])), ping.subarray(10)]))], expectClose: true };
    case 'ping-payload':
      return { frames: [frameBytes({ opcode: 9, payload: rng.bytes(rng.int(0, 125)) }), text(hello), text(ping), bye], expectClose: true };
    case 'tiny-fragments': {
      const p = rng.chance(0.5) ? ping : hello;
      const parts = [...p].map((c, k) => frameBytes({ opcode: k === 0 ? 1 : 0, fin: k === p.length - 1, payload: Buffer.from([c]) }));
      return { frames: [...parts, bye], expectClose: true };
    }
    case 'empty-text':
      return { frames: [text(Buffer.alloc(0)), bye], expectClose: true };
    case 'valid':
      return { frames: [text(hello), text(ping), text(Buffer.from(encode({ type: 'grants', grants: GRANTED }))), bye], expectClose: true };
    case 'non-minimal-length':
      return { frames: [text(ping, { lengthForm: rng.pick([16, 64] as const) }), bye], expectClose: true };
    case 'pong-unsolicited':
      return { frames: [frameBytes({ opcode: 10, payload: rng.bytes(rng.int(0, 125)) }), text(ping), bye], expectClose: true };
    default:
      return { frames: [rng.bytes(rng.int(1, 1024))], expectClose: false };
  }
}

/** Generates unit `index` of the WebSocket surface. */
export function generateWs(seed: string, index: number): WsUnit {
  const rng = rngFor(seed, 'ws', index);
  const tags: string[] = [];
  const kind = rng.weighted<WsUnit['kind']>([['frames', 86], ['preauth', 5], ['upgrade', 5], ['raw', 4]]);
  if (kind === 'frames') return { index, kind, frames: outFrames(rng, tags), tags };
  if (kind === 'preauth') {
    const first: OutFrame[] = rng.weighted<OutFrame[]>([
      [[{ data: Buffer.from(encode({ type: 'auth', token: PH.agentToken })), binary: false, fragments: 1 }], 40],
      [[{ data: Buffer.from(encode({ type: 'auth', token: rng.pick([PH.adminToken, PH.clientToken, '@@TAMPERED_AGENT@@', word(rng, 1, 100), '', 'x'.repeat(8193)]) })), binary: false, fragments: 1 }], 25],
      [outFrames(rng, tags), 35],
    ]);
    if (rng.chance(0.5)) first.push({ data: Buffer.from(encode({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'pre', version: '0', instanceId: PH.instance }, grants: GRANTED })), binary: false, fragments: 1 });
    return { index, kind, frames: first, tags };
  }
  if (kind === 'upgrade') return { index, kind, request: upgradeRequest(rng, tags), tags };
  const bearer = rng.chance(0.8);
  const { frames, expectClose, closeSent } = rawFrames(rng, tags);
  return { index, kind, bearer, frames, tags, expectClose, closeSent };
}

// ── running ──────────────────────────────────────────────────────────────────────────────────────

/** What one unit produced. */
export interface WsOutcome {
  violations: Violation[];
  /** Server frames by type (error frames as `error:CODE`). */
  received: string[];
  /** How the connection ended, if it did: close code (ours or theirs) or HTTP status of a refused upgrade. */
  closed?: number | undefined;
  status?: number | undefined;
  sent: string;
  framesSent: number;
}


export function wsPlaceholders(ctx: WsContext, instance: string, task: string | undefined, index: number): [string, string][] {
  return [
    [PH.agentToken, ctx.agentToken], [PH.adminToken, ctx.adminToken], [PH.clientToken, ctx.clientToken], ['@@TAMPERED_AGENT@@', tamper(ctx.agentToken)],
    [PH.instance, instance], [PH.task, task ?? `t_gone${index}`], ['@@HOSTPORT@@', `${ctx.target.host}:${ctx.target.port}`],
  ];
}

function fill(b: Buffer, values: [string, string][]): Buffer {
  if (b.indexOf('@@') < 0) return b;
  let s = b.toString('latin1');
  for (const [k, v] of values) s = s.replaceAll(k, Buffer.from(v).toString('latin1'));
  return Buffer.from(s, 'latin1');
}

/** Checks one frame the server sent. */
export function checkServerFrame(data: Buffer | string, isBinary: boolean): { label: string; violations: Violation[] } {
  if (isBinary) return { label: 'binary', violations: [{ kind: 'bad-server-frame', detail: 'the server sent a binary frame' }] };
  const text = String(data);
  let f: unknown;
  try {
    f = JSON.parse(text);
  } catch {
    return { label: 'unparsable', violations: [{ kind: 'bad-server-frame', detail: `not JSON: ${printable(text, 200)}` }] };
  }
  const out: Violation[] = [];
  if (!serverFrameValidator.check(f)) out.push({ kind: 'bad-server-frame', detail: `does not match ServerFrame: ${printable(text, 300)}` });
  const type = (f as { type?: string }).type ?? '?';
  const code = (f as { code?: string }).code;
  if (type === 'error') {
    if (!isErrorCode(code)) out.push({ kind: 'bad-server-frame', detail: `error frame with unknown code ${String(code)}` });
    else if (code === 'PAL_ERR_INTERNAL') out.push({ kind: 'server-error', detail: `error frame PAL_ERR_INTERNAL: ${printable(text, 300)}` });
  }
  out.push(...leaks(text, ''));
  return { label: type === 'error' ? `error:${String(code)}` : type, violations: out };
}

function checkClose(code: number, echoOf?: number): Violation[] {
  // The server may echo the code the peer closed with.
  if (echoOf !== undefined && code === echoOf) return [];
  if (code === 1011) return [{ kind: 'server-error', detail: 'closed with 1011 (internal error)' }];
  return DOCUMENTED_CLOSE_CODES.has(code) ? [] : [{ kind: 'bad-close-code', detail: `closed with undocumented code ${code}` }];
}

/**
 * An agent connection of one fuzz worker: authenticated with the bearer subprotocol, said hello,
 * tracks the tasks dispatched to it (units refer to them) and every frame the server sends.
 */
export class FuzzConnection {
  readonly ws: WebSocket;
  readonly instance: string;
  /** Tasks dispatched to this connection, newest last. */
  readonly held: string[] = [];
  closed: { code: number; reason: string } | undefined;
  #listener: ((label: string, v: Violation[]) => void) | undefined;
  #waiters = new Map<number, () => void>();
  #onClose: (() => void)[] = [];

  private constructor(ctx: WsContext, instance: string, protocols: string[]) {
    this.instance = instance;
    this.ws = new WebSocket(ctx.wsUrl, protocols, { ca: ctx.target.ca, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
    this.ws.on('message', (data, isBinary) => {
      const { label, violations } = checkServerFrame(data as Buffer, isBinary);
      if (!isBinary) {
        try {
          const f = JSON.parse(String(data)) as { type?: string; taskId?: string; t?: number };
          if (f.type === 'task.dispatch' && f.taskId) {
            this.held.push(f.taskId);
            if (this.held.length > 16) this.held.shift();
          }
          if (f.type === 'pong' && typeof f.t === 'number') this.#waiters.get(f.t)?.();
        } catch {
          // checked above
        }
      }
      if (label !== 'task.dispatch' && label !== 'task.cancel') this.#listener?.(label, violations);
      else if (violations.length > 0) this.#listener?.(label, violations);
    });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
      for (const f of this.#onClose.splice(0)) f();
    });
    this.ws.on('error', () => undefined);
  }

  /** Opens a connection; with `hello`, says hello and waits for `welcome`. */
  static async open(ctx: WsContext, instance: string, o: { bearer: boolean; hello: boolean }): Promise<FuzzConnection> {
    const c = new FuzzConnection(ctx, instance, o.bearer ? [WS_SUBPROTOCOL, WS_BEARER_PREFIX + ctx.agentToken] : [WS_SUBPROTOCOL]);
    await new Promise<void>((resolve, reject) => {
      c.ws.once('open', () => resolve());
      c.ws.once('error', reject);
      c.ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    if (o.hello) {
      let welcomed!: () => void;
      const welcome = new Promise<void>((r) => (welcomed = r));
      c.#listener = (label) => label === 'welcome' && welcomed();
      c.ws.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'fuzz', version: '0.0.0', instanceId: instance }, grants: GRANTED }));
      await within(welcome, 5000, 'no welcome');
      c.#listener = undefined;
    }
    return c;
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN && !this.closed;
  }

  /** Sends the unit's frames and a sentinel ping; resolves with what came back before its pong (or the close). */
  async run(frames: OutFrame[], values: [string, string][], sentinel: number, timeoutMs: number): Promise<WsOutcome> {
    const received: string[] = [];
    const violations: Violation[] = [];
    this.#listener = (label, v) => {
      received.push(label);
      violations.push(...v);
    };
    const sentParts: string[] = [];
    let framesSent = 0;
    try {
      for (const f of frames) {
        const data = fill(f.data, values);
        if (sentParts.length < 4) sentParts.push(`${f.binary ? 'binary' : 'text'}${f.fragments > 1 ? `×${f.fragments} fragments` : ''}: ${printable(data, 1500)}`);
        if (!this.open) break;
        if (f.fragments > 1) {
          const size = Math.ceil(data.length / f.fragments);
          for (let k = 0; k < f.fragments; k++) {
            const piece = data.subarray(k * size, (k + 1) * size);
            this.ws.send(piece, { binary: f.binary, fin: k === f.fragments - 1, compress: false });
            if (k === 0) this.ws.ping();
          }
        } else {
          this.ws.send(data, { binary: f.binary, compress: false });
        }
        framesSent++;
      }
      if (frames.length > 4) sentParts.push(`… ${frames.length} frames in all`);
      const pong = new Promise<void>((r) => this.#waiters.set(sentinel, r));
      const closed = new Promise<void>((r) => (this.closed ? r() : this.#onClose.push(r)));
      if (this.open) this.ws.send(JSON.stringify({ type: 'ping', t: sentinel }));
      const timedOut = await within(Promise.race([pong, closed]).then(() => false), timeoutMs, '').catch(() => true);
      if (timedOut) violations.push({ kind: 'hang', detail: `no pong for the sentinel ping within ${timeoutMs} ms and no close` });
    } finally {
      this.#waiters.delete(sentinel);
      this.#listener = undefined;
    }
    if (this.closed) violations.push(...checkClose(this.closed.code));
    return { violations, received, closed: this.closed?.code, sent: sentParts.join('\n'), framesSent };
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(what || 'timed out')), ms)))]).finally(() => clearTimeout(timer));
}

/** Runs an `upgrade` or `raw` unit over a raw TLS socket. */
export async function runRawUnit(u: Extract<WsUnit, { kind: 'upgrade' | 'raw' }>, ctx: WsContext, instance: string, timeoutMs: number): Promise<WsOutcome> {
  const values = wsPlaceholders(ctx, instance, undefined, u.index);
  const chunks = u.kind === 'upgrade' ? [fill(u.request, values)] : [fill(validUpgrade(u.bearer), values), ...u.frames.map((f) => fill(f, values))];
  const sent = chunks.map((c) => printable(c, 1500)).join('\n');
  const violations: Violation[] = [];
  const received: string[] = [];
  const head = chunks[0]!.subarray(0, 5).toString('latin1').toUpperCase() === 'HEAD ';
  // Upgrade units stop at the answer; raw units read until the server closes (or goes quiet).
  const ex = await exchange(ctx.target, chunks, {
    methods: [head ? 'HEAD' : 'GET'],
    expect: u.kind === 'upgrade' ? 1 : 2, stopAt101: u.kind === 'upgrade', firstMs: timeoutMs,
    idleMs: u.kind === 'raw' && !u.expectClose ? 1200 : 3000, gapMs: u.kind === 'raw' ? 2 : 0,
  });
  const res = ex.responses[0];
  if (!res) {
    if (ex.silent && ex.ended === 'idle') violations.push({ kind: 'hang', detail: 'no answer to the upgrade request' });
    return { violations, received, sent, framesSent: chunks.length - 1 };
  }
  if (res.status >= 500) violations.push({ kind: 'server-error', detail: `upgrade answered ${res.status}: ${printable(res.body, 300)}` });
  const type = res.headers.get('content-type')?.[0] ?? '';
  if (type.includes('problem+json') && !head) violations.push(...problemViolations(res.status, res.body.toString('utf8')));
  violations.push(...leaks(res.body.toString('utf8'), sent));
  if (res.status !== 101) return { violations, received, status: res.status, sent, framesSent: 0 };
  let closed: number | undefined;
  for (const f of parseFrames(ex.rest).frames) {
    if (f.masked) violations.push({ kind: 'bad-server-frame', detail: 'the server masked a frame' });
    if (f.opcode === 8) {
      closed = closeCode(f.payload).code;
      violations.push(...checkClose(closed, u.kind === 'raw' ? u.closeSent : undefined));
      received.push(`close:${closed}`);
    } else if (f.opcode === 1 || f.opcode === 2) {
      const c = checkServerFrame(f.payload, f.opcode === 2);
      received.push(c.label);
      violations.push(...c.violations);
    } else {
      received.push(`opcode:${f.opcode}`);
    }
  }
  if (u.kind === 'raw' && u.expectClose && closed === undefined && ex.ended === 'idle') {
    violations.push({ kind: 'hang', detail: 'a protocol violation (or our close) was not answered by a close' });
  }
  return { violations, received, closed, status: 101, sent, framesSent: chunks.length - 1 };
}

/** Runs a `preauth` unit: a fresh connection without a bearer token, its frames, the sentinel. */
export async function runPreauthUnit(u: Extract<WsUnit, { kind: 'preauth' }>, ctx: WsContext, instance: string, timeoutMs: number): Promise<WsOutcome> {
  let c: FuzzConnection;
  try {
    c = await FuzzConnection.open(ctx, instance, { bearer: false, hello: false });
  } catch (e) {
    const message = (e as Error).message;
    // With the shipped limits (--limits default), a 429 is the limiter doing its job.
    if (/: 429$/.test(message)) return { violations: [], received: [], status: 429, sent: '(connect)', framesSent: 0 };
    return { violations: [{ kind: 'connect-failed', detail: message }], received: [], sent: '(connect)', framesSent: 0 };
  }
  try {
    return await c.run(u.frames, wsPlaceholders(ctx, instance, undefined, u.index), 1e12 + u.index, timeoutMs);
  } finally {
    c.close();
  }
}
