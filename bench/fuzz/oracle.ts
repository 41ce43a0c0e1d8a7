/**
 * @module fuzz/oracle — what every answer must satisfy, whatever the input: no 5xx, problem
 * details that parse and carry a known code, no stack trace or internal path in a body, WebSocket
 * error frames with known codes and closes with documented codes. Also the list of known findings
 * (reported, but not failing the CI test), each matched narrowly.
 */
import { ERROR_CODES, isErrorCode } from '@palisade/protocol';

/** One broken rule. */
export interface Violation {
  kind: string;
  detail: string;
}

/** A violation with the input that caused it. */
export interface Finding extends Violation {
  surface: 'http' | 'ws';
  seed: string;
  index: number;
  /** What was sent, printable (bytes escaped, long runs shortened). */
  input: string;
  /** What came back, printable. */
  observed: string;
  /** The id of the known finding this matches, if any. */
  known?: string | undefined;
}

const REPO = new URL('../../', import.meta.url).pathname;

/** Text that betrays internals: stack frames, source paths, Node/Fastify/SQLite error names. */
const LEAKS: [string, RegExp][] = [
  ['stack frame', /\n\s+at [^\n]{1,200}:\d+:\d+/],
  ['stack frame', /\bat (?:async )?[\w.<>$]+ \((?:file:|node:|\/)[^)]*:\d+:\d+\)/],
  ['source path', new RegExp(REPO.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))],
  ['source path', /file:\/\/\/[\w/.-]+\.(?:ts|js|mjs)/],
  ['node_modules path', /node_modules\//],
  ['JS error name', /\b(?:SyntaxError|TypeError|RangeError|ReferenceError)\b/],
  ['Fastify error code', /\bFST_ERR_[A-Z_]+/],
  ['SQLite error', /\bSQLITE_[A-Z_]+|no such table|sqlite3?_/i],
  ['Node error code', /\bERR_(?:INVALID|OUT_OF|UNHANDLED|STREAM|HTTP|SOCKET|ASSERTION)[A-Z_]*/],
  ['temp data dir', /palisade-fuzz-[A-Za-z0-9]{6}/],
];

/** Leaks of internals in `body` that are not echoes of the request (`sent`). */
export function leaks(body: string, sent: string): Violation[] {
  const out: Violation[] = [];
  for (const [what, re] of LEAKS) {
    const m = re.exec(body);
    if (m && !sent.includes(m[0])) out.push({ kind: 'leak', detail: `${what}: ${JSON.stringify(m[0].slice(0, 120))}` });
  }
  return out;
}

/** Checks a body that claims `application/problem+json`. */
export function problemViolations(status: number, body: string): Violation[] {
  let p: unknown;
  try {
    p = JSON.parse(body);
  } catch {
    return [{ kind: 'bad-problem', detail: `problem+json body does not parse: ${JSON.stringify(body.slice(0, 200))}` }];
  }
  if (p === null || typeof p !== 'object') return [{ kind: 'bad-problem', detail: 'problem+json body is not an object' }];
  const o = p as Record<string, unknown>;
  const out: Violation[] = [];
  if (typeof o.code !== 'string') out.push({ kind: 'bad-problem', detail: 'problem has no code' });
  else if (!isErrorCode(o.code)) out.push({ kind: 'bad-problem', detail: `unknown code ${o.code}` });
  if (o.status !== status) out.push({ kind: 'bad-problem', detail: `problem status ${String(o.status)} ≠ HTTP ${status}` });
  if ('stack' in o || 'internal' in o) out.push({ kind: 'leak', detail: 'problem carries stack/internal' });
  // The same bound as an error's message everywhere else (ErrorBody, ErrorFrame: 4096): a detail
  // that echoes the input back unbounded turns a request into an amplified reflection.
  if (typeof o.detail === 'string' && o.detail.length > 4096) out.push({ kind: 'bad-problem', detail: `problem detail of ${o.detail.length} characters: ${printable(o.detail, 160)}` });
  return out;
}

/** WebSocket close codes the server may use: ws's own (1000–1009) and those of ERROR_CODES, except 1011 (internal). */
export const DOCUMENTED_CLOSE_CODES: ReadonlySet<number> = new Set([
  1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009,
  ...Object.values(ERROR_CODES).map((c) => c.close).filter((c) => c !== 1011),
]);

// ── known findings ───────────────────────────────────────────────────────────────────────────────

/** What the matchers see of a failure. */
export interface Observed {
  surface: 'http' | 'ws';
  route: string;
  /** HTTP: the request target (path and query) as generated. */
  target?: string | undefined;
  tags: readonly string[];
  kind: string;
  detail: string;
  status?: number | undefined;
  code?: string | undefined;
}

/**
 * Findings reported to the integrator and not yet fixed. Each is matched narrowly, so a new fault
 * does not hide behind it; the CI test prints them and passes. Remove an entry once it is fixed
 * (the CI test then fails if it comes back).
 */
export const KNOWN: { id: string; title: string; match(o: Observed): boolean }[] = [
];

export function knownId(o: Observed): string | undefined {
  return KNOWN.find((k) => k.match(o))?.id;
}

/** A printable, bounded rendering of bytes: UTF-8 where valid, `\xNN` otherwise, long runs folded. */
export function printable(b: Buffer | string, max = 2000): string {
  const s = typeof b === 'string' ? b : b.toString('latin1');
  const esc = (c: string) => {
    const n = c.charCodeAt(0);
    return (n < 0x20 && c !== '\n' && c !== '\r' && c !== '\t') || (n >= 0x7f && n <= 0xff) ? `\\x${n.toString(16).padStart(2, '0')}` : c;
  };
  let out = '';
  let i = 0;
  while (i < s.length && out.length < max) {
    // A run of one character, or of the object-nesting unit `{"a":`, is folded.
    if (s.startsWith('{"a":', i)) {
      let k = 0;
      while (s.startsWith('{"a":', i + k * 5)) k++;
      if (k >= 16) {
        out += `{"a":…(${k}×)…`;
        i += k * 5;
        continue;
      }
    }
    const c = s[i]!;
    let j = i + 1;
    while (j < s.length && s[j] === c) j++;
    out += j - i >= 64 ? `${esc(c).repeat(8)}…(${j - i}×)…` : esc(c).repeat(j - i);
    i = j;
  }
  return i < s.length ? `${out}…(${s.length} chars in all)` : out;
}
