/**
 * The token endpoint's direct path stands aside (every request to oidc-provider) where it could not
 * issue what oidc-provider would: an audience oidc-provider refuses as a resource indicator, or a
 * signing key that is not a P-256 key with a `kid`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { createDirectTokenPath, type DirectTokenOptions } from '../../src/auth/client-credentials.ts';
import { createSecurityEvents } from '../../src/siem/events.ts';
import { pino } from 'pino';

describe('direct token path: when it stands aside', async () => {
  const key = async (alg: 'ES256' | 'ES384' | 'RS256'): Promise<JWK> => ({ ...(await exportJWK((await generateKeyPair(alg, { extractable: true })).privateKey)), kid: 'k1', alg });
  const es256 = await key('ES256');
  const options = (over: Partial<DirectTokenOptions>): DirectTokenOptions => ({
    issuer: 'https://127.0.0.1/oauth2', audience: 'urn:palisade:api', ttlS: 900,
    clients: { get: async () => undefined, revoke: async () => false },
    events: createSecurityEvents(pino({ level: 'silent' })),
    signingKey: es256, isStatic: () => false, resourceScopes: new Set(['tasks']),
    ...over,
  });

  it('takes requests with an absolute-URI audience and a P-256 key with a kid', () => {
    assert.ok(createDirectTokenPath(options({})));
    assert.ok(createDirectTokenPath(options({ audience: 'https://api.example/v1' })));
  });

  it('stands aside for an audience that is not an absolute URI, has a fragment, or is empty', () => {
    for (const audience of ['palisade-api', 'https://api.example/#x', '', '/relative']) {
      assert.equal(createDirectTokenPath(options({ audience })), undefined, audience);
    }
  });

  it('stands aside for a key that is not P-256 with a kid', async () => {
    const { kid: _kid, ...noKid } = es256;
    for (const [what, signingKey] of [['no kid', noKid], ['P-384', await key('ES384')], ['RSA', await key('RS256')], ['another alg named', { ...es256, alg: 'ES384' }]] as const) {
      assert.equal(createDirectTokenPath(options({ signingKey })), undefined, what);
    }
  });
});
