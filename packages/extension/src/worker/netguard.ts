/**
 * @module worker/netguard — keeps a task's tab on the task's site *before* a request leaves the
 * browser, and keeps page-started downloads from landing off the site.
 *
 * 1. Navigation: while a task runs, two `declarativeNetRequest` session rules are scoped to its tab
 *    (`tabIds: [tab]`): an `allow` rule (priority 2) for `|<site>/` (scheme, host and port, anchored
 *    at the start of the URL) and a `block` rule (priority 1) for every other `main_frame` and
 *    `sub_frame` request of that tab. A click, a form submit or a redirect (every hop is checked)
 *    towards another origin is blocked before it is sent, so no request — and no cookie — reaches
 *    the other origin, and a `Content-Disposition: attachment` answer from there never starts. The
 *    tab shows Chrome's "blocked" page at the refused URL, which the runner's `watchTab` check then
 *    reports as `PAL_ERR_URL_REFUSED`. Other tabs are not affected.
 *    Every rule is removed when the task ends; the worker removes all session rules when it starts
 *    (a restarted worker has no running task, so any rule it finds is stale).
 * 2. Downloads: `chrome.downloads` requests are not seen by `declarativeNetRequest`, so downloads
 *    are watched too. A download this extension did not start (a page's), whose chain began on a
 *    running task's site (its URL or its referrer) and whose URL or final URL is on another origin,
 *    is cancelled, its file removed and its entry erased. Downloads of `download` steps are handled
 *    by the driver itself (`worker/tabs.ts`).
 */
import { PalisadeError } from '@palisade/protocol';

/** The part of `chrome.declarativeNetRequest` the guard uses. */
export interface NetRules {
  getSessionRules(): Promise<chrome.declarativeNetRequest.Rule[]>;
  updateSessionRules(options: chrome.declarativeNetRequest.UpdateRuleOptions): Promise<void>;
}

/** The part of `chrome.downloads` the guard uses. */
export interface DownloadsApi {
  search(query: chrome.downloads.DownloadQuery): Promise<chrome.downloads.DownloadItem[]>;
  cancel(id: number): Promise<void>;
  removeFile(id: number): Promise<void>;
  erase(query: chrome.downloads.DownloadQuery): Promise<number[]>;
}

/** Priorities: the site's allow rule wins over the tab's block rule. */
const ALLOW_PRIORITY = 2;
const BLOCK_PRIORITY = 1;
/** Requests that replace a document in the tab (the top one or a frame's). */
const NAVIGATIONS = ['main_frame', 'sub_frame'] as chrome.declarativeNetRequest.ResourceType[];

/** The two session rules that keep `tabId` on `site` (an origin: `scheme://host[:port]`). */
export function siteRules(tabId: number, site: string, firstId: number): chrome.declarativeNetRequest.Rule[] {
  const origin = new URL(site).origin;
  if (origin !== site || !/^https?:\/\/[^/*|^]+$/.test(origin)) throw new PalisadeError('PAL_ERR_VALIDATION', `not an http(s) origin: ${site}`);
  return [
    {
      id: firstId,
      priority: ALLOW_PRIORITY,
      action: { type: 'allow' },
      // `|` anchors at the start; the trailing slash ends the authority, so neither
      // `https://site.example.evil` nor `https://site.example:8443` matches `https://site.example`.
      condition: { urlFilter: `|${origin}/`, tabIds: [tabId], resourceTypes: NAVIGATIONS },
    },
    {
      id: firstId + 1,
      priority: BLOCK_PRIORITY,
      action: { type: 'block' },
      condition: { tabIds: [tabId], resourceTypes: NAVIGATIONS },
    },
  ];
}

/** Removes a download: cancels it, deletes what was written, erases its entry. Never throws. */
export async function discardDownload(api: DownloadsApi, id: number): Promise<void> {
  await api.cancel(id).catch(() => {});
  const [item] = await api.search({ id }).catch(() => [] as chrome.downloads.DownloadItem[]);
  // removeFile works on completed downloads; a cancelled one has had its partial file deleted.
  if (item && item.state === 'complete' && item.exists !== false) await api.removeFile(id).catch(() => {});
  await api.erase({ id }).catch(() => []);
}

/** Whether `url` is on `site` (same origin); false for anything that does not parse. */
export function onSite(url: string | undefined, site: string): boolean {
  if (url === undefined || url === '') return true; // not known yet
  try {
    return new URL(url).origin === site;
  } catch {
    return false;
  }
}

/** Session rules per task tab, and the page-download guard. */
export class NetGuard {
  readonly #rules: NetRules;
  readonly #downloads: DownloadsApi;
  readonly #selfId: string;
  readonly #log: (event: string, detail?: Record<string, unknown>) => void;
  /** Guarded tab → its site and rule ids. */
  readonly #tabs = new Map<number, { site: string; ids: number[] }>();
  #nextId = 1;
  /** Stale rules are gone once this settles; every change waits for it. */
  readonly ready: Promise<void>;

  constructor(deps: { rules: NetRules; downloads: DownloadsApi; extensionId: string; log?: (event: string, detail?: Record<string, unknown>) => void }) {
    this.#rules = deps.rules;
    this.#downloads = deps.downloads;
    this.#selfId = deps.extensionId;
    this.#log = deps.log ?? (() => {});
    this.ready = this.#clearStale();
  }

  async #clearStale(): Promise<void> {
    const stale = await this.#rules.getSessionRules().catch(() => []);
    if (stale.length > 0) {
      await this.#rules.updateSessionRules({ removeRuleIds: stale.map((r) => r.id) }).catch(() => {});
      this.#log('netguard.stale', { removed: stale.length });
    }
  }

  /** Blocks every navigation of `tabId` that leaves `site`; resolves once the rules are in force. */
  async guard(tabId: number, site: string): Promise<() => Promise<void>> {
    await this.ready;
    await this.release(tabId);
    const rules = siteRules(tabId, site, this.#nextId);
    this.#nextId += rules.length;
    try {
      await this.#rules.updateSessionRules({ addRules: rules });
    } catch (e) {
      throw new PalisadeError('PAL_ERR_INTERNAL', `could not restrict the task's tab to its site: ${(e as Error).message}`);
    }
    this.#tabs.set(tabId, { site, ids: rules.map((r) => r.id) });
    return () => this.release(tabId);
  }

  /** Removes the rules of `tabId` (when its task ends or the tab closes). */
  async release(tabId: number): Promise<void> {
    const entry = this.#tabs.get(tabId);
    if (!entry) return;
    this.#tabs.delete(tabId);
    await this.#rules.updateSessionRules({ removeRuleIds: entry.ids }).catch((e: unknown) => this.#log('netguard.release.failed', { message: (e as Error).message }));
  }

  /** Sites of the guarded tabs (tasks running now). */
  sites(): Set<string> {
    return new Set([...this.#tabs.values()].map((t) => t.site));
  }

  /**
   * A download was created or changed (`chrome.downloads.onCreated` / `onChanged` with a new URL):
   * discards it when a page of a running task's site started it and it leaves that site.
   */
  async inspect(item: Pick<chrome.downloads.DownloadItem, 'id' | 'url' | 'finalUrl' | 'referrer' | 'byExtensionId'>): Promise<boolean> {
    if (item.byExtensionId === this.#selfId) return false; // a `download` step: the driver checks it
    for (const site of this.sites()) {
      const fromSite = originOf(item.url) === site || originOf(item.referrer) === site;
      if (!fromSite) continue;
      if (onSite(item.url, site) && onSite(item.finalUrl, site)) continue;
      this.#log('download.offsite', { id: item.id, site });
      await discardDownload(this.#downloads, item.id);
      return true;
    }
    return false;
  }

  /** Registers the download listeners. Call once, at the worker's top level. */
  listen(events: { onCreated: chrome.events.Event<(item: chrome.downloads.DownloadItem) => void>; onChanged: chrome.events.Event<(delta: chrome.downloads.DownloadDelta) => void> }): void {
    events.onCreated.addListener((item) => void this.inspect(item));
    events.onChanged.addListener((delta) => {
      if (delta.url === undefined && delta.finalUrl === undefined) return;
      if (this.#tabs.size === 0) return;
      void this.#downloads.search({ id: delta.id }).then(([item]) => (item ? this.inspect(item) : false), () => false);
    });
  }
}

function originOf(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}
