import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PermissionManager, requestSiteAccess, type PermissionsApi } from '../../src/worker/permissions.ts';

/** A fake `chrome.permissions`: holds patterns; `answer` decides what the user clicks in the prompt. */
class FakePermissions implements PermissionsApi {
  held = new Set<string>();
  answer = true;
  requests: string[][] = [];
  removed: string[][] = [];
  #added: ((p: { origins?: string[] }) => void)[] = [];
  #removedL: ((p: { origins?: string[] }) => void)[] = [];
  onAdded = { addListener: (cb: (p: { origins?: string[] }) => void) => void this.#added.push(cb) };
  onRemoved = { addListener: (cb: (p: { origins?: string[] }) => void) => void this.#removedL.push(cb) };
  async request(p: { origins: string[] }) {
    this.requests.push(p.origins);
    if (!this.answer) return false;
    for (const o of p.origins) this.held.add(o);
    for (const cb of this.#added) cb(p);
    return true;
  }
  async contains(p: { origins: string[] }) {
    return p.origins.every((o) => this.held.has(o));
  }
  async remove(p: { origins: string[] }) {
    this.removed.push(p.origins);
    for (const o of p.origins) this.held.delete(o);
    for (const cb of this.#removedL) cb(p);
    return true;
  }
  /** The user removes access in chrome://extensions. */
  revokeOutside(pattern: string) {
    this.held.delete(pattern);
    for (const cb of this.#removedL) cb({ origins: [pattern] });
  }
}

function setup() {
  const perms = new FakePermissions();
  let stored: string[] = [];
  const manager = new PermissionManager(perms, { load: async () => [...stored], save: async (o) => void (stored = [...o]) });
  const changes: string[][] = [];
  manager.onChange((g) => changes.push(g));
  return { perms, manager, changes, stored: () => stored };
}

const tick = () => new Promise((r) => setImmediate(r));

test('grant: the host pattern is requested, the origin stored, and the server told', async () => {
  const { perms, manager, changes, stored } = setup();
  assert.equal(await manager.request('https://shop.example:8443'), true);
  assert.deepEqual(perms.requests, [['https://shop.example/*']]);
  assert.deepEqual(stored(), ['https://shop.example:8443']);
  assert.deepEqual(await manager.grants(), ['https://shop.example:8443']);
  assert.equal(await manager.isGranted('https://shop.example:8443'), true);
  assert.deepEqual(changes.at(-1), ['https://shop.example:8443']);
});

test('deny: nothing is stored and nothing is granted', async () => {
  const { perms, manager, stored } = setup();
  perms.answer = false;
  assert.equal(await manager.request('https://shop.example'), false);
  assert.deepEqual(stored(), []);
  assert.deepEqual(await manager.grants(), []);
  assert.equal(await manager.isGranted('https://shop.example'), false);
});

test('add() refuses an origin whose host permission Chrome does not hold', async () => {
  const { manager, stored } = setup();
  await assert.rejects(manager.add('https://shop.example'), { code: 'PAL_ERR_SITE_NOT_GRANTED' });
  assert.deepEqual(stored(), []);
});

test('only http(s) origins: other schemes and non-origins are refused before any prompt', async () => {
  const { perms, manager } = setup();
  await assert.rejects(manager.request('file:///etc'), { code: 'PAL_ERR_URL_REFUSED' });
  await assert.rejects(manager.request('javascript:alert(1)'), { code: 'PAL_ERR_URL_REFUSED' });
  await assert.rejects(manager.request('https://shop.example/path'), { code: 'PAL_ERR_VALIDATION' });
  await assert.rejects(requestSiteAccess(perms, 'chrome://settings'), { code: 'PAL_ERR_URL_REFUSED' });
  assert.deepEqual(perms.requests, []);
});

test('removal outside the extension: the site stays listed but is no longer granted, and the server is told', async () => {
  const { perms, manager, changes } = setup();
  await manager.request('https://shop.example');
  await manager.request('http://127.0.0.1:3000');
  assert.deepEqual(await manager.grants(), ['https://shop.example', 'http://127.0.0.1:3000']);
  perms.revokeOutside('https://shop.example/*');
  await tick();
  await tick();
  assert.deepEqual(changes.at(-1), ['http://127.0.0.1:3000']);
  assert.deepEqual(await manager.grants(), ['http://127.0.0.1:3000']);
  assert.equal(await manager.isGranted('https://shop.example'), false);
  assert.deepEqual(await manager.sites(), [
    { origin: 'https://shop.example', granted: false },
    { origin: 'http://127.0.0.1:3000', granted: true },
  ]);
});

test('remove(): forgets the site, gives up the permission, and the server is told', async () => {
  const { perms, manager, changes, stored } = setup();
  await manager.request('https://shop.example');
  await manager.remove('https://shop.example');
  assert.deepEqual(perms.removed, [['https://shop.example/*']]);
  assert.deepEqual(stored(), []);
  assert.deepEqual(changes.at(-1), []);
});

test('remove() keeps a pattern another stored site (other port, same host) still needs', async () => {
  const { perms, manager } = setup();
  await manager.request('http://127.0.0.1:3000');
  await manager.request('http://127.0.0.1:4000');
  await manager.remove('http://127.0.0.1:3000');
  assert.deepEqual(perms.removed, []);
  assert.deepEqual(await manager.grants(), ['http://127.0.0.1:4000']);
});

test('a stored origin without the permission (stale storage) is not granted', async () => {
  const perms = new FakePermissions();
  const manager = new PermissionManager(perms, { load: async () => ['https://stale.example'], save: async () => {} });
  assert.deepEqual(await manager.grants(), []);
  assert.equal(await manager.isGranted('https://stale.example'), false);
});
