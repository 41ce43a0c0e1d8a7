/**
 * @module fuzz/raw — bytes on a socket, for what a well-behaved client cannot send: malformed
 * HTTP over a fresh TLS (or plain TCP) connection, an HTTP/1.1 response reader that tolerates
 * anything, and WebSocket frames built and read by hand (bad opcodes, reserved bits, lying lengths).
 */
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect, type Socket } from 'node:net';

export interface Target {
  host: string;
  port: number;
  /** The CA that signed the server certificate (PEM). */
  ca: string;
}

/** One HTTP response read off the wire. */
export interface RawResponse {
  status: number;
  headers: Map<string, string[]>;
  body: Buffer;
  /** The body was cut short (connection closed or gave up waiting). */
  partial: boolean;
}

export interface Exchange {
  responses: RawResponse[];
  /** Bytes after the last response (a WebSocket stream after a 101). */
  rest: Buffer;
  /** How the socket ended: the server closed it, we gave up waiting, or an error. */
  ended: 'closed' | 'idle' | 'error' | 'done';
  error?: string | undefined;
  /** Nothing at all arrived within the first wait. */
  silent: boolean;
}

/** Opens a TLS (or, with `plain`, TCP) connection to the target. */
export function open(t: Target, plain = false): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = plain
      ? netConnect({ host: t.host, port: t.port })
      : tlsConnect({ host: t.host, port: t.port, ca: t.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    const ok = () => {
      s.off('error', reject);
      resolve(s);
    };
    s.once(plain ? 'connect' : 'secureConnect', ok);
    s.once('error', reject);
  });
}

/**
 * Writes `chunks` (with `gapMs` between them) and reads until `expect` complete responses arrived,
 * the server closed, or nothing came for `idleMs` (`firstMs` for the first byte).
 */
export async function exchange(t: Target, chunks: Buffer[], o: { plain?: boolean; expect?: number; firstMs?: number; idleMs?: number; gapMs?: number; stopAt101?: boolean; methods?: string[] } = {}): Promise<Exchange> {
  let s: Socket;
  try {
    s = await open(t, o.plain);
  } catch (e) {
    return { responses: [], rest: Buffer.alloc(0), ended: 'error', error: (e as Error).message, silent: true };
  }
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let got = 0;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (ended: Exchange['ended'], error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      const all = Buffer.concat(parts);
      const { responses, rest } = parseResponses(all, true, o.methods);
      resolve({ responses, rest, ended, error, silent: all.length === 0 });
    };
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => finish('idle'), ms);
    };
    s.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      arm(o.idleMs ?? 1500);
      const { responses } = parseResponses(Buffer.concat(parts), false, o.methods);
      if (responses.length >= (o.expect ?? 1) && responses.every((r) => !r.partial)) finish('done');
      else if (o.stopAt101 && responses[0]?.status === 101) finish('done');
    });
    s.on('end', () => finish('closed'));
    s.on('close', () => finish('closed'));
    s.on('error', (e) => finish('error', (e as NodeJS.ErrnoException).code ?? e.message));
    arm(o.firstMs ?? 10_000);
    void (async () => {
      for (let i = 0; i < chunks.length && !settled; i++) {
        if (i > 0 && o.gapMs) await new Promise((r) => setTimeout(r, o.gapMs));
        if (!s.destroyed) s.write(chunks[i]!);
      }
    })();
    void got;
  });
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Reads HTTP/1.1 responses from `buf`. With `lenient`, a response whose body is cut short is
 * returned marked `partial`; otherwise parsing stops before it. `methods[k]` is the method of the
 * k-th request (a HEAD answer has no body).
 */
export function parseResponses(buf: Buffer, lenient: boolean, methods: readonly string[] = []): { responses: RawResponse[]; rest: Buffer } {
  const responses: RawResponse[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const end = buf.indexOf(CRLFCRLF, pos);
    if (end < 0) break;
    const head = buf.subarray(pos, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/\d\.\d (\d{3})/.exec(head[0] ?? '');
    if (!m) break;
    const status = Number(m[1]);
    const headers = new Map<string, string[]>();
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const k = line.slice(0, i).trim().toLowerCase();
      headers.set(k, [...(headers.get(k) ?? []), line.slice(i + 1).trim()]);
    }
    let at = end + 4;
    if (status === 101 || (status >= 100 && status < 200)) {
      responses.push({ status, headers, body: Buffer.alloc(0), partial: false });
      pos = at;
      if (status === 101) break;
      continue;
    }
    const te = (headers.get('transfer-encoding') ?? []).join(',').toLowerCase();
    const cl = headers.get('content-length')?.[0];
    if (methods[responses.filter((r) => r.status >= 200).length]?.toUpperCase() === 'HEAD') {
      responses.push({ status, headers, body: Buffer.alloc(0), partial: false });
      pos = at;
    } else if (te.includes('chunked')) {
      const chunks: Buffer[] = [];
      let done = false;
      while (at < buf.length) {
        const eol = buf.indexOf('\r\n', at);
        if (eol < 0) break;
        const size = parseInt(buf.subarray(at, eol).toString('latin1'), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf(CRLFCRLF, eol);
          at = trailerEnd >= 0 ? trailerEnd + 4 : buf.length;
          done = true;
          break;
        }
        if (eol + 2 + size > buf.length) break;
        chunks.push(buf.subarray(eol + 2, eol + 2 + size));
        at = eol + 2 + size + 2;
      }
      if (!done && !lenient) break;
      responses.push({ status, headers, body: Buffer.concat(chunks), partial: !done });
      pos = done ? at : buf.length;
    } else if (cl !== undefined || status === 204 || status === 304) {
      const n = status === 204 || status === 304 ? 0 : Number(cl);
      const complete = at + n <= buf.length;
      if (!complete && !lenient) break;
      responses.push({ status, headers, body: buf.subarray(at, Math.min(buf.length, at + n)), partial: !complete });
      pos = Math.min(buf.length, at + n);
    } else {
      // Delimited by the connection closing.
      if (!lenient) break;
      responses.push({ status, headers, body: buf.subarray(at), partial: false });
      pos = buf.length;
    }
  }
  return { responses, rest: buf.subarray(pos) };
}

// ── WebSocket frames by hand ─────────────────────────────────────────────────────────────────────

export interface FrameSpec {
  fin?: boolean;
  /** Reserved bits RSV1–3 as a 3-bit number. */
  rsv?: number;
  opcode: number;
  payload: Buffer;
  /** Mask the payload (clients must). Default true. */
  mask?: boolean;
  /** Declare this payload length instead of the real one (a lie), written in the smallest form unless `lengthForm` says otherwise. */
  declaredLength?: number | bigint;
  /** Force the length encoding: 7-bit, 16-bit (126) or 64-bit (127). */
  lengthForm?: 7 | 16 | 64;
}

/** One WebSocket frame as bytes. */
export function frameBytes(f: FrameSpec): Buffer {
  const len = f.declaredLength ?? f.payload.length;
  const n = typeof len === 'bigint' ? len : BigInt(len);
  const form = f.lengthForm ?? (n < 126n ? 7 : n < 65536n ? 16 : 64);
  const mask = f.mask ?? true;
  const head: number[] = [((f.fin ?? true) ? 0x80 : 0) | ((f.rsv ?? 0) << 4) | (f.opcode & 0x0f)];
  const m = mask ? 0x80 : 0;
  if (form === 7) head.push(m | Number(n & 0x7fn));
  else if (form === 16) head.push(m | 126, Number((n >> 8n) & 0xffn), Number(n & 0xffn));
  else {
    head.push(m | 127);
    for (let i = 7; i >= 0; i--) head.push(Number((n >> BigInt(i * 8)) & 0xffn));
  }
  if (!mask) return Buffer.concat([Buffer.from(head), f.payload]);
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = Buffer.from(f.payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  return Buffer.concat([Buffer.from(head), key, body]);
}

/** A frame the server sent. */
export interface ServerFrameRead {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/** Reads complete server frames from `buf` (stops at the first incomplete one). */
export function parseFrames(buf: Buffer): { frames: ServerFrameRead[]; rest: Buffer } {
  const frames: ServerFrameRead[] = [];
  let pos = 0;
  while (buf.length - pos >= 2) {
    const b0 = buf[pos]!;
    const b1 = buf[pos + 1]!;
    let len = b1 & 0x7f;
    let at = pos + 2;
    if (len === 126) {
      if (buf.length < at + 2) break;
      len = buf.readUInt16BE(at);
      at += 2;
    } else if (len === 127) {
      if (buf.length < at + 8) break;
      len = Number(buf.readBigUInt64BE(at));
      at += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    if (masked) at += 4;
    if (buf.length < at + len) break;
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload: buf.subarray(at, at + len) });
    pos = at + len;
  }
  return { frames, rest: buf.subarray(pos) };
}

/** The close code (and reason) of a close frame's payload; 1005 when it carries none. */
export function closeCode(payload: Buffer): { code: number; reason: string } {
  if (payload.length < 2) return { code: 1005, reason: '' };
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') };
}
