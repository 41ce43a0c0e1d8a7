/**
 * Password accounts: an admin creates them through the API (`POST /api/v1/users`; there is no self
 * sign-up), the password rules apply, and the person then signs in with that password like the
 * admin does — as themselves, without the admin's role.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, apiClient, createAdmin, deviceLogin, startTestServer, type TestServer } from '../support/harness.ts';

describe('password accounts created by an admin', () => {
  let t: TestServer;
  let adminToken: string;
  const ADA = { username: 'ada.lovelace', password: 'analytical engine notes' };
  const create = (token: string, body: unknown) =>
    t.fetch('/api/v1/users', { method: 'POST', token, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  const count = async () => t.server.store.users.count();

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    adminToken = (await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks admin')).access_token;
  });
  after(() => t?.close());

  it('an admin creates an account; its person signs in with the password, as themselves and not as an admin', async () => {
    const res = await create(adminToken, ADA);
    assert.equal(res.status, 201);
    const text = await res.text();
    const made = JSON.parse(text) as { id: string; username: string; role: string; createdAt: string };
    assert.equal(made.username, ADA.username);
    assert.equal(made.role, 'user');
    assert.match(made.id, /^u_[A-Za-z0-9_-]{16}$/);
    assert.ok(!text.includes(ADA.password) && !text.includes('argon2'), 'neither the password nor its hash is answered');
    const event = t.securityEvents.find((e) => e.activity_name === 'user.create');
    assert.ok(event, 'a user.create event');
    assert.ok(!JSON.stringify(event).includes(ADA.password));

    const ada = await deviceLogin(t, 'palisade-cli', 'openid offline_access tasks', ADA);
    const me = (await (await t.fetch('/api/v1/me', { token: ada.access_token })).json()) as { sub: string };
    assert.equal(me.sub, made.id);
    // Not an admin: creating accounts is refused to the new account's token.
    const refused = await create(ada.access_token, { username: 'mallory', password: 'another long passphrase' });
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as { code: string }).code, 'PAL_ERR_FORBIDDEN');
    // The wrong password does not sign in (the device page answers the form again).
    await assert.rejects(deviceLogin(t, 'palisade-cli', 'openid offline_access tasks', { ...ADA, password: 'not the right one' }));
  });

  it('refused with a clear error, and nothing created: password rules, a bad or taken username, unknown fields, an API client', async () => {
    const before = await count();
    const cases: [unknown, number, string, RegExp][] = [
      [{ username: 'grace', password: 'short' }, 400, 'PAL_ERR_VALIDATION', /at least 8 characters/],
      [{ username: 'grace', password: 'x'.repeat(129) }, 400, 'PAL_ERR_VALIDATION', /at most 128 characters/],
      [{ username: 'grace', password: 'Password123' }, 400, 'PAL_ERR_VALIDATION', /common breached passwords/],
      [{ username: 'g', password: 'a long enough passphrase' }, 400, 'PAL_ERR_VALIDATION', /username/],
      [{ username: 'has space', password: 'a long enough passphrase' }, 400, 'PAL_ERR_VALIDATION', /username/],
      [{ username: 'grace', password: 'a long enough passphrase', role: 'admin' }, 400, 'PAL_ERR_VALIDATION', /role/],
      [{ username: ADMIN.username, password: 'a long enough passphrase' }, 409, 'PAL_ERR_CONFLICT', /taken/],
      [{ username: ADA.username, password: 'a long enough passphrase' }, 409, 'PAL_ERR_CONFLICT', /taken/],
    ];
    for (const [body, status, code, message] of cases) {
      const res = await create(adminToken, body);
      const problem = (await res.json()) as { code: string; detail?: string; message?: string };
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(problem.code, code, JSON.stringify(body));
      assert.match(JSON.stringify(problem), message, JSON.stringify(problem));
      assert.ok(!JSON.stringify(problem).includes('a long enough passphrase'), 'the password is never repeated');
    }
    // 64 characters and more are accepted (ASVS), with no composition rule.
    assert.equal((await create(adminToken, { username: 'long.pass', password: 'a'.repeat(40) + ' plain lowercase words only' })).status, 201);
    const client = await apiClient(t);
    const byClient = await create(client.token, { username: 'grace', password: 'a long enough passphrase' });
    assert.equal(byClient.status, 403);
    assert.equal(await count(), before + 1, 'only the valid account was created');
  });
});
