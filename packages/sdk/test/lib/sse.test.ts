import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError } from '@palisade/protocol';
import { SSEParser, readSSE, type SSEEvent } from '../../src/lib/sse.ts';

function parse(chunks: Array<string | Uint8Array>, max?: number): { events: SSEEvent[]; comments: string[] } {
  const events: SSEEvent[] = [];
  const comments: string[] = [];
  const p = new SSEParser({ onEvent: (e) => events.push(e), onComment: (c) => comments.push(c), ...(max ? { maxEventBytes: max } : {}) });
  for (const c of chunks) p.push(c);
  p.end();
  return { events, comments };
}

const STREAM = ': ping\n\nevent: state\ndata: {"a":1}\n\nevent: progress\ndata: line one\ndata: line two\nid: 7\n\n';

test('parses events, names, multi-line data, ids and comments', () => {
  const { events, comments } = parse([STREAM]);
  assert.deepEqual(events, [
    { event: 'state', data: '{"a":1}', id: undefined, retry: undefined },
    { event: 'progress', data: 'line one\nline two', id: '7', retry: undefined },
  ]);
  assert.deepEqual(comments, ['ping']);
});

test('gives the same events whatever the chunk boundaries, for LF, CRLF and CR line ends', () => {
  const expected = parse([STREAM]).events;
  for (const eol of ['\n', '\r\n', '\r']) {
    const text = STREAM.replace(/\n/g, eol);
    const bytes = new TextEncoder().encode(text);
    for (let size = 1; size <= 9; size++) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      assert.deepEqual(parse(chunks).events, expected, `eol ${JSON.stringify(eol)}, chunk size ${size}`);
    }
  }
});

test('a CRLF split exactly between two chunks is one line end, not two', () => {
  const { events } = parse(['data: a\r', '\ndata: b\r', '\n\r', '\n']);
  assert.deepEqual(events.map((e) => e.data), ['a\nb']);
});

test('multi-byte UTF-8 characters split across chunks survive', () => {
  const bytes = new TextEncoder().encode('data: héllo — 世界 🎉\n\n');
  const chunks = Array.from(bytes, (b) => Uint8Array.of(b));
  assert.equal(parse(chunks).events[0]?.data, 'héllo — 世界 🎉');
});

test('strips a leading BOM, one space after the colon only, and handles fields without a colon', () => {
  const { events } = parse(['\ufeffdata:  two spaces\ndata\ndata:x\n\n']);
  assert.deepEqual(events.map((e) => e.data), [' two spaces\n\nx']);
  assert.equal(events[0]?.event, 'message');
});

test('an event without data is not dispatched; its type does not leak into the next event', () => {
  const { events } = parse(['event: state\n\ndata: x\n\n']);
  assert.deepEqual(events, [{ event: 'message', data: 'x', id: undefined, retry: undefined }]);
});

test('an unterminated last event is discarded at the end of the stream', () => {
  const { events } = parse(['data: complete\n\ndata: cut off']);
  assert.deepEqual(events.map((e) => e.data), ['complete']);
});

test('unknown fields are ignored and retry must be digits', () => {
  const { events } = parse(['foo: bar\nretry: 12x\ndata: a\n\nretry: 3000\ndata: b\n\n']);
  assert.equal(events[0]?.retry, undefined);
  assert.equal(events[1]?.retry, 3000);
});

test('an event larger than the bound is refused with PAL_ERR_FRAME_TOO_LARGE', () => {
  assert.throws(
    () => parse(['data: ' + 'x'.repeat(100) + '\n\n'], 50),
    (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_FRAME_TOO_LARGE',
  );
  // A line that never ends is bounded too.
  assert.throws(() => parse(['data: ' + 'x'.repeat(100)], 50), PalisadeError);
  // Many small data lines add up.
  assert.throws(() => parse([Array.from({ length: 20 }, () => 'data: 12345\n').join('')], 50), PalisadeError);
});

test('readSSE yields events from a byte stream and cancels it when the consumer stops early', async () => {
  let cancelled = false;
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(enc.encode('data: 1\n\ndata: 2\n\n'));
    },
    cancel() {
      cancelled = true;
    },
  });
  const seen: string[] = [];
  for await (const e of readSSE(stream)) {
    seen.push(e.data);
    if (seen.length === 3) break;
  }
  assert.deepEqual(seen, ['1', '2', '1']);
  assert.equal(cancelled, true);
});
