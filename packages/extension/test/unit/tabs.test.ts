import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError } from '@palisade/protocol';

/**
 * A stand-in for `chrome.tabs` with one tab, enough for `navigate`: an update either loads the URL
 * (a "loading" then a "complete" event, as Chrome reports them) or, for the first `stalls` updates,
 * is accepted and starts nothing, leaving the tab "unloaded" — the state headless Chromium was seen
 * in when a navigation timed out.
 */
class FakeTabs {
  readonly updates: string[] = [];
  readonly #updated = new Set<(id: number, info: chrome.tabs.OnUpdatedInfo, tab: chrome.tabs.Tab) => void>();
  #tab = { id: 7, windowId: 1, status: 'complete', url: 'about:blank' } as chrome.tabs.Tab;
  stalls: number;
  constructor(stalls: number) {
    this.stalls = stalls;
  }

  readonly api = {
    onUpdated: { addListener: (l: (id: number, info: chrome.tabs.OnUpdatedInfo, tab: chrome.tabs.Tab) => void) => this.#updated.add(l) },
    onRemoved: { addListener: () => {} },
    get: async (id: number) => {
      if (id !== this.#tab.id) throw new Error(`No tab with id: ${id}.`);
      return { ...this.#tab };
    },
    update: async (_id: number, props: { url: string }) => {
      this.updates.push(props.url);
      if (this.stalls > 0) {
        this.stalls--;
        this.#tab = { ...this.#tab, status: 'unloaded', url: '' } as chrome.tabs.Tab;
        return { ...this.#tab };
      }
      setTimeout(() => {
        this.#emit({ status: 'loading', url: props.url });
        setTimeout(() => this.#emit({ status: 'complete' }), 20);
      }, 20);
      return { ...this.#tab, pendingUrl: props.url };
    },
  };

  #emit(info: chrome.tabs.OnUpdatedInfo) {
    this.#tab = { ...this.#tab, ...info } as chrome.tabs.Tab;
    for (const l of this.#updated) l(this.#tab.id!, info, { ...this.#tab });
  }
}

/** Shorter than the default (STALLED_NAVIGATION_MS) so the tests take seconds. */
const STALLED_NAVIGATION_MS = 1500;

async function driverOver(stalls: number) {
  const tabs = new FakeTabs(stalls);
  (globalThis as { chrome?: unknown }).chrome = { tabs: tabs.api };
  const { chromeDriver } = await import('../../src/worker/tabs.ts');
  return { tabs, driver: chromeDriver(undefined, { stalledNavigationMs: STALLED_NAVIGATION_MS }), STALLED_NAVIGATION_MS };
}

const URL_ = 'https://shop.example/results';

test('a navigation that starts is asked for once', async () => {
  const { tabs, driver } = await driverOver(0);
  await driver.navigate(7, URL_, 5000, new AbortController().signal);
  assert.deepEqual(tabs.updates, [URL_]);
});

test('a navigation Chrome accepted and never started is asked for once more, and the page loads', async () => {
  const { tabs, driver, STALLED_NAVIGATION_MS } = await driverOver(1);
  const started = Date.now();
  await driver.navigate(7, URL_, 10_000, new AbortController().signal);
  assert.deepEqual(tabs.updates, [URL_, URL_]);
  assert.ok(Date.now() - started >= STALLED_NAVIGATION_MS, 'asked again only after the stall delay');
});

test('a navigation that stalls twice is not asked for a third time, and times out saying so', async () => {
  const { tabs, driver, STALLED_NAVIGATION_MS } = await driverOver(5);
  const err = await driver.navigate(7, URL_, STALLED_NAVIGATION_MS + 1500, new AbortController().signal).then(
    () => assert.fail('the navigation should time out'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PalisadeError);
  assert.equal(err.code, 'PAL_ERR_TIMEOUT');
  assert.match(err.message, /tab unloaded, no load started, the navigation asked for twice/);
  assert.deepEqual(tabs.updates, [URL_, URL_]);
});

test('a cancelled navigation is not asked for again', async () => {
  const { tabs, driver, STALLED_NAVIGATION_MS } = await driverOver(1);
  const ac = new AbortController();
  setTimeout(() => ac.abort(new PalisadeError('PAL_ERR_TASK_CANCELLED', 'cancelled')), 300);
  await assert.rejects(driver.navigate(7, URL_, 10_000, ac.signal), { code: 'PAL_ERR_TASK_CANCELLED' });
  await new Promise((r) => setTimeout(r, STALLED_NAVIGATION_MS + 700));
  assert.deepEqual(tabs.updates, [URL_]);
});
