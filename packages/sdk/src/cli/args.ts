/** @module cli/args — parsing of the CLI's own value syntaxes: `--input key=value`, `--timeout 2m`, `--scopes a,b`. */
import { PalisadeError } from '@palisade/protocol';

/** A usage error: exit code 2, shown with the command's usage line. */
export class UsageError extends PalisadeError {
  constructor(message: string) {
    super('PAL_ERR_VALIDATION', message);
    this.name = 'UsageError';
  }
}

const INPUT_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** `['query=shoes', 'n=3']` → `{ query: 'shoes', n: '3' }`. Values may contain `=`; keys are identifiers, not repeated. */
export function parseInputs(pairs: readonly string[]): Record<string, string> {
  // A Map, then `Object.fromEntries`: an input named `__proto__` stays a plain own key.
  const input = new Map<string, string>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--input "${pair}": expected key=value`);
    const key = pair.slice(0, eq);
    if (!INPUT_KEY.test(key)) throw new UsageError(`--input "${pair}": "${key}" is not a valid input name (letters, digits, _)`);
    if (input.has(key)) throw new UsageError(`--input ${key} is given twice`);
    input.set(key, pair.slice(eq + 1));
  }
  return Object.fromEntries(input);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `120s`, `2m`, `1500ms`, `1h`, or a bare number of seconds → milliseconds (1 s – 1 h). */
export function parseDuration(text: string, flag = '--timeout'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag} "${text}": expected a duration such as 90s, 2m or 1500ms`);
  const ms = Math.round(Number(m[1]) * (UNIT_MS[m[2] ?? 's'] ?? 1000));
  if (ms < 1000 || ms > 3_600_000) throw new UsageError(`${flag} "${text}": must be between 1s and 1h`);
  return ms;
}

/** `['tasks,admin', 'x']` → `['tasks', 'admin', 'x']`, without empties or repeats. */
export function parseList(values: readonly string[]): string[] {
  return [...new Set(values.flatMap((v) => v.split(/[\s,]+/)).filter((v) => v.length > 0))];
}
