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
    issues: (value: unknown) => collectIssues(Value.Errors(schema, value)),
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
