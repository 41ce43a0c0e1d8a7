/**
 * The OAuth-record contract: wherever oidc-provider's records live (SQLite, PostgreSQL, Redis),
 * they pass exactly these tests. Call `oidcContract(name, open)` from the adapter's test file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OidcRepo } from '../../src/store/types.ts';

export function oidcContract(name: string, open: () => Promise<{ oidc: OidcRepo; close(): Promise<void> }>): void {
  describe(`OAuth-record contract: ${name}`, () => {
    let s: { oidc: OidcRepo; close(): Promise<void> };
    before(async () => {
      s = await open();
    });
    after(async () => s?.close());
    const id = () => randomUUID();

    it('upsert, lookups by id, user code and uid, consume, destroy', async () => {
      const now = Math.floor(Date.now() / 1000);
      const [d, i, uc, uid] = [id(), id(), `UC-${id()}`, id()];
      await s.oidc.upsert('DeviceCode', d, { payload: { a: 1, userCode: uc }, expiresAt: now + 60, userCode: uc });
      await s.oidc.upsert('Interaction', i, { payload: { b: 2 }, expiresAt: now + 60, uid });
      assert.deepEqual((await s.oidc.find('DeviceCode', d))?.payload, { a: 1, userCode: uc });
      assert.equal((await s.oidc.findByUserCode('DeviceCode', uc))?.payload.a, 1);
      assert.equal((await s.oidc.findByUid('Interaction', uid))?.payload.b, 2);
      assert.equal(await s.oidc.find('Interaction', d), undefined, 'records are per model');
      await s.oidc.upsert('DeviceCode', d, { payload: { a: 2, userCode: uc }, expiresAt: now + 60, userCode: uc });
      assert.equal((await s.oidc.find('DeviceCode', d))?.payload.a, 2, 'upsert replaces');
      await s.oidc.consume('DeviceCode', d);
      assert.ok((await s.oidc.find('DeviceCode', d))?.payload.consumed);
      await s.oidc.destroy('Interaction', i);
      assert.equal(await s.oidc.find('Interaction', i), undefined);
      assert.equal(await s.oidc.findByUid('Interaction', uid), undefined);
    });

    it('expired records are not returned', async () => {
      const r = id();
      await s.oidc.upsert('RefreshToken', r, { payload: { c: 3 }, expiresAt: Math.floor(Date.now() / 1000) + 1 });
      assert.ok(await s.oidc.find('RefreshToken', r));
      await sleep(2100);
      assert.equal(await s.oidc.find('RefreshToken', r), undefined);
      await s.oidc.sweep(Math.floor(Date.now() / 1000));
      assert.equal(await s.oidc.find('RefreshToken', r), undefined);
    });

    it('revoke by grant removes every record of the grant and no other', async () => {
      const now = Math.floor(Date.now() / 1000);
      const [g, other, r1, r2, r3] = [id(), id(), id(), id(), id()];
      await s.oidc.upsert('RefreshToken', r1, { payload: {}, expiresAt: now + 60, grantId: g });
      await s.oidc.upsert('AuthorizationCode', r2, { payload: {}, expiresAt: now + 60, grantId: g });
      await s.oidc.upsert('RefreshToken', r3, { payload: {}, expiresAt: now + 60, grantId: other });
      await s.oidc.revokeByGrantId(g);
      assert.equal(await s.oidc.find('RefreshToken', r1), undefined);
      assert.equal(await s.oidc.find('AuthorizationCode', r2), undefined);
      assert.ok(await s.oidc.find('RefreshToken', r3), 'another grant is untouched');
    });

    it("a user's grants are listed by account, live ones only", async () => {
      const now = Math.floor(Date.now() / 1000);
      const [acct, g1, g2, g3] = [id(), id(), id(), id()];
      await s.oidc.upsert('Grant', g1, { payload: { accountId: acct, clientId: 'a' }, expiresAt: now + 60, accountId: acct });
      await s.oidc.upsert('Grant', g2, { payload: { accountId: acct, clientId: 'b' }, expiresAt: now + 60, accountId: acct });
      await s.oidc.upsert('Grant', g3, { payload: { accountId: id(), clientId: 'c' }, expiresAt: now + 60, accountId: 'someone-else' });
      const list = await s.oidc.listByAccount('Grant', acct);
      assert.deepEqual(list.map((x) => x.id), [g1, g2].sort());
      assert.deepEqual(list.map((x) => x.record.payload.clientId).sort(), ['a', 'b']);
      await s.oidc.destroy('Grant', g1);
      assert.deepEqual((await s.oidc.listByAccount('Grant', acct)).map((x) => x.id), [g2]);
      assert.deepEqual(await s.oidc.listByAccount('Session', acct), [], 'per model');
    });
  });
}
