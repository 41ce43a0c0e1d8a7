/**
 * @module lib/errors — turns what the server (or the network) says into a `PalisadeError`:
 * RFC 9457 problem bodies keep the server's code; OAuth error bodies and bare statuses are mapped.
 */
import { PalisadeError, isErrorCode, type ErrorCode, type Issue, type TaskView } from '@palisade/protocol';

/** What is kept of a non-2xx response for the logs (`PalisadeError.internal`). */
export interface ResponseDetail {
  status: number;
  body: unknown;
}

/** The code a bare HTTP status stands for when the body says nothing better. */
export function codeForStatus(status: number): ErrorCode {
  if (status === 400 || status === 422) return 'PAL_ERR_VALIDATION';
  if (status === 401) return 'PAL_ERR_UNAUTHENTICATED';
  if (status === 403) return 'PAL_ERR_FORBIDDEN';
  if (status === 404) return 'PAL_ERR_NOT_FOUND';
  if (status === 409) return 'PAL_ERR_CONFLICT';
  if (status === 413) return 'PAL_ERR_FRAME_TOO_LARGE';
  if (status === 429) return 'PAL_ERR_RATE_LIMITED';
  if (status === 502 || status === 503 || status === 504) return 'PAL_ERR_UNAVAILABLE';
  return 'PAL_ERR_INTERNAL';
}

/** OAuth 2 token-endpoint errors (RFC 6749 §5.2, RFC 8628 §3.5) and their Palisade codes. */
const OAUTH_CODES: Record<string, ErrorCode> = {
  invalid_client: 'PAL_ERR_UNAUTHENTICATED',
  unauthorized_client: 'PAL_ERR_FORBIDDEN',
  invalid_grant: 'PAL_ERR_TOKEN_INVALID',
  invalid_scope: 'PAL_ERR_FORBIDDEN',
  access_denied: 'PAL_ERR_FORBIDDEN',
  expired_token: 'PAL_ERR_TIMEOUT',
  invalid_request: 'PAL_ERR_VALIDATION',
  unsupported_grant_type: 'PAL_ERR_VALIDATION',
  invalid_token: 'PAL_ERR_TOKEN_INVALID',
  insufficient_scope: 'PAL_ERR_FORBIDDEN',
  server_error: 'PAL_ERR_INTERNAL',
  temporarily_unavailable: 'PAL_ERR_UNAVAILABLE',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function issuesOf(value: unknown): Issue[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const out = value.filter(
    (i): i is Issue => isRecord(i) && typeof i.path === 'string' && typeof i.message === 'string',
  );
  return out.length > 0 ? out : undefined;
}

/**
 * Builds the error for one non-2xx response body (already parsed, or the raw text).
 * A problem body with a known `code` keeps it; an OAuth `error` is mapped; anything else falls
 * back to the status.
 */
export function errorFromBody(status: number, body: unknown): PalisadeError {
  const internal: ResponseDetail = { status, body };
  if (isRecord(body)) {
    const detail = typeof body.detail === 'string' ? body.detail : typeof body.title === 'string' ? body.title : undefined;
    const errors = issuesOf(body.errors);
    if (isErrorCode(body.code)) {
      return new PalisadeError(body.code, detail, errors ? { errors, internal } : { internal });
    }
    if (typeof body.type === 'string' && body.type.startsWith('urn:palisade:error:')) {
      const code = body.type.slice('urn:palisade:error:'.length);
      if (isErrorCode(code)) return new PalisadeError(code, detail, errors ? { errors, internal } : { internal });
    }
    if (typeof body.error === 'string') {
      const description = typeof body.error_description === 'string' ? body.error_description : body.error;
      let code = OAUTH_CODES[body.error] ?? codeForStatus(status);
      // 5xx with an OAuth body is still the server being unwell.
      if (status >= 500 && code === 'PAL_ERR_INTERNAL' && status !== 500) code = 'PAL_ERR_UNAVAILABLE';
      return new PalisadeError(code, `${body.error}: ${description}`, { internal });
    }
    if (detail !== undefined) return new PalisadeError(codeForStatus(status), detail, { internal });
  }
  return new PalisadeError(codeForStatus(status), `the server answered HTTP ${status}`, { internal });
}

/** Reads a non-2xx response into a `PalisadeError` (problem JSON, OAuth JSON or anything else). */
export async function errorFromResponse(response: Response): Promise<PalisadeError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // The body is lost; the status still says something.
  }
  let body: unknown = text;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text.slice(0, 1024);
    }
  }
  return errorFromBody(response.status, body);
}

/** A network failure (DNS, refused connection, TLS, reset): `PAL_ERR_UNAVAILABLE`, `cause` set. */
export function unavailable(cause: unknown, what: string): PalisadeError {
  const reason = cause instanceof Error ? describeCause(cause) : String(cause);
  const err = new PalisadeError('PAL_ERR_UNAVAILABLE', `${what}: ${reason}`, { internal: cause });
  err.cause = cause;
  return err;
}

/** The innermost useful message of an error chain (`fetch failed` hides the real reason in `cause`). */
function describeCause(err: Error): string {
  let current: unknown = err;
  let message = err.message;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    message = typeof code === 'string' && !current.message.includes(code) ? `${current.message} (${code})` : current.message;
    current = current.cause;
  }
  return message;
}

/**
 * Rejection of `Palisade.run` when the task ends in any state but `succeeded`: `code` is the
 * task's own error code (for example `PAL_ERR_STEP_FAILED`), `task` the final `TaskView`.
 */
export class TaskError extends PalisadeError {
  /** The task as it ended. */
  readonly task: TaskView;

  constructor(task: TaskView) {
    const code: ErrorCode = isErrorCode(task.error?.code) ? task.error.code : codeForState(task.state);
    const message = task.error?.message ?? `task ${task.id} ended ${task.state}`;
    super(code, message, { internal: task });
    this.name = 'TaskError';
    this.task = task;
  }
}

function codeForState(state: TaskView['state']): ErrorCode {
  if (state === 'cancelled') return 'PAL_ERR_TASK_CANCELLED';
  if (state === 'expired') return 'PAL_ERR_TASK_EXPIRED';
  if (state === 'failed') return 'PAL_ERR_STEP_FAILED';
  return 'PAL_ERR_INTERNAL';
}
