/**
 * Rate limits at the edge, against a real server: per IP by endpoint class, per client on the token
 * endpoint, per principal on the API, escalation to a temporary block, RateLimit/Retry-After headers,
 * trusted proxies, limits shared by two nodes through Redis, and the local fallback when Redis is down.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_RATE_LIMITS, type RateLimitConfig, type RateSpec } from '../../src/config.ts';
import { apiClient, createAdmin, startTestServer, type TestServer } from '../support/harness.ts';
import { redisServerSkip, startRedis, stopAllRedis, waitFor, type RedisProc } from '../support/redis-procs.ts';
import { monitorRedis, testPrefix } from '../support/redis.ts';

const roomy: RateSpec = { limit: 100_000, periodMs: 60_000, burst: 100_000 };
/** Every class roomy, except what `classes` names; escalation calm unless given. */
function limits(classes: Partial<RateLimitConfig['classes']>, escalation = { strikes: 1000, windowMs: 60_000, blockMs: 60_000 }): RateLimitConfig {
  const all = Object.fromEntries(Object.keys(DEFAULT_RATE_LIMITS.classes).map((c) => [c, { ip: roomy, principal: roomy }])) as RateLimitConfig['classes'];
  return { enabled: true, classes: { ...all, ...classes }, escalation };
}

const form = (body: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(body), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

describe('rate limits', () => {
  let t: TestServer | undefined;
  after(async () => t?.close());

  it('sign-in posts per IP: the burst passes, the next is 429 problem details with RateLimit and Retry-After; refusals are logged', async () => {
    t = await startTestServer({ rateLimits: limits({ signin: { ip: { limit: 6, periodMs: 60_000, burst: 3 } } }) });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await t.fetch('/setup', form({ token: 'wrong', username: 'someone', password: 'x'.repeat(12) }));
      statuses.push(res.status);
      assert.match(res.headers.get('ratelimit-policy') ?? '', /^"signin-ip";q=6;w=60$/);
      assert.match(res.headers.get('ratelimit') ?? '', new RegExp(`^"signin-ip";r=${2 - i};t=\\d+$`));
      await res.arrayBuffer();
    }
    assert.ok(statuses.every((s) => s !== 429), `the burst passes (${statuses})`);
    const refused = await t.fetch('/setup', form({ token: 'wrong', username: 'someone', password: 'x'.repeat(12) }));
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(retry >= 9 && retry <= 10, `one request per 10 s: retry after ${retry}`);
    const problem = (await refused.json()) as { code: string; status: number; detail: string };
    assert.equal(problem.code, 'PAL_ERR_RATE_LIMITED');
    assert.equal(problem.status, 429);
    assert.match(problem.detail, /too many requests; retry in \d+ s/);
    assert.ok(t.securityEvents.some((e) => e.activity_name === 'ratelimit.refused' && e.src_endpoint.ip === '127.0.0.1'));
    // Another class is not affected.
    const api = await t.fetch('/api/v1/me');
    assert.equal(api.status, 401);
    await t.close();
    t = undefined;
  });

  it('repeated refusals block the address for the block time: a high-severity event, refused even where its rate allows', async () => {
    t = await startTestServer({ rateLimits: limits({ web: { ip: { limit: 600, periodMs: 60_000, burst: 2 } } }, { strikes: 3, windowMs: 60_000, blockMs: 1500 }) });
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await t.fetch('/');
      codes.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [200, 200, 429, 429, 429]);
    const blocks = t.securityEvents.filter((e) => e.activity_name === 'ratelimit.block');
    assert.equal(blocks.length, 1, 'one block event');
    assert.equal(blocks[0]!.severity, 'high');
    await new Promise((r) => setTimeout(r, 250)); // the rate (10/s) alone would allow a request now
    const during = await t.fetch('/');
    assert.equal(during.status, 429);
    assert.match(((await during.json()) as { detail: string }).detail, /temporarily blocked/);
    await new Promise((r) => setTimeout(r, 1400));
    const later = await t.fetch('/');
    assert.equal(later.status, 200, 'the block ended');
    await t.close();
    t = undefined;
  });

  it('token endpoint: per client (HTTP Basic id) and per IP; one client over its rate does not stop another', async () => {
    t = await startTestServer({ rateLimits: limits({ token: { ip: { limit: 8, periodMs: 60_000, burst: 8 }, principal: { limit: 2, periodMs: 60_000, burst: 2 } } }) });
    await createAdmin(t);
    // apiClient's device login takes two token requests (device/auth, token) from this IP.
    const a = await apiClient(t, 'a');
    const b = await apiClient(t, 'b');
    // Each apiClient used: device/auth + token (no client id in Basic) and a client-credentials token for the new client.
    const token = (id: string, secret: string) => t!.fetch('/oauth2/token', { method: 'POST', headers: { authorization: basic(id, secret) }, body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'tasks' }) });
    const first = await token(a.clientId, a.clientSecret); // a's second request (apiClient made one)
    assert.equal(first.status, 200);
    assert.match(first.headers.get('ratelimit') ?? '', /^"token-principal";r=0;/);
    const refused = await token(a.clientId, a.clientSecret);
    assert.equal(refused.status, 429);
    assert.equal(((await refused.json()) as { code: string }).code, 'PAL_ERR_RATE_LIMITED');
    assert.ok(refused.headers.get('retry-after'));
    const other = await token(b.clientId, b.clientSecret);
    assert.equal(other.status, 200, 'client b still has its own rate');
    // Now the IP: 8 in its burst, all taken: 3 per apiClient (device/auth, device token, the client's
    // first token) and 2 here (the refused request took nothing).
    const ipRefused = await token('nobody', 'x');
    assert.equal(ipRefused.status, 429, 'the IP is over its burst whatever the client');
    assert.match(ipRefused.headers.get('ratelimit') ?? '', /^"token-ip";r=0;/);
    await t.close();
    t = undefined;
  });

  it('API: per principal (user or client), after the token is checked; another principal is not affected', async () => {
    t = await startTestServer({ rateLimits: limits({ api: { ip: roomy, principal: { limit: 3, periodMs: 60_000, burst: 3 } } }) });
    await createAdmin(t);
    const c = await apiClient(t);
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await t.fetch('/api/v1/me', { token: c.token });
      codes.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [200, 200, 200, 429]);
    assert.equal(t.securityEvents.filter((e) => e.activity_name === 'ratelimit.refused' && (e.unmapped?.key as string).includes(':p:client:')).length, 1);
    const admin = await t.fetch('/api/v1/me', { token: c.adminToken });
    assert.equal(admin.status, 200, 'the admin (another principal, same IP) is not limited');
    assert.match(admin.headers.get('ratelimit-policy') ?? '', /"api-principal"/);
    const anonymous = await t.fetch('/api/v1/me');
    assert.equal(anonymous.status, 401, 'a request without a token is refused as unauthenticated, not charged to anyone');
    await t.close();
    t = undefined;
  });

  it('API: the address is checked with the principal, after the token, in one check; RateLimit names the tighter', async () => {
    // One request back per 10 s: nothing comes back between the three requests.
    t = await startTestServer({ rateLimits: limits({ api: { ip: { limit: 6, periodMs: 60_000, burst: 50 }, principal: { limit: 60_000, periodMs: 60_000, burst: 1000 } } }) });
    await createAdmin(t);
    const c = await apiClient(t);
    const left: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await t.fetch('/api/v1/me', { token: c.token });
      assert.equal(res.status, 200);
      // One check of both buckets: the answer names the tighter, the address's (checked apart, the
      // principal's answer came last and named its own).
      assert.equal(res.headers.get('ratelimit-policy'), '"api-ip";q=6;w=60');
      left.push(Number(/;r=(\d+);/.exec(res.headers.get('ratelimit') ?? '')?.[1]));
      await res.arrayBuffer();
    }
    assert.ok(left[0]! < 50 && left[0]! > 40, `the address's burst, less the API calls made setting up (${left})`);
    assert.deepEqual(left, [left[0], left[0]! - 1, left[0]! - 2], 'one request, one taken from the address');
    // A path no API route matches has no route to check its address later: the edge checks it.
    const miss = await t.fetch('/api/v1/no-such-route', { token: c.token });
    assert.equal(miss.status, 404);
    assert.match(miss.headers.get('ratelimit') ?? '', new RegExp(`^"api-ip";r=${left[0]! - 3};`));
    await miss.arrayBuffer();
    await t.close();
    t = undefined;
  });

  it('API: a refused token is still counted against its address; an address refused here is checked before any token', async () => {
    t = await startTestServer({ rateLimits: limits({ api: { ip: { limit: 6, periodMs: 60_000, burst: 2 }, principal: roomy } }) });
    const failedAuth = () => t!.securityEvents.filter((e) => e.activity_name === 'api.authenticate').length;
    const forged = 'eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ4In0.c2ln';
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await t.fetch('/api/v1/me', i === 1 ? { token: forged } : {});
      codes.push(res.status);
      if (res.status === 429) assert.match(res.headers.get('ratelimit') ?? '', /^"api-ip";r=0;/);
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [401, 401, 429], 'two refused tokens took the burst; the third request is over the address\'s rate');
    assert.equal(failedAuth(), 3, 'the token was checked first while the address was not known refused');
    const again = await t.fetch('/api/v1/me', { token: forged });
    assert.equal(again.status, 429);
    assert.ok(Number(again.headers.get('retry-after')) >= 1);
    await again.arrayBuffer();
    assert.equal(failedAuth(), 3, 'refused by the address before its token was looked at');
    // However the path is spelled: the route's class is the API's.
    const encoded = await t.fetch('/%61pi/v1/me', { token: forged });
    assert.equal(encoded.status, 429);
    await encoded.arrayBuffer();
    assert.equal(failedAuth(), 3, 'an encoded path is checked first too');
    await t.close();
    t = undefined;
  });

  it('API: a request refused by its principal\'s rate is charged to its address all the same', async () => {
    t = await startTestServer({ rateLimits: limits({ api: { ip: { limit: 6, periodMs: 60_000, burst: 40 }, principal: { limit: 6, periodMs: 60_000, burst: 2 } } }) });
    await createAdmin(t);
    const c = await apiClient(t);
    // A path no route matches is checked at the edge, the address alone: its header says what is left.
    const left = async () => {
      const res = await t!.fetch('/api/v1/no-such-route');
      await res.arrayBuffer();
      return Number(/^"api-ip";r=(\d+);/.exec(res.headers.get('ratelimit') ?? '')?.[1]);
    };
    const before = await left();
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await t.fetch('/api/v1/me', { token: c.token });
      codes.push(res.status);
      if (res.status === 429) assert.match(res.headers.get('ratelimit-policy') ?? '', /^"api-principal"/, 'the answer names the principal\'s rule');
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [200, 200, 429]);
    assert.equal(await left(), before - 4, 'three requests and the probe taken from the address');
    await t.close();
    t = undefined;
  });

  it('X-Forwarded-For is ignored unless the peer is a trusted proxy; from a trusted proxy the client address is the last untrusted hop', async () => {
    const signin = { signin: { ip: { limit: 60, periodMs: 60_000, burst: 1 } } };
    const post = (tt: TestServer, xff: string) => tt.fetch('/setup', { ...form({ token: 'x', username: 'someone', password: 'x'.repeat(12) }), headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': xff } });
    const untrusted = await startTestServer({ rateLimits: limits(signin) });
    try {
      assert.notEqual((await post(untrusted, '203.0.113.1')).status, 429);
      assert.equal((await post(untrusted, '203.0.113.2')).status, 429, 'a forged header does not buy a new bucket');
    } finally {
      await untrusted.close();
    }
    const proxied = await startTestServer({ rateLimits: limits(signin), trustProxy: ['127.0.0.1', '10.0.0.0/8'] });
    try {
      assert.notEqual((await post(proxied, '203.0.113.1')).status, 429);
      assert.notEqual((await post(proxied, '203.0.113.2')).status, 429, 'another client behind the proxy has its own bucket');
      assert.equal((await post(proxied, '203.0.113.2')).status, 429);
      // The client prepends a fake address; the proxies (10.1.1.1, then the peer) appended the real one.
      assert.equal((await post(proxied, '198.51.100.9, 203.0.113.2, 10.1.1.1')).status, 429, 'prepended entries are not believed');
      const events = proxied.securityEvents.filter((e) => e.activity_name === 'ratelimit.refused');
      assert.ok(events.some((e) => e.src_endpoint.ip === '203.0.113.2'), 'events name the client, not the proxy');
    } finally {
      await proxied.close();
    }
  });

  it('a trusted-proxy entry that is not an address or range stops the server from starting', async () => {
    await assert.rejects(startTestServer({ trustProxy: ['10.0.0.0/33'] }), /invalid prefix length/);
    await assert.rejects(startTestServer({ trustProxy: ['proxy.example'] }), /not an IP address or CIDR range/);
  });
});

const skip = redisServerSkip('rate limits on Redis');
after(stopAllRedis);

describe('rate limits on Redis', { skip }, () => {
  let redis: RedisProc;
  let a: TestServer;
  let b: TestServer;
  const rateLimits = limits({ web: { ip: { limit: 60, periodMs: 60_000, burst: 4 } } });
  before(async () => {
    redis = await startRedis();
    const prefix = testPrefix();
    a = await startTestServer({ redisUrl: redis.url, redisPrefix: prefix, rateLimits });
    b = await startTestServer({ redisUrl: redis.url, redisPrefix: prefix, rateLimits });
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('two nodes share one bucket per address', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await (i % 2 === 0 ? a : b).fetch('/');
      codes.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [200, 200, 200, 200, 429, 429]);
  });

  it('an API request checks the address and the principal in one Redis round trip', async (ctx) => {
    const n = await startTestServer({ redisUrl: redis.url, redisPrefix: testPrefix(), rateLimits: limits({}) });
    ctx.after(() => n.close());
    await createAdmin(n);
    const c = await apiClient(n);
    const checks: string[][] = [];
    const monitor = await monitorRedis(`redis://127.0.0.1:${redis.port}`, (args) => {
      if (args[0]?.toLowerCase() === 'evalsha' && args.some((x) => x.includes('rl:api:'))) checks.push(args.filter((x) => x.includes('rl:api:') && !x.endsWith(':s') && !x.endsWith(':b')));
    });
    ctx.after(() => monitor.close());
    await new Promise((r) => setTimeout(r, 100)); // MONITOR is under way
    for (let i = 0; i < 5; i++) {
      const res = await n.fetch('/api/v1/me', { token: c.token });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    await waitFor(() => checks.length >= 5, 2000, 'the checks seen by MONITOR');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(checks.length, 5, `one check per request: ${JSON.stringify(checks)}`);
    for (const keys of checks) {
      assert.equal(keys.length, 2, `the address and the principal together: ${keys}`);
      assert.ok(keys[0]!.endsWith('rl:api:ip:127.0.0.1') && keys[1]!.endsWith(`rl:api:p:client:${c.clientId}`), String(keys));
    }
  });

  it('Redis down: each node falls back to its own limiter (never allow-all), says so once, and readiness fails', async () => {
    await redis.stop('SIGKILL');
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await a.fetch('/');
      codes.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(codes, [200, 200, 200, 200, 429, 429], 'the local limiter has the same burst');
    assert.equal(a.securityEvents.filter((e) => e.activity_name === 'ratelimit.fallback').length, 1);
    const ready = await a.fetch('/readyz');
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { code: string }).code, 'PAL_ERR_UNAVAILABLE');
    await redis.restart();
    let status = 0;
    for (let i = 0; i < 40 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const res = await a.fetch('/readyz');
      status = res.status;
      await res.arrayBuffer();
    }
    assert.equal(status, 200, 'ready again once Redis is back');
  });
});
