/**
 * @module edge/problem — turns every error into RFC 9457 problem details with a stable code.
 * Unknown errors become `PAL_ERR_INTERNAL` with no detail; the original goes to the log only.
 */
import { PalisadeError } from '@palisade/protocol';

/** Maps any thrown value to a `PalisadeError`, including Fastify's own errors (body too large, bad JSON, …). */
export function toPalisadeError(err: unknown): PalisadeError {
  if (err instanceof PalisadeError) return err;
  const e = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
  if (e && typeof e === 'object') {
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new PalisadeError('PAL_ERR_FRAME_TOO_LARGE', 'request body is larger than allowed');
    if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new PalisadeError('PAL_ERR_VALIDATION', 'unsupported content type; send application/json');
    if (e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (e.statusCode === 400 && e instanceof SyntaxError)) {
      return new PalisadeError('PAL_ERR_VALIDATION', 'request body is not valid JSON');
    }
    if (e.code === 'FST_ERR_BAD_URL') return new PalisadeError('PAL_ERR_VALIDATION', 'the request path is not valid percent-encoding');
    if (e.code === 'FST_ERR_MAX_PARAM_LENGTH' || e.statusCode === 414) return new PalisadeError('PAL_ERR_URI_TOO_LONG', 'a path segment is longer than allowed');
    if (e.statusCode === 404) return new PalisadeError('PAL_ERR_NOT_FOUND', 'no such route');
    if (e.statusCode === 400) return new PalisadeError('PAL_ERR_VALIDATION', 'malformed request', { internal: err });
    if (e.statusCode === 413) return new PalisadeError('PAL_ERR_FRAME_TOO_LARGE', 'request body is larger than allowed');
  }
  return new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: err });
}
