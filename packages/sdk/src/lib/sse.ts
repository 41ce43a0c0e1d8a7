/**
 * @module lib/sse — a streaming `text/event-stream` parser that follows the WHATWG rules:
 * `\r\n`, `\n` and `\r` line ends (also split across chunks), multi-byte characters split across
 * chunks, multi-line `data:`, comments, one optional space after the colon, a leading BOM, and an
 * unterminated last event discarded. Bounded: an event larger than `maxEventBytes` is refused.
 */
import { PalisadeError } from '@palisade/protocol';

/** One dispatched server-sent event. `event` defaults to `message`. */
export interface SSEEvent {
  event: string;
  data: string;
  id: string | undefined;
  retry: number | undefined;
}

/** Largest event accepted by default: 16 MiB of text (a final task may carry screenshots). */
export const DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024;

export interface SSEParserOptions {
  /** Called for every complete event. */
  onEvent: (event: SSEEvent) => void;
  /** Called for every comment line (`: ping`), without the colon. */
  onComment?: (comment: string) => void;
  /** Largest event (and line) in characters; default {@link DEFAULT_MAX_EVENT_BYTES}. */
  maxEventBytes?: number;
}

/**
 * Incremental parser: feed it chunks with `push`, call `end` when the stream ends.
 *
 * @example
 * const p = new SSEParser({ onEvent: (e) => console.log(e.event, e.data) });
 * p.push(chunk); … p.end();
 */
export class SSEParser {
  readonly #onEvent: (event: SSEEvent) => void;
  readonly #onComment: ((comment: string) => void) | undefined;
  readonly #max: number;
  readonly #decoder = new TextDecoder('utf-8');
  #buffer = '';
  #afterCR = false;
  #first = true;
  #eventType = '';
  #data: string[] = [];
  #dataLength = 0;
  #lastId: string | undefined;
  #retry: number | undefined;

  constructor(options: SSEParserOptions) {
    this.#onEvent = options.onEvent;
    this.#onComment = options.onComment;
    this.#max = options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  }

  /** Feeds bytes (decoded as UTF-8, streaming) or already-decoded text. */
  push(chunk: Uint8Array | string): void {
    let text = typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true });
    if (this.#first && text.length > 0) {
      this.#first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    this.#feed(text);
  }

  /** The stream ended: flushes the decoder; an event without its blank line is discarded. */
  end(): void {
    const rest = this.#decoder.decode();
    if (rest) this.#feed(rest);
    this.#buffer = '';
    this.#resetEvent();
  }

  #feed(text: string): void {
    let start = 0;
    let i = 0;
    if (this.#afterCR && text.length > 0) {
      // A `\r` ended the previous chunk: a `\n` opening this one belongs to the same line end.
      this.#afterCR = false;
      if (text.charCodeAt(0) === 0x0a) start = i = 1;
    }
    for (; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) continue;
      const line = this.#buffer + text.slice(start, i);
      this.#buffer = '';
      if (c === 0x0d) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 0x0a) i++;
        } else {
          this.#afterCR = true;
        }
      }
      start = i + 1;
      this.#line(line);
    }
    if (start < text.length) {
      this.#buffer += text.slice(start);
      if (this.#buffer.length + this.#dataLength > this.#max) this.#tooLarge();
    }
  }

  #line(line: string): void {
    if (line.length === 0) {
      this.#dispatch();
      return;
    }
    if (line.charCodeAt(0) === 0x3a) {
      this.#onComment?.(line.slice(1).replace(/^ /, ''));
      return;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case 'event':
        this.#eventType = value;
        break;
      case 'data':
        this.#dataLength += value.length + 1;
        if (this.#dataLength > this.#max) this.#tooLarge();
        this.#data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.#lastId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.#retry = Number(value);
        break;
      default:
        // Unknown fields are ignored, as the standard says.
        break;
    }
  }

  #dispatch(): void {
    if (this.#data.length === 0) {
      this.#eventType = '';
      return;
    }
    const event: SSEEvent = {
      event: this.#eventType || 'message',
      data: this.#data.join('\n'),
      id: this.#lastId,
      retry: this.#retry,
    };
    this.#resetEvent();
    this.#onEvent(event);
  }

  #resetEvent(): void {
    this.#eventType = '';
    this.#data = [];
    this.#dataLength = 0;
  }

  #tooLarge(): never {
    this.#buffer = '';
    this.#resetEvent();
    throw new PalisadeError('PAL_ERR_FRAME_TOO_LARGE', `a server-sent event is larger than ${this.#max} characters`);
  }
}

/**
 * Reads a byte stream as server-sent events.
 * `onComment` sees keep-alive comments; the stream is cancelled if the consumer stops early.
 */
export async function* readSSE(
  stream: ReadableStream<Uint8Array>,
  options: { maxEventBytes?: number; onComment?: (comment: string) => void; onChunk?: () => void } = {},
): AsyncGenerator<SSEEvent, void, undefined> {
  const queue: SSEEvent[] = [];
  const parserOptions: SSEParserOptions = { onEvent: (e) => queue.push(e) };
  if (options.maxEventBytes !== undefined) parserOptions.maxEventBytes = options.maxEventBytes;
  if (options.onComment) parserOptions.onComment = options.onComment;
  const parser = new SSEParser(parserOptions);
  const reader = stream.getReader();
  let done = false;
  try {
    while (true) {
      const next = await reader.read();
      if (next.done) {
        done = true;
        parser.end();
      } else {
        options.onChunk?.();
        parser.push(next.value);
      }
      while (queue.length > 0) yield queue.shift() as SSEEvent;
      if (done) return;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
