/**
 * @module cli/exit — the CLI's exit codes and which error leads to which. Documented in
 * `palisade --help` and docs/CLI.md; a test keeps the three in step.
 */
import { PalisadeError, type ErrorCode } from '@palisade/protocol';
import { TaskError } from '../lib/errors.ts';

/** Exit codes of `palisade`. */
export const EXIT = {
  /** The command (or the task) succeeded. */
  OK: 0,
  /** The task failed, was cancelled or expired. */
  TASK_FAILED: 1,
  /** Usage error: unknown command or flag, bad `--input`, invalid request. */
  USAGE: 2,
  /** Not signed in, token refused, or not allowed. */
  AUTH: 3,
  /** No such recipe, task, client, or session. */
  NOT_FOUND: 4,
  /** Server unreachable, unavailable, overloaded, or timing out. */
  UNAVAILABLE: 5,
  /** No eligible agent is connected, or the site is not granted to any. */
  NO_AGENT: 6,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit codes as `--help` and docs/CLI.md describe them. */
export const EXIT_DOC: ReadonlyArray<readonly [ExitCode, string]> = [
  [EXIT.OK, 'success'],
  [EXIT.TASK_FAILED, 'the task failed, was cancelled or expired'],
  [EXIT.USAGE, 'usage error: unknown command or flag, bad --input, request refused as invalid'],
  [EXIT.AUTH, 'authentication or authorization error (not signed in, token refused, not allowed)'],
  [EXIT.NOT_FOUND, 'not found (recipe, task, client, session)'],
  [EXIT.UNAVAILABLE, 'server unreachable or unavailable (also rate limited, timed out)'],
  [EXIT.NO_AGENT, 'no eligible agent connected, or the site is not granted'],
];

/** The exit code of every error code, when a request (not a task) fails with it. */
export const EXIT_FOR_CODE: Record<ErrorCode, ExitCode> = {
  PAL_ERR_VALIDATION: EXIT.USAGE,
  PAL_ERR_UNKNOWN_RECIPE: EXIT.NOT_FOUND,
  PAL_ERR_STEP_REFUSED: EXIT.USAGE,
  PAL_ERR_URL_REFUSED: EXIT.USAGE,
  PAL_ERR_SITE_NOT_GRANTED: EXIT.NO_AGENT,
  PAL_ERR_UNAUTHENTICATED: EXIT.AUTH,
  PAL_ERR_TOKEN_INVALID: EXIT.AUTH,
  PAL_ERR_SESSION_REVOKED: EXIT.AUTH,
  PAL_ERR_FORBIDDEN: EXIT.AUTH,
  PAL_ERR_ORIGIN_REFUSED: EXIT.AUTH,
  PAL_ERR_FRAME_TOO_LARGE: EXIT.USAGE,
  PAL_ERR_RATE_LIMITED: EXIT.UNAVAILABLE,
  PAL_ERR_SENDER_REFUSED: EXIT.AUTH,
  PAL_ERR_PROTOCOL_VERSION: EXIT.USAGE,
  PAL_ERR_NO_AGENT: EXIT.NO_AGENT,
  PAL_ERR_NOT_FOUND: EXIT.NOT_FOUND,
  PAL_ERR_IDEMPOTENCY_CONFLICT: EXIT.USAGE,
  PAL_ERR_TASK_FINISHED: EXIT.TASK_FAILED,
  PAL_ERR_AGENT_LOST: EXIT.TASK_FAILED,
  PAL_ERR_TASK_EXPIRED: EXIT.TASK_FAILED,
  PAL_ERR_TASK_CANCELLED: EXIT.TASK_FAILED,
  PAL_ERR_STEP_FAILED: EXIT.TASK_FAILED,
  PAL_ERR_ASSERTION_FAILED: EXIT.TASK_FAILED,
  PAL_ERR_TIMEOUT: EXIT.UNAVAILABLE,
  PAL_ERR_SETUP_REQUIRED: EXIT.AUTH,
  PAL_ERR_CONFLICT: EXIT.USAGE,
  PAL_ERR_UNAVAILABLE: EXIT.UNAVAILABLE,
  PAL_ERR_INTERNAL: EXIT.UNAVAILABLE,
  PAL_ERR_URI_TOO_LONG: EXIT.USAGE,
  PAL_ERR_HEADERS_TOO_LARGE: EXIT.USAGE,
  PAL_ERR_TOO_MANY_CONNECTIONS: EXIT.UNAVAILABLE,
  PAL_ERR_SLOW_CONSUMER: EXIT.UNAVAILABLE,
  PAL_ERR_OVERLOADED: EXIT.UNAVAILABLE,
};

/**
 * The exit code for an error. A task that ended badly exits 1, or 6 when no agent could run it;
 * a failed request exits by its code; anything unexpected exits 5.
 */
export function exitCodeFor(err: unknown): ExitCode {
  if (err instanceof TaskError) {
    return err.code === 'PAL_ERR_NO_AGENT' || err.code === 'PAL_ERR_SITE_NOT_GRANTED' ? EXIT.NO_AGENT : EXIT.TASK_FAILED;
  }
  if (err instanceof PalisadeError) return EXIT_FOR_CODE[err.code];
  return EXIT.UNAVAILABLE;
}

/** One line of advice per error code, shown under a human error message. */
export function hintFor(err: PalisadeError): string | undefined {
  const cause = err.cause instanceof Error ? `${err.message} ${String(err.cause.cause ?? '')}` : err.message;
  switch (err.code) {
    case 'PAL_ERR_UNAUTHENTICATED':
    case 'PAL_ERR_TOKEN_INVALID':
      return 'sign in with `palisade login`, or pass --client-id/--client-secret (PALISADE_CLIENT_ID/PALISADE_CLIENT_SECRET)';
    case 'PAL_ERR_SESSION_REVOKED':
      return 'this sign-in was revoked; sign in again with `palisade login`';
    case 'PAL_ERR_FORBIDDEN':
      if (/\bsign-in was denied\b/.test(err.message)) return 'run `palisade login` again and approve the sign-in';
      return "the token does not allow this; admin commands need `palisade login` as an admin, sessions commands a person's `palisade login` (not an API client)";
    case 'PAL_ERR_SETUP_REQUIRED':
      return 'create the admin account on the server first (see the server README)';
    case 'PAL_ERR_NO_AGENT':
      return 'open Chrome with the Palisade extension signed in, then check `palisade agents`';
    case 'PAL_ERR_SITE_NOT_GRANTED':
      return "grant the site in the Palisade extension's popup, then retry";
    case 'PAL_ERR_UNKNOWN_RECIPE':
      return 'list the recipes with `palisade recipes`';
    case 'PAL_ERR_NOT_FOUND':
      return 'check the id (tasks, clients and sessions are only visible to their owner; `palisade sessions` lists yours)';
    case 'PAL_ERR_UNAVAILABLE':
    case 'PAL_ERR_TIMEOUT':
      if (err.code === 'PAL_ERR_TIMEOUT' && /\bsign-in\b/.test(err.message)) {
        return 'run `palisade login` again and finish in the browser in time (with --browser, --timeout gives more time)';
      }
      return /certificate|self.signed|CERT|UNABLE_TO_VERIFY/i.test(cause)
        ? "the server's certificate is not trusted: pass --ca FILE (or PALISADE_CA_FILE) with the server's CA"
        : 'check --server (or PALISADE_SERVER) and that the server is running';
    case 'PAL_ERR_RATE_LIMITED':
      return 'wait a moment and try again';
    case 'PAL_ERR_OVERLOADED':
      return 'the server is short of memory and takes no new work for now; try again in a few seconds';
    case 'PAL_ERR_STEP_FAILED':
    case 'PAL_ERR_ASSERTION_FAILED':
      return 'the page may have changed; check the selectors of the failing step';
    case 'PAL_ERR_TASK_EXPIRED':
      return 'raise --timeout, or check that the agent is awake';
    case 'PAL_ERR_IDEMPOTENCY_CONFLICT':
      return 'use a new --idempotency-key for a different task';
    case 'PAL_ERR_VALIDATION':
    case 'PAL_ERR_STEP_REFUSED':
    case 'PAL_ERR_URL_REFUSED':
      return 'see `palisade <command> --help`';
    default:
      return undefined;
  }
}
