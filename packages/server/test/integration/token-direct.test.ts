/**
 * The token endpoint's direct path for API clients (auth/client-credentials.ts): what it answers is
 * what oidc-provider answers to the same request on the same server (the same token but its id and
 * times, the same response and headers, the same security event), and every request it is not sure
 * of reaches oidc-provider with its body intact (refusals, other parameters, other client
 * authentication, DPoP, CORS, a body over its size limit, no Content-Length).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { apiClient, createAdmin, startTestServer, type TestServer } from '../support/harness.ts';
import { DIRECT_MAX_BODY } from '../../src/auth/client-credentials.ts';
import { newApiClient } from '../../src/auth/clients.ts';

describe('token endpoint: the direct path for API clients', () => {
  let t: TestServer;
  let client: Awaited<ReturnType<typeof apiClient>>;
  let basic: string;
  /** Tokens oidc-provider itself granted (its `grant.success`), since the last reset. */
  let granted = 0;
  const watchProvider = () => t.server.provider.on('grant.success', () => void granted++);

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    client = await apiClient(t);
    basic = `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`;
    watchProvider();
  });
  after(async () => t?.close());

  const post = (body: string, headers: Record<string, string> = {}) =>
    t.fetch('/oauth2/token', { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic, ...headers } });
  /** Posts and reports which path answered. */
  const answered = async (body: string, headers: Record<string, string> = {}) => {
    const before = granted;
    const res = await post(body, headers);
    const json = (await res.json()) as Record<string, unknown>;
    return { res, json, by: granted > before ? 'provider' : 'direct' };
  };
  const ENOUGH = 'grant_type=client_credentials&scope=tasks';

  it('answers as oidc-provider does: the same response, headers, token header and claims, and security event', async () => {
    const events = t.securityEvents.length;
    const direct = await answered(ENOUGH);
    assert.equal(direct.by, 'direct');
    t.server.config.tokenDirectPath = false;
    let viaProvider;
    try {
      viaProvider = await answered(ENOUGH);
    } finally {
      t.server.config.tokenDirectPath = true;
    }
    assert.equal(viaProvider.by, 'provider');

    assert.equal(direct.res.status, 200);
    assert.equal(viaProvider.res.status, 200);
    // The response: the same members in the same order, the same values but the token.
    assert.deepEqual(Object.keys(direct.json), Object.keys(viaProvider.json));
    assert.deepEqual({ ...direct.json, access_token: 'x' }, { ...viaProvider.json, access_token: 'x' });
    // The same headers (names and values), but those that change per response.
    const headers = (r: Response) => [...r.headers].filter(([k]) => !['date', 'content-length', 'ratelimit', 'ratelimit-policy'].includes(k));
    assert.deepEqual(headers(direct.res), headers(viaProvider.res));
    for (const r of [direct.res, viaProvider.res]) assert.equal(r.headers.get('cache-control'), 'no-store');

    const [a, b] = [String(direct.json.access_token), String(viaProvider.json.access_token)];
    assert.deepEqual(decodeProtectedHeader(a), decodeProtectedHeader(b)); // alg, typ, kid: the same key
    assert.equal(JSON.stringify(Object.keys(decodeProtectedHeader(a))), JSON.stringify(Object.keys(decodeProtectedHeader(b))));
    const [ca, cb] = [decodeJwt(a), decodeJwt(b)];
    assert.deepEqual(Object.keys(ca), Object.keys(cb)); // the same claims, in the same order
    const fixed = (c: Record<string, unknown>) => ({ ...c, jti: undefined, iat: undefined, exp: undefined });
    assert.deepEqual(fixed(ca), fixed(cb));
    assert.equal(Number(ca.exp) - Number(ca.iat), Number(cb.exp) - Number(cb.iat));
    assert.ok(Math.abs(Number(ca.iat) - Math.floor(Date.now() / 1000)) <= 5);
    assert.match(String(ca.jti), /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(ca.jti, cb.jti);

    // Both are accepted by the API, for the client's owner.
    for (const token of [a, b]) {
      const me = await t.fetch('/api/v1/me', { token });
      assert.equal(me.status, 200);
    }
    // The same security event from each.
    const issued = t.securityEvents.slice(events).filter((e) => e.activity_name === 'oauth.token');
    assert.equal(issued.length, 2);
    const view = (e: (typeof issued)[number]) => ({ activity: e.activity_name, status: e.status, message: e.message, actor: e.actor, src: e.src_endpoint });
    assert.deepEqual(view(issued[0]!), view(issued[1]!));
    assert.equal(issued[0]!.actor.app_uid, client.clientId);
  });

  it('a token with no scope asked for carries none, as oidc-provider issues it; a scope repeated counts once', async () => {
    const bare = await answered('grant_type=client_credentials');
    assert.equal(bare.by, 'direct');
    assert.equal(bare.json.scope, undefined);
    assert.equal(decodeJwt(String(bare.json.access_token)).scope, undefined);
    const twice = await answered('grant_type=client_credentials&scope=tasks%20tasks');
    assert.equal(twice.by, 'direct');
    assert.equal(twice.json.scope, 'tasks');
  });

  it('every request it is not sure of reaches oidc-provider with its body, which answers as it always does', async () => {
    const wrongSecret = `Basic ${Buffer.from(`${client.clientId}:pal_sk_not-it`).toString('base64')}`;
    const cases: [string, string, Record<string, string>, number, string | undefined][] = [
      ['a wrong secret', ENOUGH, { authorization: wrongSecret }, 401, 'invalid_client'],
      ['a scope the client was not given', 'grant_type=client_credentials&scope=tasks%20admin', {}, 400, 'invalid_scope'],
      ['grant_type twice', `${ENOUGH}&grant_type=client_credentials`, {}, 400, 'invalid_request'],
      ['another grant', 'grant_type=refresh_token&refresh_token=x', {}, 400, 'invalid_request'],
      ['no grant_type', 'scope=tasks', {}, 400, 'invalid_request'],
      ['another resource', `${ENOUGH}&resource=urn%3Aother`, {}, 400, 'invalid_target'],
      ['a Basic header padded wrong (Node would decode it)', ENOUGH, { authorization: `${basic}=` }, 400, 'invalid_request'],
      ['a first-party client', ENOUGH, { authorization: `Basic ${Buffer.from('palisade-cli:x').toString('base64')}` }, 401, 'invalid_client'],
      ['a DPoP header', ENOUGH, { dpop: 'not-a-proof' }, 400, 'invalid_dpop_proof'],
      // Granted, by oidc-provider: a parameter it ignores, the resource named, the secret in the body, an empty scope.
      ['an unknown parameter', `${ENOUGH}&foo=bar`, {}, 200, undefined],
      ['the resource named', `${ENOUGH}&resource=urn%3Apalisade%3Aapi`, {}, 200, undefined],
      ['the secret in the body (client_secret_post)', `${ENOUGH}&client_id=${client.clientId}&client_secret=${client.clientSecret}`, { authorization: '' }, 200, undefined],
      ['an empty scope (ignored)', 'grant_type=client_credentials&scope=', {}, 200, undefined],
      ['an Origin header (only the extension\'s are allowed)', ENOUGH, { origin: 'https://app.example' }, 400, 'invalid_request'],
    ];
    for (const [what, body, headers, status, error] of cases) {
      const before = granted;
      const res = await t.fetch('/oauth2/token', {
        method: 'POST', body,
        headers: Object.fromEntries(Object.entries({ 'content-type': 'application/x-www-form-urlencoded', authorization: basic, ...headers }).filter(([, v]) => v !== '')),
      });
      const json = (await res.json()) as { error?: string; access_token?: string };
      assert.equal(res.status, status, `${what}: ${JSON.stringify(json)}`);
      assert.equal(json.error, error, what);
      if (status === 200) {
        assert.equal(granted, before + 1, `${what}: oidc-provider granted it`);
        assert.equal(decodeJwt(json.access_token!).client_id, client.clientId, what);
      }
    }
  });

  it(`reads at most ${DIRECT_MAX_BODY} bytes of body: one byte more goes to oidc-provider (which grants it); no Content-Length too`, async () => {
    // `tasks` repeated (one scope: both paths count it once), then empty `&` pieces (ignored by
    // both parsers) to the exact length.
    const head = 'grant_type=client_credentials&scope=tasks';
    let atLimit = head + '+tasks'.repeat(Math.floor((DIRECT_MAX_BODY - head.length) / 6));
    atLimit += '&'.repeat(DIRECT_MAX_BODY - atLimit.length);
    assert.equal(atLimit.length, DIRECT_MAX_BODY);
    const over = `${atLimit}&`;
    const inside = await answered(atLimit);
    assert.equal(inside.res.status, 200, JSON.stringify(inside.json));
    assert.equal(inside.by, 'direct');
    const beyond = await answered(over);
    assert.equal(beyond.res.status, 200, JSON.stringify(beyond.json));
    assert.equal(beyond.by, 'provider');
    assert.equal(beyond.json.scope, 'tasks');

    // A chunked body (no Content-Length) goes to oidc-provider unread.
    const before = granted;
    const res = await request(new URL('/oauth2/token', t.url), {
      method: 'POST', dispatcher: t.dispatcher,
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
      body: Readable.from([Buffer.from('grant_type=client_credentials'), Buffer.from('&scope=tasks')]),
    });
    assert.equal(res.statusCode, 200);
    await res.body.json();
    assert.equal(granted, before + 1);
  });

  it('differential: 300 varied requests get the same answer with the direct path on and off', async (ctx) => {
    // A seeded generator (the same cases every run): headers, encodings, scopes, parameters and
    // content types near the edges of what the direct path takes.
    let seed = 0x5eed;
    const pick = <T>(xs: readonly T[]): T => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return xs[seed % xs.length]!;
    };
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const { clientId: id, clientSecret: secret } = client;
    const good = `Basic ${b64(`${id}:${secret}`)}`;
    // The forms the direct path takes come up more often, so that a good share of cases reach it.
    const auths = [
      good, good, good, good, good, good, `basic ${b64(`${id}:${secret}`)}`, `BASIC ${b64(`${id}:${secret}`)}`, `Basic  ${b64(`${id}:${secret}`)}`,
      `Basic ${b64(`${id}:${secret}`)} `, `Basic ${b64(`${id}:${secret}`)}=`, `Basic ${b64(`${id}:${secret}`).replace(/=+$/, '')}`,
      `Basic ${b64(`${encodeURIComponent(id).replace('p', '%70')}:${secret}`)}`, `Basic ${b64(`${id}:${secret.replace('_', '%5F')}`)}`,
      `Basic ${b64(`${id}:${secret}x`)}`, `Basic ${b64(`${id}:`)}`, `Basic ${b64(`${id}`)}`, `Basic ${b64(`:${secret}`)}`,
      `Basic ${b64(`pal_nobody:${secret}`)}`, `Basic ${b64(`palisade-cli:${secret}`)}`, `Basic ${b64(`${id}:${secret}%`)}`,
      `Basic ${b64(`${id}:${secret}\u00e9`)}`, `Bearer ${secret}`, '', `Basic ${b64(`${id}%3A:${secret}`)}`, `Basic ${b64(`${id.toUpperCase()}:${secret}`)}`,
      `Basic ${b64(`${id}:${secret}+`)}`, `Basic ${b64(`${id}:${secret}%2B`)}`,
      // Around the 2048-character cap on the header the direct path reads.
      `Basic ${b64(`${id}:${secret}${'x'.repeat(1400)}`)}`.slice(0, 2048), `Basic ${b64(`${id}:${secret}${'x'.repeat(1400)}`)}`.slice(0, 2049),
    ];
    const grants = ['grant_type=client_credentials', 'grant_type=client_credentials', 'grant_type=client_credentials', 'grant_type=CLIENT_CREDENTIALS', 'grant_type=client%5Fcredentials', '', 'grant_type=client_credentials&grant_type=client_credentials', 'grant_type=password'];
    const scopes = ['', '&scope=tasks', '&scope=tasks', '&scope=tasks', '&scope=tasks+tasks', '&scope=tasks%20admin', '&scope=', '&scope=foo', '&scope=tasks+foo', '&scope=Tasks', '&scope=%74asks', '&scope=tasks++tasks', '&scope=+tasks', '&scope=tasks%7F', '&scope=tasks&scope=tasks', '&scope=openid'];
    const extras = ['', '', '', '', '', '', '&foo=bar', '&resource=urn%3Apalisade%3Aapi', `&client_id=${id}`, '&', '&&', '&=x'];
    const types = ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'application/x-www-form-urlencoded;charset=UTF-8', 'application/x-www-form-urlencoded; charset=latin1', 'application/x-www-form-urlencoded;\tcharset=utf-8', 'text/plain', 'APPLICATION/X-WWW-FORM-URLENCODED'];
    const others: Record<string, string>[] = [
      {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, { origin: '' }, { dpop: '' }, { origin: 'chrome-extension://abcdefghijklmnopabcdefghijklmnop' },
      { 'oauth-client-attestation': 'x' }, { 'oauth-client-attestation-pop': 'x' }, { 'x-forwarded-for': '203.0.113.9' },
    ];
    const bodies = (body: string) => [body, body, body, body, body, body, body, `\ufeff${body}`];
    const paths = ['/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token', '/oauth2/token?x=1', '/oauth2/token/'];
    const varying = new Set(['date', 'content-length', 'ratelimit', 'ratelimit-policy']);
    const outcome = async (path: string, body: string, headers: Record<string, string>) => {
      const before = granted;
      const res = await t.fetch(path, { method: 'POST', body, headers });
      const text = await res.text();
      const json = (text.startsWith('{') ? JSON.parse(text) : { text: text.slice(0, 80) }) as Record<string, unknown>;
      const token = typeof json.access_token === 'string' ? json.access_token : undefined;
      const key = JSON.stringify({
        status: res.status, error: json.error, keys: Object.keys(json), scope: json.scope, expires: json.expires_in,
        header: token ? decodeProtectedHeader(token) : undefined,
        claims: token ? { ...decodeJwt(token), jti: 0, iat: 0, exp: 0 } : undefined,
        headers: res.status === 200 ? [...res.headers].filter(([k]) => !varying.has(k)) : undefined,
      });
      return { key, direct: res.status === 200 && granted === before };
    };
    let direct = 0;
    for (let i = 0; i < 300; i++) {
      const body = pick(bodies(`${pick(grants)}${pick(scopes)}${pick(extras)}`));
      const auth = pick(auths);
      const path = pick(paths);
      const headers: Record<string, string> = { 'content-type': pick(types), ...(auth ? { authorization: auth } : {}), ...pick(others) };
      const on = await outcome(path, body, headers);
      t.server.config.tokenDirectPath = false;
      let off;
      try {
        off = await outcome(path, body, headers);
      } finally {
        t.server.config.tokenDirectPath = true;
      }
      assert.equal(on.key, off.key, `case ${i}: ${JSON.stringify({ path, body, headers })}`);
      assert.equal(off.direct, false);
      if (on.direct) direct++;
    }
    ctx.diagnostic(`${direct} of 300 answered directly, the rest by oidc-provider`);
    // Both paths were exercised: a good share went the direct way, the rest to oidc-provider.
    assert.ok(direct >= 20 && direct <= 250, `${direct} of 300 answered directly`);
  });

  it('a revoked client is refused (by oidc-provider) though its last token came the direct way', async () => {
    const victim = await apiClient(t, 'to revoke');
    const auth = `Basic ${Buffer.from(`${victim.clientId}:${victim.clientSecret}`).toString('base64')}`;
    assert.equal((await answered(ENOUGH, { authorization: auth })).by, 'direct');
    const del = await t.fetch(`/api/v1/clients/${victim.clientId}`, { method: 'DELETE', token: victim.adminToken });
    assert.equal(del.status, 204);
    const again = await answered(ENOUGH, { authorization: auth });
    assert.equal(again.res.status, 401);
    assert.equal(again.json.error, 'invalid_client');
  });

  it('a security-event listener that throws: the answer is oidc-provider\'s (500), the server stays up, and the next token comes the direct way', async () => {
    const stop = t.server.events.subscribe((e) => {
      if (e.activity_name === 'oauth.token' && e.status === 'Success') throw new Error('a listener failed');
    });
    let res;
    try {
      res = await post(ENOUGH);
      await res.text();
    } finally {
      stop();
    }
    assert.equal(res.status, 500);
    const next = await answered(ENOUGH);
    assert.equal(next.res.status, 200);
    assert.equal(next.by, 'direct');
  });

  it('after a key rotation it signs with the new current key, as oidc-provider does', async () => {
    const before = decodeProtectedHeader(String((await answered(ENOUGH)).json.access_token)).kid;
    await t.server.rotateKeys();
    watchProvider(); // the rotation made a new provider
    const direct = await answered(ENOUGH);
    assert.equal(direct.by, 'direct');
    const kid = decodeProtectedHeader(String(direct.json.access_token)).kid;
    assert.notEqual(kid, before);
    assert.equal(kid, t.server.keys.view().find((k) => k.status === 'current')!.kid);
    t.server.config.tokenDirectPath = false;
    try {
      const viaProvider = await answered(ENOUGH);
      assert.equal(viaProvider.by, 'provider');
      assert.equal(decodeProtectedHeader(String(viaProvider.json.access_token)).kid, kid);
    } finally {
      t.server.config.tokenDirectPath = true;
    }
    assert.equal((await t.fetch('/api/v1/me', { token: String(direct.json.access_token) })).status, 200);
  });
});

describe('token endpoint: both paths name the client\'s address alike', () => {
  it('on a listener for IPv6 and IPv4 (host ::), an IPv4 client is 127.0.0.1 in the events of both paths, as elsewhere', async () => {
    const t = await startTestServer({ host: '::' });
    try {
      // Straight into the store (the server's own URL names [::], which its certificate does not).
      await t.server.store.users.create({ id: 'u_v6', username: 'v6', passwordHash: 'x', role: 'user', createdAt: new Date().toISOString() });
      const { record, secret } = newApiClient('u_v6', 'v6 client', ['tasks']);
      await t.server.store.clients.create(record);
      const basic = `Basic ${Buffer.from(`${record.clientId}:${secret}`).toString('base64')}`;
      const port = (t.server.app.server.address() as { port: number }).port;
      const send = async () => {
        const r = await request(`https://127.0.0.1:${port}/oauth2/token`, {
          method: 'POST', dispatcher: t.dispatcher, body: 'grant_type=client_credentials&scope=tasks',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
        });
        await r.body.json();
        assert.equal(r.statusCode, 200);
      };
      const from = t.securityEvents.length;
      await send();
      t.server.config.tokenDirectPath = false;
      await send();
      const ips = t.securityEvents.slice(from).filter((e) => e.activity_name === 'oauth.token').map((e) => e.src_endpoint.ip);
      assert.deepEqual(ips, ['127.0.0.1', '127.0.0.1']);
    } finally {
      await t.close();
    }
  });
});
