/**
 * @module content — the content script, injected on demand into the top document of a tab the
 * runner drives (`chrome.scripting.executeScript({ files: ['content.js'] })`), once per document.
 *
 * It accepts messages only from its own extension's service worker (never from a tab or another
 * extension), checks each against its schema, and runs one of a fixed set of step executors.
 * It never listens to `window.postMessage` and never evaluates anything.
 */
import { PalisadeError, validator } from '@palisade/protocol';
import { ContentRequest, type Reply } from './shared/messages.ts';
import { runStep } from './content/executors.ts';

const request = validator(ContentRequest);
const MARK = Symbol.for('palisade.content');

function errorReply(e: unknown): Reply {
  if (e instanceof PalisadeError) return { ok: false, error: { code: e.code, message: e.message } };
  return { ok: false, error: { code: 'PAL_ERR_STEP_FAILED', message: e instanceof Error ? e.message : String(e) } };
}

function install(): void {
  const g = globalThis as Record<symbol, unknown>;
  if (g[MARK]) return; // already injected in this document
  g[MARK] = true;

  let unloading = false;
  addEventListener('pagehide', () => {
    unloading = true;
  });

  chrome.runtime.onMessage.addListener((message: unknown, sender, sendResponse: (r: Reply) => void) => {
    // Only this extension's service worker (no tab: not another content script, not a page).
    if (sender.id !== chrome.runtime.id || sender.tab !== undefined) {
      sendResponse({ ok: false, error: { code: 'PAL_ERR_SENDER_REFUSED', message: 'refused' } });
      return false;
    }
    if (!request.check(message)) {
      const issue = request.issues(message)[0];
      sendResponse({ ok: false, error: { code: 'PAL_ERR_VALIDATION', message: issue ? `${issue.path} ${issue.message}` : 'invalid request' } });
      return false;
    }
    if (unloading) {
      sendResponse({ ok: false, error: { code: 'PAL_ERR_UNAVAILABLE', message: 'the document is unloading' } });
      return false;
    }
    if (message.type === 'palisade.ping') {
      sendResponse({ ok: true, data: { url: location.href } });
      return false;
    }
    runStep(message.step, message.timeoutMs).then(
      (data) => sendResponse({ ok: true, data: data ?? null }),
      (e: unknown) => sendResponse(errorReply(e)),
    );
    return true; // answers asynchronously
  });

  void chrome.runtime.sendMessage({ type: 'content.ready', url: location.href.slice(0, 8192) }).catch(() => {});
}

install();
