import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError, type TaskView } from '@palisade/protocol';
import { errorFromBody, errorFromResponse, TaskError, unavailable } from '../../src/lib/errors.ts';

test('a problem body keeps the server code, detail and issues', () => {
  const e = errorFromBody(400, {
    type: 'urn:palisade:error:PAL_ERR_VALIDATION',
    title: 'The input does not match its schema',
    status: 400,
    code: 'PAL_ERR_VALIDATION',
    detail: 'invalid task: /input/q Expected string',
    errors: [{ path: '/input/q', message: 'Expected string' }, { bad: true }],
  });
  assert.ok(e instanceof PalisadeError);
  assert.equal(e.code, 'PAL_ERR_VALIDATION');
  assert.equal(e.message, 'invalid task: /input/q Expected string');
  assert.deepEqual(e.errors, [{ path: '/input/q', message: 'Expected string' }]);
});

test('the code is taken from `type` when `code` is missing, and the status never overrides a code', () => {
  const e = errorFromBody(409, { type: 'urn:palisade:error:PAL_ERR_NO_AGENT', title: 'x', detail: 'no agent for https://a.example' });
  assert.equal(e.code, 'PAL_ERR_NO_AGENT');
  const f = errorFromBody(500, { code: 'PAL_ERR_SITE_NOT_GRANTED', title: 'Not granted' });
  assert.equal(f.code, 'PAL_ERR_SITE_NOT_GRANTED');
  assert.equal(f.message, 'Not granted');
});

test('an unknown code falls back to the HTTP status', () => {
  assert.equal(errorFromBody(404, { code: 'PAL_ERR_FROM_THE_FUTURE', detail: 'x' }).code, 'PAL_ERR_NOT_FOUND');
  assert.equal(errorFromBody(401, 'Unauthorized').code, 'PAL_ERR_UNAUTHENTICATED');
  assert.equal(errorFromBody(403, undefined).code, 'PAL_ERR_FORBIDDEN');
  assert.equal(errorFromBody(429, undefined).code, 'PAL_ERR_RATE_LIMITED');
  assert.equal(errorFromBody(502, '<html>bad gateway</html>').code, 'PAL_ERR_UNAVAILABLE');
  assert.equal(errorFromBody(503, undefined).code, 'PAL_ERR_UNAVAILABLE');
  assert.equal(errorFromBody(500, undefined).code, 'PAL_ERR_INTERNAL');
});

test('OAuth error bodies are mapped to Palisade codes', () => {
  assert.equal(errorFromBody(401, { error: 'invalid_client', error_description: 'client authentication failed' }).code, 'PAL_ERR_UNAUTHENTICATED');
  assert.equal(errorFromBody(400, { error: 'invalid_grant' }).code, 'PAL_ERR_TOKEN_INVALID');
  assert.equal(errorFromBody(400, { error: 'invalid_scope' }).code, 'PAL_ERR_FORBIDDEN');
  assert.equal(errorFromBody(503, { error: 'temporarily_unavailable' }).code, 'PAL_ERR_UNAVAILABLE');
  assert.match(errorFromBody(401, { error: 'invalid_client', error_description: 'nope' }).message, /invalid_client: nope/);
});

test('errorFromResponse reads problem JSON and keeps the body for the logs only', async () => {
  const res = new Response(JSON.stringify({ code: 'PAL_ERR_UNKNOWN_RECIPE', detail: 'no recipe named "x"' }), {
    status: 404,
    headers: { 'content-type': 'application/problem+json' },
  });
  const e = await errorFromResponse(res);
  assert.equal(e.code, 'PAL_ERR_UNKNOWN_RECIPE');
  assert.deepEqual((e.internal as { status: number }).status, 404);
  assert.equal(JSON.stringify(e.toProblem()).includes('internal'), false);
});

test('network failures become PAL_ERR_UNAVAILABLE with the cause kept', () => {
  const inner = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
  const cause = new TypeError('fetch failed', { cause: inner });
  const e = unavailable(cause, 'GET /api/v1/me');
  assert.equal(e.code, 'PAL_ERR_UNAVAILABLE');
  assert.equal(e.cause, cause);
  assert.match(e.message, /ECONNREFUSED/);
});

test('TaskError carries the task and its error code, or one derived from the state', () => {
  const base: TaskView = { id: 't1', state: 'failed', site: 'https://a.example', attempts: 1, createdAt: '', updatedAt: '', deadline: '' };
  const failed = new TaskError({ ...base, error: { code: 'PAL_ERR_STEP_FAILED', message: 'no match', step: 2 } });
  assert.equal(failed.code, 'PAL_ERR_STEP_FAILED');
  assert.equal(failed.message, 'no match');
  assert.equal(failed.task.id, 't1');
  assert.ok(failed instanceof PalisadeError);
  assert.equal(new TaskError({ ...base, state: 'expired' }).code, 'PAL_ERR_TASK_EXPIRED');
  assert.equal(new TaskError({ ...base, state: 'cancelled' }).code, 'PAL_ERR_TASK_CANCELLED');
  assert.equal(new TaskError({ ...base, error: { code: 'SOMETHING_ELSE', message: 'x' } }).code, 'PAL_ERR_STEP_FAILED');
});
