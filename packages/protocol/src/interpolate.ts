/**
 * @module interpolate — binds task inputs into recipe steps by plain string substitution of
 * `${input.NAME}`. Nothing is evaluated: an unknown name is an error, a value is inserted verbatim.
 */
import { PalisadeError } from './errors.ts';
import { parseOrigin } from './url.ts';
import type { Recipe, RecipeInput } from './recipe.ts';
import type { Step } from './steps.ts';

const PLACEHOLDER = /\$\{input\.([A-Za-z_][A-Za-z0-9_]{0,63})\}/g;

/** Most characters the strings of a task's steps may add up to once inputs are bound. Default 1 MiB. */
export const MAX_BOUND_CHARS = 1024 * 1024;

/** Counts the characters produced while binding; throws past the limit, before the string is built. */
class Budget {
  left: number;
  constructor(limit: number) {
    this.left = limit;
  }
  spend(n: number): void {
    this.left -= n;
    if (this.left < 0) throw new PalisadeError('PAL_ERR_VALIDATION', 'the steps grow too large once the inputs are put in; use fewer placeholders or shorter inputs');
  }
}

/**
 * Replaces every `${input.NAME}` in `text`; throws `PAL_ERR_VALIDATION` for a name not in `values`,
 * or when the result would pass `maxChars`.
 */
export function interpolate(text: string, values: Readonly<Record<string, string>>, maxChars = MAX_BOUND_CHARS): string {
  return bind(text, values, new Budget(maxChars));
}

function bind(text: string, values: Readonly<Record<string, string>>, budget: Budget): string {
  budget.spend(text.length);
  return text.replace(PLACEHOLDER, (m, name: string) => {
    const v = values[name];
    if (v === undefined) throw new PalisadeError('PAL_ERR_VALIDATION', `unknown input "${name}"`, { errors: [{ path: `/input/${name}`, message: 'not provided' }] });
    budget.spend(v.length - m.length);
    return v;
  });
}

/** Interpolates every string inside a JSON value (steps are plain data), within one character budget. */
export function interpolateDeep<T>(value: T, values: Readonly<Record<string, string>>, maxChars = MAX_BOUND_CHARS): T {
  return deep(value, values, new Budget(maxChars));
}

function deep<T>(value: T, values: Readonly<Record<string, string>>, budget: Budget): T {
  if (typeof value === 'string') return bind(value, values, budget) as T;
  if (Array.isArray(value)) return value.map((v) => deep(v, values, budget)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = deep(v, values, budget);
    return out as T;
  }
  return value;
}

/**
 * Checks `input` against the recipe's declared inputs (unknown names refused, required present,
 * `maxLength`/`pattern` held, defaults applied) and returns the complete set of values.
 */
export function resolveInputs(recipe: Pick<Recipe, 'inputs'>, input: Readonly<Record<string, string>> = {}): Record<string, string> {
  const issues: { path: string; message: string }[] = [];
  for (const name of Object.keys(input)) {
    if (!Object.hasOwn(recipe.inputs, name)) issues.push({ path: `/input/${name}`, message: 'unknown input for this recipe' });
  }
  const values: Record<string, string> = {};
  for (const [name, spec] of Object.entries(recipe.inputs) as [string, RecipeInput][]) {
    const v = input[name] ?? spec.default;
    if (v === undefined) {
      if (spec.required !== false) issues.push({ path: `/input/${name}`, message: 'required' });
      continue;
    }
    if (spec.maxLength !== undefined && v.length > spec.maxLength) issues.push({ path: `/input/${name}`, message: `longer than ${spec.maxLength}` });
    if (spec.pattern !== undefined && !new RegExp(spec.pattern, 'u').test(v)) issues.push({ path: `/input/${name}`, message: `does not match ${spec.pattern}` });
    if (spec.format === 'origin') {
      try {
        values[name] = parseOrigin(v);
      } catch (e) {
        if (!(e instanceof PalisadeError)) throw e;
        if (e.code === 'PAL_ERR_URL_REFUSED') throw new PalisadeError('PAL_ERR_URL_REFUSED', `input "${name}": ${e.message}`, { errors: [{ path: `/input/${name}`, message: e.message }] });
        issues.push({ path: `/input/${name}`, message: 'must be an origin (scheme://host[:port])' });
      }
      continue;
    }
    values[name] = v;
  }
  if (issues.length > 0) throw new PalisadeError('PAL_ERR_VALIDATION', `invalid input: ${issues[0]!.path} ${issues[0]!.message}`, { errors: issues });
  return values;
}

/**
 * Steps with `${input.*}` bound, all within one `maxChars` budget. The result must still be checked
 * against the step schema: an input can make a string longer than its field allows.
 */
export function bindSteps(steps: readonly Step[], values: Readonly<Record<string, string>>, maxChars = MAX_BOUND_CHARS): Step[] {
  return interpolateDeep([...steps], values, maxChars);
}
