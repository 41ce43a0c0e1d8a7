/**
 * The pieces of the authorization code flow (`src/worker/code-flow.ts`): PKCE S256, the request's
 * parameters, and each check the answer from `launchWebAuthFlow` passes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PalisadeError } from '@palisade/protocol';
import { REDIRECT_CHECKS, authorizationParams, base64url, createPkce, issuerMatches, isOwnRedirect, launchError, noError, randomToken, readRedirect, s256, stateMatches } from '../../src/worker/code-flow.ts';

const REDIRECT = 'https://abcdefghijklmnopabcdefghijklmnop.chromiumapp.org/';
const ISSUER = 'https://palisade.example/oauth2';
const expected = { redirectUri: REDIRECT, state: 'state-1', issuer: ISSUER, issRequired: true };
const answer = (params: Record<string, string>, base = REDIRECT) => `${base}?${new URLSearchParams(params)}`;

test('base64url is unpadded and URL-safe', () => {
  assert.equal(base64url(new Uint8Array([])), '');
  assert.equal(base64url(new Uint8Array([0xfb, 0xff])), '-_8');
  assert.equal(base64url(new Uint8Array([1, 2, 3, 4])), 'AQIDBA');
});

test('S256 matches the RFC 7636 Appendix B example', async () => {
  assert.equal(await s256('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'), 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
});

test('a PKCE pair: a 43-character random verifier and its S256 challenge', async () => {
  const pairs = await Promise.all([createPkce(), createPkce(), createPkce()]);
  for (const { verifier, challenge } of pairs) {
    assert.match(verifier, /^[A-Za-z0-9_-]{43}$/, 'RFC 7636 §4.1: 43–128 unreserved characters');
    assert.equal(challenge, createHash('sha256').update(verifier, 'ascii').digest('base64url'));
    assert.notEqual(challenge, verifier, 'never plain');
  }
  assert.equal(new Set(pairs.map((p) => p.verifier)).size, 3, 'fresh every time');
  assert.match(randomToken(), /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(randomToken(), randomToken());
});

test('the authorization request carries exactly these parameters, in this order', () => {
  const params = authorizationParams({ clientId: 'palisade-extension', scope: 'openid offline_access agent', redirectUri: REDIRECT, state: 's1', challenge: 'c1' });
  assert.deepEqual([...params], [
    ['response_type', 'code'],
    ['client_id', 'palisade-extension'],
    ['scope', 'openid offline_access agent'],
    ['prompt', 'consent'],
    ['redirect_uri', REDIRECT],
    ['state', 's1'],
    ['code_challenge', 'c1'],
    ['code_challenge_method', 'S256'],
  ]);
});

test('a good answer gives its code', () => {
  assert.equal(readRedirect(answer({ code: 'c-1', state: 'state-1', iss: ISSUER }), expected), 'c-1');
  assert.equal(readRedirect(answer({ code: 'c-1', state: 'state-1' }), { ...expected, issRequired: false }), 'c-1', 'iss optional unless announced');
});

test('the checks run in a fixed order: own redirect → state → issuer → error', () => {
  assert.deepEqual(REDIRECT_CHECKS, [isOwnRedirect, stateMatches, issuerMatches, noError]);
});

const refused = (url: string, re: RegExp, code = 'PAL_ERR_VALIDATION', e: typeof expected = expected) =>
  assert.throws(() => readRedirect(url, e), (err: unknown) => err instanceof PalisadeError && err.code === code && re.test(err.message));

test('state must be exactly the one sent', () => {
  refused(answer({ code: 'c', state: 'state-2', iss: ISSUER }), /state mismatch/);
  refused(answer({ code: 'c', iss: ISSUER }), /state mismatch/);
  refused(answer({ code: 'c', state: '', iss: ISSUER }), /state mismatch/);
  refused(answer({ code: 'c', state: 'STATE-1', iss: ISSUER }), /state mismatch/);
  refused(`${REDIRECT}?code=c&state=state-1&state=state-2&iss=${encodeURIComponent(ISSUER)}`, /state mismatch/, undefined);
  refused(`${REDIRECT}?code=c&state=state-1&state=state-1&iss=${encodeURIComponent(ISSUER)}`, /state mismatch/, undefined);
});

test('an error with the wrong state is refused as a mismatch, not shown as the server speaking', () => {
  refused(answer({ error: 'access_denied', state: 'forged' }), /state mismatch/);
});

test('the answer must come back to the extension\'s own redirect URL', () => {
  refused(answer({ code: 'c', state: 'state-1', iss: ISSUER }, 'https://ponmlkjihgfedcbaponmlkjihgfedcba.chromiumapp.org/'), /unexpected address/);
  refused(answer({ code: 'c', state: 'state-1', iss: ISSUER }, `${REDIRECT}other`), /unexpected address/);
  refused(answer({ code: 'c', state: 'state-1', iss: ISSUER }, 'http://abcdefghijklmnopabcdefghijklmnop.chromiumapp.org/'), /unexpected address/);
  refused('not a url', /not a URL/);
});

test('iss (RFC 9207) must be the server\'s issuer, and present when the server announced it', () => {
  refused(answer({ code: 'c', state: 'state-1', iss: 'https://evil.example/oauth2' }), /another issuer/);
  refused(answer({ code: 'c', state: 'state-1' }), /issuer/);
});

test('an error from the server is surfaced with its description', () => {
  refused(answer({ error: 'access_denied', error_description: 'End-User aborted interaction', state: 'state-1', iss: ISSUER }), /^sign-in was denied: End-User aborted interaction$/, 'PAL_ERR_UNAUTHENTICATED');
  refused(answer({ error: 'invalid_scope', error_description: 'requested scope is not allowed', state: 'state-1', iss: ISSUER }), /refused the sign-in \(invalid_scope\): requested scope is not allowed/, 'PAL_ERR_UNAUTHENTICATED');
  refused(answer({ error: 'server_error', state: 'state-1', iss: ISSUER }), /\(server_error\)$/, 'PAL_ERR_UNAUTHENTICATED');
});

test('no code, no sign-in', () => {
  refused(answer({ state: 'state-1', iss: ISSUER }), /no authorization code/);
  refused(answer({ code: '', state: 'state-1', iss: ISSUER }), /no authorization code/);
});

test('launchWebAuthFlow failures: a closed window is a cancellation; a page that failed (an HTTP error) is explained', () => {
  const closed = launchError(new Error('The user did not approve access.'));
  assert.equal(closed.code, 'PAL_ERR_UNAUTHENTICATED');
  assert.match(closed.message, /cancelled/);
  const unloadable = launchError(new Error('Authorization page could not be loaded.'));
  assert.equal(unloadable.code, 'PAL_ERR_UNAUTHENTICATED');
  assert.match(unloadable.message, /answered with an error \(the server may be unreachable/);
  assert.match(launchError('something else').message, /failed: something else/);
});
