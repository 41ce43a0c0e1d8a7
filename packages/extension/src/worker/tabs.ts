/**
 * @module worker/tabs — Chrome's `PageDriver`: tabs, navigation, the content script, screenshots
 * and downloads. Adapter code: the only worker module besides `background.ts` that calls `chrome.*`
 * for the runner.
 */
import { PalisadeError, isErrorCode } from '@palisade/protocol';
import type { Reply, StepRequest } from '../shared/messages.ts';
import { discardDownload, onSite, type NetGuard } from './netguard.ts';
import type { PageDriver } from './runner.ts';

/** After an action step, how long a navigation it caused may take to start. */
export const SETTLE_MS = 150;
/** A page step is retried at most this many times when its document went away under it. */
const MAX_DOCUMENT_RETRIES = 3;
/**
 * A navigation Chrome accepted but has not started after this long is asked for once more. Not
 * sooner: a background tab may sit "unloaded" for seconds before its navigation starts, and asking
 * again then (2 s was tried) made Playwright lose sight of the tab in the offsite tests.
 */
export const STALLED_NAVIGATION_MS = 10_000;

type TabListener = (tabId: number, info: chrome.tabs.OnUpdatedInfo, tab: chrome.tabs.Tab) => void;

/** Tab events fanned out per tab, registered once at the worker's top level. */
class TabEvents {
  readonly #updated = new Set<TabListener>();
  readonly #removed = new Set<(tabId: number) => void>();
  constructor() {
    chrome.tabs.onUpdated.addListener((tabId, info, tab) => {
      for (const l of this.#updated) l(tabId, info, tab);
    });
    chrome.tabs.onRemoved.addListener((tabId) => {
      for (const l of this.#removed) l(tabId);
    });
  }
  onUpdated(l: TabListener): () => void {
    this.#updated.add(l);
    return () => this.#updated.delete(l);
  }
  onRemoved(l: (tabId: number) => void): () => void {
    this.#removed.add(l);
    return () => this.#removed.delete(l);
  }
}

/** Waits until the tab has loaded a document that started loading after this call. */
function waitForLoad(events: TabEvents, tabId: number, timeoutMs: number, signal: AbortSignal, targetUrl: string | undefined, stalledMs: number): { promise: Promise<void>; cancel: () => void } {
  let cancel = () => {};
  const promise = new Promise<void>((resolve, reject) => {
    let sawLoading = false;
    const done = (err?: unknown) => {
      offUpdated();
      offRemoved();
      clearTimeout(timer);
      clearInterval(poll);
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const offUpdated = events.onUpdated((id, info) => {
      if (id !== tabId) return;
      if (info.status === 'loading') sawLoading = true;
      if (info.status === 'complete' && sawLoading) done();
    });
    const offRemoved = events.onRemoved((id) => {
      if (id === tabId) done(new PalisadeError('PAL_ERR_STEP_FAILED', 'the tab was closed while loading'));
    });
    const timer = setTimeout(() => {
      const timeout = (state: string) => done(new PalisadeError('PAL_ERR_TIMEOUT', `the page did not finish loading within ${timeoutMs} ms (${state})`));
      chrome.tabs.get(tabId).then(
        (t) =>
          timeout(
            `tab ${t.status ?? 'unknown'}${sawLoading ? '' : ', no load started'}${t.pendingUrl ? ', a navigation pending' : ''}` +
              `${t.discarded ? ', discarded' : ''}${askedAgain ? ', the navigation asked for twice' : ''}`,
          ),
        () => timeout('the tab is gone'),
      );
    }, timeoutMs);
    const since = Date.now();
    let askedAgain = false;
    const poll = setInterval(() => {
      if (targetUrl === undefined) return;
      chrome.tabs.get(tabId).then((t) => {
        // Same-document navigations (only the fragment changes) may not report "loading".
        if (t.status === 'complete' && t.pendingUrl === undefined && t.url === targetUrl) return done();
        // Rarely, headless Chromium accepts a navigation of a background tab and never starts it: the
        // tab stays "unloaded", nothing pending, no "loading" event. Nothing has been fetched, so
        // asking once more is safe; the timeout still bounds the wait.
        if (!askedAgain && !sawLoading && t.status === 'unloaded' && t.pendingUrl === undefined && Date.now() - since >= stalledMs) {
          askedAgain = true;
          chrome.tabs.update(tabId, { url: targetUrl }).catch(() => {});
        }
      }, () => {});
    }, 500);
    const onAbort = () => done(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    cancel = () => done();
  });
  return { promise, cancel };
}

/** The origin of `url` for a message, or a bounded piece of it. */
function originOrText(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url.slice(0, 100);
  }
}

function isGoneError(e: unknown): boolean {
  const m = e instanceof Error ? e.message : String(e);
  return /Receiving end does not exist|message port closed|message channel closed|No tab with id|Frame with ID 0 was removed|document.*(unload|gone)/i.test(m);
}

/** Creates Chrome's driver. Call once, at the worker's top level (it registers tab listeners). */
export function chromeDriver(guard?: NetGuard, o: { stalledNavigationMs?: number } = {}): PageDriver {
  const stalledMs = o.stalledNavigationMs ?? STALLED_NAVIGATION_MS;
  const events = new TabEvents();
  // A closed tab's rules go with it (the task's own cleanup removes them too).
  if (guard) events.onRemoved((id) => void guard.release(id));

  /** Resolves once the tab's current document has finished loading. */
  async function waitUntilComplete(tabId: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      signal.throwIfAborted();
      const tab = await chrome.tabs.get(tabId);
      if (tab.status !== 'loading') return;
      if (Date.now() > until) throw new PalisadeError('PAL_ERR_TIMEOUT', `the page did not finish loading within ${timeoutMs} ms`);
      await nextEvent(tabId, (info) => info.status === 'complete', 250, signal);
    }
  }

  /** Resolves at the next matching update of the tab, or after `ms`. */
  function nextEvent(tabId: number, match: (info: chrome.tabs.OnUpdatedInfo) => boolean, ms: number, signal: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const end = (hit: boolean) => {
        off();
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(hit);
      };
      const off = events.onUpdated((id, info) => {
        if (id === tabId && match(info)) end(true);
      });
      const timer = setTimeout(() => end(false), ms);
      const onAbort = () => end(false);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async function ensureInjected(tabId: number): Promise<void> {
    try {
      const pong = (await chrome.tabs.sendMessage(tabId, { type: 'palisade.ping' }, { frameId: 0 })) as Reply | undefined;
      if (pong?.ok) return;
    } catch (e) {
      if (!isGoneError(e)) throw e;
    }
    await chrome.scripting.executeScript({ target: { tabId, frameIds: [0] }, files: ['content.js'] });
  }

  /** Runs a page step in the tab's top document, again in the new document when a navigation replaced it. */
  async function runPageStep(tabId: number, request: StepRequest, signal: AbortSignal): Promise<unknown> {
    const deadline = Date.now() + request.timeoutMs;
    for (let attempt = 0; ; attempt++) {
      signal.throwIfAborted();
      await waitUntilComplete(tabId, Math.max(1000, deadline - Date.now()), signal);
      await ensureInjected(tabId);
      let reply: Reply | undefined;
      try {
        const remaining = Math.max(0, deadline - Date.now());
        reply = (await chrome.tabs.sendMessage(tabId, { ...request, timeoutMs: remaining } satisfies StepRequest, { frameId: 0 })) as Reply | undefined;
      } catch (e) {
        // The document went away under the step (a navigation): run it again in the new one.
        if (isGoneError(e) && attempt < MAX_DOCUMENT_RETRIES) continue;
        throw new PalisadeError('PAL_ERR_STEP_FAILED', `the page did not answer: ${(e as Error).message}`);
      }
      if (reply === undefined) {
        if (attempt < MAX_DOCUMENT_RETRIES) continue;
        throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the page did not answer');
      }
      if (reply.ok) return reply.data;
      if (reply.error.code === 'PAL_ERR_UNAVAILABLE' && attempt < MAX_DOCUMENT_RETRIES) continue; // document unloading
      throw new PalisadeError(isErrorCode(reply.error.code) ? reply.error.code : 'PAL_ERR_STEP_FAILED', String(reply.error.message).slice(0, 2000));
    }
  }

  return {
    async openTab(signal) {
      const tab = await chrome.tabs.create({ url: 'about:blank', active: false });
      if (tab.id === undefined) throw new PalisadeError('PAL_ERR_STEP_FAILED', 'Chrome did not create a tab');
      await waitUntilComplete(tab.id, 10_000, signal); // the initial about:blank must not be taken for the first navigation
      return tab.id;
    },

    async closeTab(tabId) {
      await chrome.tabs.remove(tabId).catch(() => {});
    },

    async navigate(tabId, url, timeoutMs, signal) {
      const w = waitForLoad(events, tabId, timeoutMs, signal, url, stalledMs);
      try {
        await chrome.tabs.update(tabId, { url });
      } catch (e) {
        w.cancel();
        throw new PalisadeError('PAL_ERR_STEP_FAILED', `navigation failed: ${(e as Error).message}`);
      }
      await w.promise;
    },

    async tabUrl(tabId) {
      try {
        const tab = await chrome.tabs.get(tabId);
        return tab.pendingUrl ?? tab.url;
      } catch {
        return undefined;
      }
    },

    async setViewport(tabId, width, height) {
      const tab = await chrome.tabs.get(tabId);
      await chrome.windows.update(tab.windowId, { width, height });
    },

    runPageStep,

    async settle(tabId, expect, timeoutMs, signal) {
      // Let a navigation the action caused start (it is reported as "loading"); then wait for its document.
      let started = false;
      const off = events.onUpdated((id, info) => {
        if (id === tabId && info.status === 'loading') started = true;
      });
      try {
        const until = Date.now() + (expect ? timeoutMs : SETTLE_MS);
        while (!started && Date.now() < until) {
          if ((await chrome.tabs.get(tabId)).status === 'loading') started = true;
          else await nextEvent(tabId, (info) => info.status === 'loading', Math.min(expect ? 250 : SETTLE_MS, Math.max(1, until - Date.now())), signal);
          signal.throwIfAborted();
        }
        if (!started && expect) throw new PalisadeError('PAL_ERR_TIMEOUT', `the expected navigation did not happen within ${timeoutMs} ms`);
        if (started) await waitUntilComplete(tabId, timeoutMs, signal);
      } finally {
        off();
      }
    },

    async screenshot(tabId, request, signal) {
      const started = Date.now();
      const tab = await chrome.tabs.update(tabId, { active: true });
      if (!tab) throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the tab is gone');
      let refusal: string;
      try {
        return await chrome.tabs.captureVisibleTab(tab.windowId, { format: 'png' });
      } catch (e) {
        refusal = (e as Error).message;
      }
      // Chrome captures only with <all_urls> or an activeTab grant (the user clicked the toolbar
      // button); Palisade holds neither by design, so the content script draws the page instead.
      try {
        const timeoutMs = Math.max(0, request.timeoutMs - (Date.now() - started));
        const dataUrl = await runPageStep(tabId, { ...request, timeoutMs }, signal);
        if (typeof dataUrl !== 'string') throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the page did not return an image');
        return dataUrl;
      } catch (e) {
        if (!(e instanceof PalisadeError) || e.code === 'PAL_ERR_TASK_CANCELLED' || e.code === 'PAL_ERR_TASK_EXPIRED' || e.code === 'PAL_ERR_URL_REFUSED') throw e;
        throw new PalisadeError(e.code, `Chrome refused to capture the tab (${refusal}), and drawing the page in the content script failed: ${e.message}`);
      }
    },

    async guardTab(tabId, site) {
      if (!guard) throw new PalisadeError('PAL_ERR_INTERNAL', 'no navigation guard');
      return guard.guard(tabId, site);
    },

    async download(url, filename, timeoutMs, signal, site) {
      let id: number;
      try {
        id = await chrome.downloads.download({ url, filename, conflictAction: 'uniquify', saveAs: false });
      } catch (e) {
        throw new PalisadeError('PAL_ERR_STEP_FAILED', `Chrome refused the download: ${(e as Error).message}`);
      }
      const item = await new Promise<chrome.downloads.DownloadItem>((resolve, reject) => {
        let settled = false;
        const finish = (err: unknown, it?: chrome.downloads.DownloadItem) => {
          if (settled) return;
          settled = true;
          chrome.downloads.onChanged.removeListener(onChanged);
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          if (err !== undefined || !it) {
            // Whatever went wrong, nothing of this download stays on disk or in the list.
            void discardDownload(chrome.downloads, id);
            reject(err);
          } else resolve(it);
        };
        const offSite = (u: string | undefined) => u !== undefined && u !== '' && !onSite(u, site);
        const refuse = (u: string) => finish(new PalisadeError('PAL_ERR_URL_REFUSED', `the download was redirected off the task's site (to ${originOrText(u)}); it was cancelled and removed`));
        const check = async () => {
          const [it] = await chrome.downloads.search({ id });
          if (!it) return finish(new PalisadeError('PAL_ERR_STEP_FAILED', 'the download vanished'));
          // As soon as Chrome knows where the download really comes from (before it is saved when it can).
          if (offSite(it.finalUrl)) return refuse(it.finalUrl);
          if (it.state === 'complete') return finish(undefined, it);
          if (it.state === 'interrupted') return finish(new PalisadeError('PAL_ERR_STEP_FAILED', `the download was interrupted (${it.error ?? 'unknown reason'})`));
        };
        const onChanged = (delta: chrome.downloads.DownloadDelta) => {
          if (delta.id !== id) return;
          if (offSite(delta.finalUrl?.current)) return refuse(delta.finalUrl!.current!);
          if (delta.state !== undefined || delta.error !== undefined || delta.finalUrl !== undefined) void check();
        };
        const timer = setTimeout(() => finish(new PalisadeError('PAL_ERR_TIMEOUT', `the download did not finish within ${timeoutMs} ms`)), timeoutMs);
        const onAbort = () => finish(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        chrome.downloads.onChanged.addListener(onChanged);
        void check();
      });
      const finalUrl = item.finalUrl || item.url;
      const base = item.filename.split(/[\\/]/).pop() ?? '';
      return { id, filename: base, finalUrl, bytes: item.fileSize >= 0 ? item.fileSize : item.bytesReceived, mimeType: item.mime || undefined };
    },

    discardDownload(id) {
      return discardDownload(chrome.downloads, id);
    },

    watchTab(tabId, cb) {
      const offUpdated = events.onUpdated((id, info) => {
        if (id === tabId && info.url !== undefined) cb(info.url);
      });
      const offRemoved = events.onRemoved((id) => {
        if (id === tabId) cb(undefined);
      });
      return () => {
        offUpdated();
        offRemoved();
      };
    },
  };
}
