/**
 * @module validate — checking values against the schemas without generating code at run time
 * (safe inside the extension). The server may plug in a compiled checker with the same shape.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { PalisadeError, type Issue } from './errors.ts';

/** A checker for one schema. */
export interface Validator<S extends TSchema> {
  readonly schema: S;
  check(value: unknown): value is Static<S>;
  issues(value: unknown): Issue[];
}

/** Longest piece of the caller's input an error message quotes (a key in a path, an unknown type). */
export const MAX_ECHO = 64;

/**
 * `text` cut to `max` characters, with a mark that it was cut: error messages quote input, never all
 * of it, so an error stays small whatever was sent.
 */
export function clip(text: string, max = MAX_ECHO): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length} chars)`;
}

/** A JSON pointer with each over-long key clipped. */
function clipPath(path: string): string {
  return path.length <= MAX_ECHO ? path : path.split('/').map((k) => clip(k)).join('/');
}

/** The value of an unknown `type`, as an error message may show it (never serialised whole). */
function describeTag(tag: unknown): string {
  if (typeof tag === 'string') return JSON.stringify(clip(tag));
  if (tag === null || typeof tag !== 'object') return String(tag);
  return Array.isArray(tag) ? '(an array)' : '(an object)';
}

/** At most this many issues are reported for one value. */
export const MAX_ISSUES = 20;

/**
 * A validator for `schema`. With `check` (a function compiled ahead of time, see `checks.ts`) the
 * fast path is that function; otherwise TypeBox interprets the schema. Either way no code is
 * generated at run time; error details always come from the interpreter (the slow path only).
 */
export function validator<S extends TSchema>(schema: S, check?: (value: unknown) => boolean): Validator<S> {
  return {
    schema,
    check: check ? (value: unknown): value is Static<S> => check(value) : (value: unknown): value is Static<S> => Value.Check(schema, value),
    issues: (value: unknown) => refineUnions(schema, value, collectIssues(Value.Errors(schema, value))),
  };
}

/** Turns TypeBox errors into at most `MAX_ISSUES` issues, one per path. */
export function collectIssues(errors: Iterable<{ path: string; message: string }>): Issue[] {
  const out: Issue[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (seen.has(e.path)) continue;
    seen.add(e.path);
    out.push({ path: e.path || '/', message: e.message });
    if (out.length >= MAX_ISSUES) break;
  }
  return out;
}

type Schema = TSchema & { anyOf?: TSchema[]; properties?: Record<string, TSchema>; items?: TSchema; patternProperties?: Record<string, TSchema>; const?: unknown };

/** The schema and value at a JSON pointer, following objects, arrays, records and tagged unions. */
function at(schema: Schema, value: unknown, pointer: string): { schema: Schema; value: unknown } | undefined {
  let s: Schema | undefined = schema;
  let v = value;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (s?.anyOf) s = variantFor(s, v);
    if (!s || v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[key];
    s = s.properties?.[key] ?? s.items ?? (s.patternProperties ? Object.values(s.patternProperties)[0] : undefined);
  }
  return s ? { schema: s, value: v } : undefined;
}

/** In a union of objects tagged by `type`, the member `value.type` names. */
function variantFor(union: Schema, value: unknown): Schema | undefined {
  const tag = value !== null && typeof value === 'object' ? (value as { type?: unknown }).type : undefined;
  return union.anyOf?.find((m) => (m as Schema).properties?.type?.const === tag) as Schema | undefined;
}

/**
 * "Expected union value" says nothing useful. For a union of objects tagged by `type` (steps,
 * frames) this reports the problems against the member the value names, or that its type is unknown.
 */
function refineUnions(schema: TSchema, value: unknown, issues: Issue[]): Issue[] {
  const out: Issue[] = [];
  for (const issue of issues) {
    const found = issue.message === 'Expected union value' ? at(schema as Schema, value, issue.path === '/' ? '' : issue.path) : undefined;
    const tags = found?.schema.anyOf?.map((m) => (m as Schema).properties?.type?.const).filter((t): t is string => typeof t === 'string');
    if (!found || !tags || tags.length !== found.schema.anyOf!.length) {
      out.push(issue);
      continue;
    }
    const variant = variantFor(found.schema, found.value);
    const base = issue.path === '/' ? '' : issue.path;
    if (!variant) {
      const tag = (found.value as { type?: unknown } | null)?.type;
      out.push({ path: `${base}/type`, message: `unknown type ${describeTag(tag)}; expected one of ${tags.join(', ')}` });
      continue;
    }
    for (const e of collectIssues(Value.Errors(variant, found.value))) out.push({ path: `${base}${e.path === '/' ? '' : e.path}`, message: e.message });
  }
  return out.slice(0, MAX_ISSUES).map((i) => (i.path.length <= MAX_ECHO ? i : { ...i, path: clipPath(i.path) }));
}

/**
 * Returns `value` typed if it matches, or throws `PAL_ERR_VALIDATION` naming each problem.
 * @example const task = parse(taskSubmission, body, 'task')
 */
export function parse<S extends TSchema>(v: Validator<S>, value: unknown, what = 'input'): Static<S> {
  if (v.check(value)) return value;
  const issues = v.issues(value);
  const first = issues[0];
  const detail = first ? `invalid ${what}: ${first.path} ${first.message}` : `invalid ${what}`;
  throw new PalisadeError('PAL_ERR_VALIDATION', detail, { errors: issues });
}
