/**
 * @module fuzz/gen — generated values for the fuzzers: valid values read off the real TypeBox
 * schemas of `@palisade/protocol`, then mutated (wrong types, unknown and poisoned fields, deep
 * nesting, huge numbers and strings, odd Unicode), serialised by a JSON writer that can also emit
 * what `JSON.stringify` cannot (duplicate keys, `1e309`, nesting deeper than the stack), and byte
 * mutations of the text (invalid UTF-8, truncation, trailing garbage).
 */
import { Kind, OptionalKind, type TSchema } from '@sinclair/typebox';
import { PROTOCOL_VERSION, RECIPE_NAME_PATTERN } from '@palisade/protocol';
import type { Rng } from './rng.ts';

/** JSON text written verbatim where a value goes (deep nesting, `1e309`, a huge array). */
export class Raw {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

/** An object written with its entries as given: duplicate keys, `__proto__` as a plain key. */
export class Entries {
  readonly entries: [string, unknown][];
  constructor(entries: [string, unknown][]) {
    this.entries = entries;
  }
}

/** Writes `v` as JSON text; `Raw` and `Entries` are written as they are. Shallow recursion only (generated values are shallow). */
export function encode(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (v instanceof Entries) return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}:${encode(x)}`).join(',')}}`;
  if (Array.isArray(v)) return `[${v.map(encode).join(',')}]`;
  if (v !== null && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${encode(x)}`).join(',')}}`;
  if (typeof v === 'number' && !Number.isFinite(v)) return 'null';
  return v === undefined ? 'null' : JSON.stringify(v);
}

// ── what generated values name: sites, tokens, ids ─────────────────────────────────────────────

/** Origins the fixtures grant (`GRANTED`) and others. */
export const GRANTED = ['https://example.com', 'http://127.0.0.1:9'];
export const ORIGINS = [...GRANTED, 'https://queued.example', 'https://other.example:8443', 'http://localhost:3000', 'https://xn--bcher-kva.example'];

/** Placeholders resolved when an input is sent (tokens and ids are known only at run time). */
export const PH = {
  agentToken: '@@AGENT_TOKEN@@',
  adminToken: '@@ADMIN_TOKEN@@',
  clientToken: '@@CLIENT_TOKEN@@',
  task: '@@TASK@@',
  instance: '@@INSTANCE@@',
  clientId: '@@CLIENT_ID@@',
  clientSecret: '@@CLIENT_SECRET@@',
} as const;

// ── primitive nasties ───────────────────────────────────────────────────────────────────────────

const EDGE_LENGTHS = [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1024, 2047, 2048, 2049, 4096, 4097, 8192, 8193, 65_536, 65_537];
const SPECIAL_STRINGS = [
  '', ' ', '\t', '\n', '\r\n', '\u0000', 'null', 'undefined', 'true', '0', '-1', 'NaN', 'Infinity', '1e309', '[]', '{}',
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty',
  '${input.query}', '${input.site}', '${input.__proto__}', '${input.a}${input.a}', '${', '$', '{{7*7}}',
  '../../../etc/passwd', '..\\..\\windows', '%2e%2e%2f', '%00', '\u0000.png', 'CON', 'aux.txt',
  "' OR '1'='1", '"; DROP TABLE tasks; --', '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '\r\nSet-Cookie: a=b',
  'javascript:alert(1)', 'data:text/html,<b>x</b>', 'file:///etc/passwd', 'chrome://settings', 'about:blank', 'blob:https://example.com/x',
  'http://[::1]', 'https://user:pass@example.com', 'https://example.com:99999', 'http://0x7f.1/', 'https://example.com/', 'HTTPS://EXAMPLE.COM',
  'https://example.com.', 'https://exa mple.com', 'https://example.com#x', 'https://example.com?x', '//example.com', 'https:/example.com',
  '\ud800', '\udfff', '\ud83d', '😀', '\u202eevil', '\u200b', '\ufeff', 'e\u0301', 'Ω≈ç√', '𝕏', '\u0085', '\u2028\u2029', 'ǅ', 'İ',
  'palisade.bearer.x', 'Bearer x', 'a'.repeat(64), 'a'.repeat(65), 'A'.repeat(129),
];

/** A string: plain, special, Unicode-heavy, control characters, or long. */
export function str(rng: Rng): string {
  switch (rng.int(0, 9)) {
    case 0:
    case 1:
      return rng.pick(SPECIAL_STRINGS);
    case 2:
      return 'x'.repeat(rng.pick(EDGE_LENGTHS));
    case 3: {
      let s = '';
      const n = rng.int(1, 24);
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.int(0, 0xffff));
      return s;
    }
    case 4: {
      let s = '';
      const n = rng.int(1, 16);
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.int(0, 0x1f));
      return s;
    }
    case 5:
      return rng.pick(ORIGINS) + rng.pick(['', '/', '/search?q=1', '/%2e%2e/', '/a/../../b', '/\u00e9']);
    default:
      return word(rng);
  }
}

export function word(rng: Rng, min = 1, max = 16): string {
  const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-';
  let s = '';
  const n = rng.int(min, max);
  for (let i = 0; i < n; i++) s += chars[rng.int(0, chars.length - 1)];
  return s;
}

/** A number at an edge, as a value or as raw text (`1e309`, 400 digits…). */
export function num(rng: Rng): unknown {
  return rng.pick<unknown>([
    0, -0, 1, -1, 0.5, -0.5, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 63, 1e21, 1e308, -1e308, Number.MIN_VALUE, Number.EPSILON,
    rng.int(-1_000_000, 1_000_000), rng.next() * 1e6, 999, 1000, 1001, 3_600_000, 3_600_001, 300_000, 300_001, 16_384, 16_385,
    new Raw('1e309'), new Raw('-1e309'), new Raw('1e-400'), new Raw('-0.0'), new Raw('1E+2'), new Raw(`1${'0'.repeat(400)}`), new Raw(`0.${'0'.repeat(400)}1`),
    new Raw('0x10'), new Raw('01'), new Raw('.5'), new Raw('+1'), new Raw('NaN'), new Raw('Infinity'),
  ]);
}

/** Any small JSON value. */
export function anyValue(rng: Rng, depth = 0): unknown {
  const k = depth > 2 ? rng.int(0, 4) : rng.int(0, 6);
  switch (k) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return num(rng);
    case 3:
    case 4:
      return str(rng);
    case 5:
      return Array.from({ length: rng.int(0, 4) }, () => anyValue(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(0, 4); i > 0; i--) o[rng.chance(0.7) ? word(rng) : str(rng)] = anyValue(rng, depth + 1);
      return o;
    }
  }
}

/** JSON text nested `depth` levels (arrays or objects), as a `Raw`. */
export function deep(rng: Rng, depth = rng.weighted([[16, 3], [100, 3], [1000, 3], [3000, 3], [10_000, 2], [100_000, 1], [400_000, 0.3]] as const)): Raw {
  if (rng.chance(0.5)) return new Raw('['.repeat(depth) + ']'.repeat(depth));
  return new Raw('{"a":'.repeat(depth) + '1' + '}'.repeat(depth));
}

// ── valid values from a schema ───────────────────────────────────────────────────────────────────

type Schema = TSchema & {
  [Kind]: string;
  [OptionalKind]?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  patternProperties?: Record<string, Schema>;
  minItems?: number; maxItems?: number; uniqueItems?: boolean;
  minLength?: number; maxLength?: number; pattern?: string;
  minimum?: number; maximum?: number; maxProperties?: number;
  const?: unknown;
};

const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const SELECTORS = ['h1', '#q', 'aria/Search', 'text/Submit', 'xpath///*[@id="q"]', 'pierce/#x', 'main > ul li:nth-child(2) a[href]', 'button[type=submit]'];

/** A string for a field, by the field's name where that says more than the schema. */
function namedString(rng: Rng, key: string | undefined, s: Schema): string | undefined {
  switch (key) {
    case 'site':
      return rng.pick(ORIGINS);
    case 'url':
      return `${rng.pick(GRANTED)}${rng.pick(['/', '/search?q=fuzz', '/a/b', ''])}`;
    case 'taskId':
      return rng.chance(0.8) ? PH.task : `t_${word(rng, 8, 16)}`;
    case 'instanceId':
      return rng.chance(0.9) ? PH.instance : word(rng, 1, 64);
    case 'token':
      return rng.weighted([[PH.agentToken, 6], [PH.adminToken, 1], [PH.clientToken, 1], [word(rng, 10, 60), 1]]);
    case 'recipe':
      return rng.pick(['search-extract', 'image-prompt', 'search-extract', 'no-such-recipe']);
    case 'status':
      return undefined;
    case 'code':
      return rng.pick(['PAL_ERR_STEP_FAILED', 'PAL_ERR_ASSERTION_FAILED', 'E_CUSTOM']);
    case 'name':
      return rng.chance(0.8) ? word(rng, 1, Math.min(24, s.maxLength ?? 24)) : undefined;
    default:
      return undefined;
  }
}

function patternString(rng: Rng, pattern: string): string {
  if (pattern === RECIPE_NAME_PATTERN) return rng.pick(['search-extract', 'image-prompt', 'a', word(rng, 1, 20).toLowerCase().replace(/[^a-z0-9-]/g, 'a')]);
  if (pattern.startsWith('^[A-Za-z_]')) return `_${word(rng, 1, 20).replace(/-/g, '_')}`;
  // Ids: ^[A-Za-z0-9_-]{1,64}$
  let s = '';
  for (let i = rng.int(1, 24); i > 0; i--) s += ID_CHARS[rng.int(0, ID_CHARS.length - 1)];
  return s;
}

function between(rng: Rng, lo: number, hi: number, integer: boolean): number {
  const v = rng.weighted<number>([[lo, 2], [hi, 1], [Math.min(hi, lo + 1), 1], [lo + (hi - lo) * rng.next(), 4]]);
  return integer ? Math.floor(v) : v;
}

/** A value that matches `schema` (most of the time: patterns are approximated), named `key` in its parent. */
export function valid(rng: Rng, schema: TSchema, key?: string): unknown {
  const s = schema as Schema;
  switch (s[Kind]) {
    case 'Object': {
      const out: Record<string, unknown> = {};
      for (const [k, p] of Object.entries(s.properties ?? {})) {
        if (p[OptionalKind] === 'Optional' && rng.chance(0.6)) continue;
        out[k] = valid(rng, p, k);
      }
      return out;
    }
    case 'Array': {
      if (key === 'grants') return rng.chance(0.85) ? [...GRANTED, ...(rng.chance(0.3) ? [rng.pick(ORIGINS)] : [])] : Array.from({ length: rng.int(0, 3) }, () => str(rng));
      if (key === 'selectors' && rng.chance(0.7)) return [rng.chance(0.5) ? rng.pick(SELECTORS) : [rng.pick(SELECTORS)]];
      const min = s.minItems ?? 0;
      const n = rng.int(min, Math.max(min, Math.min(s.maxItems ?? 3, 3)));
      const out = Array.from({ length: n }, () => valid(rng, s.items!, key));
      return s.uniqueItems ? [...new Set(out.map((x) => JSON.stringify(x)))].map((x) => JSON.parse(x) as unknown) : out;
    }
    case 'String': {
      const named = namedString(rng, key, s);
      if (named !== undefined) return named;
      if (s.pattern) return patternString(rng, s.pattern);
      if (key === 'selector' || key === 'value' || key === 'text') return rng.pick(SELECTORS);
      // Sometimes exactly the longest allowed (a boundary), unless that is megabytes (dataUrl).
      if (rng.chance(0.8)) return word(rng, Math.max(1, s.minLength ?? 0), Math.min(s.maxLength ?? 16, 16));
      return 'x'.repeat(s.maxLength === undefined ? rng.int(1, 64) : s.maxLength <= 65_536 ? s.maxLength : rng.int(1, 4096));
    }
    case 'Integer':
      if (key === 'v') return rng.chance(0.95) ? PROTOCOL_VERSION : PROTOCOL_VERSION + 1;
      if (key === 'timeoutMs') return rng.int(1000, 5000);
      return between(rng, s.minimum ?? 0, Math.min(s.maximum ?? 1000, 1_000_000), true);
    case 'Number':
      if (key === 't') return rng.int(0, 2 ** 31);
      return between(rng, s.minimum ?? -1000, Math.min(s.maximum ?? 100_000, 1e9), false);
    case 'Boolean':
      return key === 'waitForAgent' ? rng.chance(0.3) : rng.chance(0.5);
    case 'Literal':
      return s.const;
    case 'Union':
      return valid(rng, rng.pick(s.anyOf!), key);
    case 'Record': {
      const [pattern, value] = Object.entries(s.patternProperties ?? {})[0] ?? ['', s];
      const out: Record<string, unknown> = {};
      for (let i = rng.int(0, Math.min(3, s.maxProperties ?? 3)); i > 0; i--) {
        out[pattern.startsWith('^[A-Za-z_]') ? patternString(rng, pattern) : word(rng, 1, 12)] = valid(rng, value as TSchema);
      }
      return out;
    }
    case 'Unknown':
    case 'Any':
      return anyValue(rng);
    case 'Null':
      return null;
    default:
      return null;
  }
}

/** A deep copy of a generated value; `Raw` and `Entries` (never changed in place) are shared. */
export function clone(v: unknown): unknown {
  if (v instanceof Raw || v instanceof Entries) return v;
  if (Array.isArray(v)) return v.map(clone);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clone(x)]));
  return v;
}

// ── mutation ─────────────────────────────────────────────────────────────────────────────────────

type Slot = { parent: Record<string, unknown> | unknown[]; key: string | number };

/** Every place in `v` a value could be replaced (parent + key), shallow-first. */
function slots(v: unknown, out: Slot[] = [], depth = 0): Slot[] {
  if (depth > 12) return out;
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i });
      slots(x, out, depth + 1);
    });
  } else if (v !== null && typeof v === 'object' && !(v instanceof Raw) && !(v instanceof Entries)) {
    for (const [k, x] of Object.entries(v)) {
      out.push({ parent: v as Record<string, unknown>, key: k });
      slots(x, out, depth + 1);
    }
  }
  return out;
}

const TYPE_TAGS = [
  'auth', 'hello', 'grants', 'task.accept', 'task.progress', 'task.result', 'ping', 'welcome', 'task.dispatch', 'pong', 'error', 'task.cancel',
  'navigate', 'click', 'extract', 'screenshot', 'download', 'assert', 'waitForExpression', 'customStep', '', 'PING', 'ping ', 'toString', '__proto__',
];

/** What a mutation did, for the report. */
export type Mutation = 'type' | 'delete' | 'unknown-field' | 'proto' | 'deep' | 'huge-string' | 'huge-array' | 'number' | 'string' | 'duplicate-key' | 'tag' | 'empty';

/**
 * Mutates a copy of `value` 1–3 times at random places; returns the new value and what was done.
 * The top level itself may be replaced.
 */
export function mutate(rng: Rng, value: unknown): { value: unknown; did: Mutation[] } {
  const root = { v: clone(value) };
  const did: Mutation[] = [];
  for (let n = rng.int(1, 3); n > 0; n--) {
    const all = slots(root.v);
    const slot: Slot = all.length === 0 || rng.chance(0.1) ? { parent: root as unknown as Record<string, unknown>, key: 'v' } : rng.pick(all);
    const parent = slot.parent as Record<string | number, unknown>;
    const current = parent[slot.key];
    const op = rng.weighted<Mutation>([
      ['type', 5], ['delete', 3], ['unknown-field', 3], ['proto', 1], ['deep', 1.5], ['huge-string', 0.7], ['huge-array', 0.5],
      ['number', 3], ['string', 4], ['duplicate-key', 1], ['tag', 2], ['empty', 1],
    ]);
    did.push(op);
    switch (op) {
      case 'type':
        parent[slot.key] = anyValue(rng, 2);
        break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(slot.key as number, 1);
        else if (parent !== (root as unknown)) delete parent[slot.key];
        else root.v = undefined;
        break;
      case 'unknown-field':
        if (current !== null && typeof current === 'object' && !Array.isArray(current) && !(current instanceof Raw) && !(current instanceof Entries)) {
          (current as Record<string, unknown>)[rng.chance(0.5) ? word(rng) : str(rng)] = anyValue(rng, 1);
        } else {
          parent[slot.key] = { [word(rng)]: current };
        }
        break;
      case 'proto':
        parent[slot.key] = new Entries([
          ...(current !== null && typeof current === 'object' && !Array.isArray(current) && !(current instanceof Raw) && !(current instanceof Entries) ? Object.entries(current) : []),
          [rng.pick(['__proto__', 'constructor', 'prototype']), rng.chance(0.5) ? { polluted: true, isAdmin: true } : { prototype: { polluted: true } }],
        ]);
        break;
      case 'deep':
        parent[slot.key] = deep(rng);
        break;
      case 'huge-string':
        parent[slot.key] = 'A'.repeat(rng.pick([4097, 8193, 65_537, 262_144, 1_048_577]));
        break;
      case 'huge-array':
        parent[slot.key] = new Raw(`[${Array.from({ length: rng.pick([257, 501, 1001, 10_000, 100_000]) }, () => (rng.chance(0.5) ? '1' : '"a"')).join(',')}]`);
        break;
      case 'number':
        parent[slot.key] = num(rng);
        break;
      case 'string':
        parent[slot.key] = str(rng);
        break;
      case 'duplicate-key':
        if (current !== null && typeof current === 'object' && !Array.isArray(current) && !(current instanceof Raw) && !(current instanceof Entries)) {
          const entries = Object.entries(current);
          const [k] = entries.length > 0 ? rng.pick(entries) : ['type'];
          parent[slot.key] = new Entries([...entries, [k, anyValue(rng, 2)]]);
        } else {
          parent[slot.key] = new Entries([['type', 'ping'], ['type', 'hello'], ['t', 1]]);
        }
        break;
      case 'tag':
        if (current !== null && typeof current === 'object' && !Array.isArray(current) && !(current instanceof Raw) && !(current instanceof Entries)) {
          (current as Record<string, unknown>).type = rng.pick(TYPE_TAGS);
        } else {
          parent[slot.key] = { type: rng.pick(TYPE_TAGS) };
        }
        break;
      case 'empty':
        parent[slot.key] = rng.pick<unknown>([{}, [], '', null, 0]);
        break;
    }
  }
  return { value: root.v, did };
}

// ── bytes ────────────────────────────────────────────────────────────────────────────────────────

const BAD_UTF8 = [[0xff], [0xfe], [0xc0, 0x80], [0xc3], [0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]];

/** What a text mutation did, for the report. */
export type TextMutation = 'truncate' | 'bad-utf8' | 'trailing' | 'bom' | 'flip' | 'comment' | 'nul' | 'repeat';

/** Mutates JSON text at the byte level. */
export function mutateText(rng: Rng, text: string): { bytes: Buffer; did: TextMutation } {
  let b = Buffer.from(text);
  const op = rng.weighted<TextMutation>([['truncate', 4], ['bad-utf8', 4], ['trailing', 2], ['bom', 1], ['flip', 3], ['comment', 1], ['nul', 1], ['repeat', 1]]);
  const at = () => rng.int(0, b.length);
  switch (op) {
    case 'truncate':
      b = b.subarray(0, rng.int(0, Math.max(0, b.length - 1)));
      break;
    case 'bad-utf8': {
      const i = at();
      // Inside a string when possible: after an opening quote.
      const q = b.indexOf(0x22, i);
      const pos = q >= 0 ? q + 1 : i;
      b = Buffer.concat([b.subarray(0, pos), Buffer.from(rng.pick(BAD_UTF8)), b.subarray(pos)]);
      break;
    }
    case 'trailing':
      b = Buffer.concat([b, Buffer.from(rng.pick([',', ']', '}', ' x', '\u0000', '{}', '\n{"type":"ping","t":1}', 'garbage']))]);
      break;
    case 'bom':
      b = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), b]);
      break;
    case 'flip':
      for (let n = rng.int(1, 4); n > 0 && b.length > 0; n--) b[rng.int(0, b.length - 1)] = rng.int(0, 255);
      break;
    case 'comment': {
      const i = at();
      b = Buffer.concat([b.subarray(0, i), Buffer.from(rng.pick(['/* x */', '// x\n', '#x\n'])), b.subarray(i)]);
      break;
    }
    case 'nul': {
      const i = at();
      b = Buffer.concat([b.subarray(0, i), Buffer.from([0]), b.subarray(i)]);
      break;
    }
    case 'repeat':
      b = Buffer.concat([b, b]);
      break;
  }
  return { bytes: b, did: op };
}

/** Tags the deepest nesting in encoded text (mutations may have put it there). */
export function tagDeep(text: string, tags: string[]): string {
  let max = 0;
  let cur = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 91 || c === 123) max = Math.max(max, ++cur);
    else if (c === 93 || c === 125) cur--;
  }
  if (max >= 64) tags.push(`deep:${max}`);
  return text;
}

/** `jwt` with one character of its signature changed: well-formed, and refused by any verifier. */
export function tamper(jwt: string): string {
  const [h, p, s] = jwt.split('.');
  if (!s) return `${jwt}x`;
  return `${h}.${p}.${s.slice(0, 5)}${s[5] === 'A' ? 'B' : 'A'}${s.slice(6)}`;
}
