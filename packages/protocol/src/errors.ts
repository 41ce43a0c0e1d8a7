/**
 * @module errors — the one error model of Palisade: stable codes, their HTTP status and
 * WebSocket close code, and the `PalisadeError` class every package throws.
 *
 * Codes are never reused or renamed; `docs/ERRORS.md` lists them all and a test keeps the two in step.
 */

/** Registry of every error code: HTTP status, title shown to callers, WebSocket close code. */
export const ERROR_CODES = {
  PAL_ERR_VALIDATION: { status: 400, title: 'The input does not match its schema', close: 1008 },
  PAL_ERR_UNKNOWN_RECIPE: { status: 404, title: 'No recipe has that name', close: 1008 },
  PAL_ERR_STEP_REFUSED: { status: 400, title: 'This step type runs code and is refused', close: 1008 },
  PAL_ERR_URL_REFUSED: { status: 400, title: 'This URL scheme or address is refused', close: 1008 },
  PAL_ERR_SITE_NOT_GRANTED: { status: 403, title: 'The site is not granted to any eligible agent', close: 1008 },
  PAL_ERR_UNAUTHENTICATED: { status: 401, title: 'A valid access token is required', close: 4401 },
  PAL_ERR_TOKEN_INVALID: { status: 401, title: 'The access token is invalid, expired or for another audience', close: 4401 },
  PAL_ERR_SESSION_REVOKED: { status: 401, title: 'The session was revoked; sign in again', close: 4410 },
  PAL_ERR_FORBIDDEN: { status: 403, title: 'The token does not allow this action', close: 4403 },
  PAL_ERR_ORIGIN_REFUSED: { status: 403, title: 'The request Origin is not allowed', close: 4403 },
  PAL_ERR_FRAME_TOO_LARGE: { status: 413, title: 'The message is larger than allowed', close: 1009 },
  PAL_ERR_RATE_LIMITED: { status: 429, title: 'Too many requests; slow down', close: 1008 },
  PAL_ERR_SENDER_REFUSED: { status: 403, title: 'The message sender is not allowed', close: 1008 },
  PAL_ERR_PROTOCOL_VERSION: { status: 400, title: 'Unsupported protocol version', close: 1002 },
  PAL_ERR_NO_AGENT: { status: 409, title: 'No connected agent can run this task', close: 1011 },
  PAL_ERR_NOT_FOUND: { status: 404, title: 'Not found', close: 1008 },
  PAL_ERR_IDEMPOTENCY_CONFLICT: { status: 409, title: 'The idempotency key was used for a different task', close: 1008 },
  PAL_ERR_TASK_FINISHED: { status: 409, title: 'The task has already finished', close: 1008 },
  PAL_ERR_AGENT_LOST: { status: 502, title: 'The agent running the task disconnected', close: 1011 },
  PAL_ERR_TASK_EXPIRED: { status: 504, title: 'The task did not finish before its deadline', close: 1011 },
  PAL_ERR_TASK_CANCELLED: { status: 409, title: 'The task was cancelled', close: 1000 },
  PAL_ERR_STEP_FAILED: { status: 422, title: 'A step could not be completed', close: 1011 },
  PAL_ERR_ASSERTION_FAILED: { status: 422, title: 'An assert step did not hold', close: 1011 },
  PAL_ERR_TIMEOUT: { status: 504, title: 'The operation timed out', close: 1011 },
  PAL_ERR_SETUP_REQUIRED: { status: 409, title: 'The server has no admin account yet', close: 1011 },
  PAL_ERR_CONFLICT: { status: 409, title: 'The resource already exists', close: 1008 },
  PAL_ERR_UNAVAILABLE: { status: 503, title: 'The service is unavailable; try again', close: 1013 },
  PAL_ERR_INTERNAL: { status: 500, title: 'Internal error', close: 1011 },
  PAL_ERR_URI_TOO_LONG: { status: 414, title: 'The request URL is longer than allowed', close: 1008 },
  PAL_ERR_HEADERS_TOO_LARGE: { status: 431, title: 'The request headers are larger than allowed', close: 1008 },
  PAL_ERR_TOO_MANY_CONNECTIONS: { status: 429, title: 'Too many open connections for this user or address', close: 1013 },
  PAL_ERR_SLOW_CONSUMER: { status: 503, title: 'The peer reads too slowly; its unsent data passed the limit', close: 1008 },
  PAL_ERR_OVERLOADED: { status: 503, title: 'The server is short of memory and takes no new work; try again later', close: 1013 },
} as const satisfies Record<string, { status: number; title: string; close: number }>;

/** Closed union of every error code. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** One problem in an input: where (JSON pointer) and what. */
export interface Issue {
  path: string;
  message: string;
}

/**
 * RFC 9457 problem details as Palisade sends them over HTTP, and inside `error` frames.
 * `type` is `urn:palisade:error:<code>`.
 */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail?: string;
  errors?: Issue[];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/**
 * The base error of Palisade. `message` (the public detail) is safe to show;
 * `internal` is for logs only and never leaves the process.
 *
 * @example throw new PalisadeError('PAL_ERR_UNKNOWN_RECIPE', `no recipe named "${name}"`)
 */
export class PalisadeError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly errors: Issue[] | undefined;
  readonly internal: unknown;

  constructor(code: ErrorCode, message?: string, options: { errors?: Issue[]; internal?: unknown } = {}) {
    super(message ?? ERROR_CODES[code].title);
    this.name = 'PalisadeError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.errors = options.errors;
    this.internal = options.internal;
  }

  /** The RFC 9457 body for this error. Never contains `internal`. */
  toProblem(): Problem {
    const problem: Problem = {
      type: `urn:palisade:error:${this.code}`,
      title: ERROR_CODES[this.code].title,
      status: this.status,
      code: this.code,
      detail: this.message,
    };
    if (this.errors && this.errors.length > 0) problem.errors = this.errors;
    return problem;
  }

  /** Rebuilds an error from a problem body received over the wire. */
  static fromProblem(problem: Partial<Problem> & { detail?: string }): PalisadeError {
    const code = isErrorCode(problem.code) ? problem.code : 'PAL_ERR_INTERNAL';
    return new PalisadeError(code, problem.detail ?? problem.title, problem.errors ? { errors: problem.errors } : {});
  }
}
