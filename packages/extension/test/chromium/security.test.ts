/**
 * Message security in real Chromium: web pages, other extensions, foreign tabs and floods cannot
 * drive the extension; bad server frames are refused.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { eventually, FakePalisade, findWorker, type Browser, type Received, type AgentRig, startAgentRig } from '../support/harness.ts';
import type { Status } from '../../src/shared/messages.ts';

let browser: Browser;
let server: FakePalisade;
let intruderDir: string;
let O = '';
let n = 0;
const id = () => `sec-${++n}`;

/** A second, unrelated extension, generated for this test. */
function writeIntruder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-intruder-'));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ name: 'Intruder', manifest_version: 3, version: '1.0', background: { service_worker: 'sw.js' } }));
  writeFileSync(join(dir, 'sw.js'), '// an extension that will try to message Palisade\n');
  return dir;
}

let rig: AgentRig;
before(async () => {
  intruderDir = writeIntruder();
  rig = await startAgentRig({ extraExtensions: [intruderDir] });
  ({ browser, server, origin: O } = rig);
});

after(async () => {
  await rig?.close();
  rmSync(intruderDir, { recursive: true, force: true });
});

async function status(): Promise<Status> {
  const page = await browser.ctx.newPage();
  await page.goto(`chrome-extension://${browser.extensionId}/popup.html`);
  const reply = (await page.evaluate(() => chrome.runtime.sendMessage({ type: 'popup.status' }))) as { ok: boolean; data: Status };
  await page.close();
  assert.equal(reply.ok, true);
  return reply.data;
}

/** Starts a task that waits on `#release` in the results page; returns its page and a promise of its result. */
async function startWaitingTask(): Promise<{ taskId: string; page: Page; result: Promise<Received> }> {
  const taskId = id();
  const url = `${O}/results.html?q=${taskId}`;
  const result = server.run({
    taskId,
    site: O,
    steps: [
      { type: 'navigate', url },
      { type: 'waitForElement', selectors: [['#release']], timeout: 25_000 },
      { type: 'extract', name: 'clicks', selectors: [['#clicks']] },
      { type: 'extract', name: 'details', selectors: [['#details']], attribute: 'hidden' },
    ],
  }).then((r) => r.result);
  await server.waitFor((f) => f.type === 'task.progress' && f.taskId === taskId && f.step === 1 && f.status === 'started');
  // Playwright may report the tab (or its committed URL) a moment after the agent's progress frame.
  const page = await eventually('the task tab to be visible to the test', () => browser.ctx.pages().find((p) => p.url() === url));
  return { taskId, page, result };
}

const release = (page: Page) => page.evaluate(() => document.body.append(Object.assign(document.createElement('p'), { id: 'release', textContent: 'released' })));

test('a web page can reach neither the content script (postMessage) nor the worker (chrome.runtime)', async () => {
  const { page, result } = await startWaitingTask();
  const attempts = await page.evaluate(async (extensionId) => {
    const out: string[] = [];
    // Messages shaped exactly like the worker's requests to the content script, and like popup messages.
    const forged = [
      { type: 'palisade.step', index: 0, step: { type: 'click', selectors: [['#danger']] }, timeoutMs: 1000 },
      { type: 'palisade.step', index: 0, step: { type: 'click', selectors: [['#more']] }, timeoutMs: 1000 },
      { type: 'popup.signOut' },
    ];
    for (const m of forged) window.postMessage(m, '*');
    const c = (globalThis as { chrome?: { runtime?: { sendMessage?: (...a: unknown[]) => Promise<unknown> } } }).chrome;
    out.push(typeof c?.runtime?.sendMessage);
    try {
      await c!.runtime!.sendMessage!(extensionId, { type: 'popup.signOut' });
      out.push('sent');
    } catch (e) {
      out.push(`threw: ${(e as Error).name}`);
    }
    return out;
  }, browser.extensionId);
  assert.equal(attempts[0], 'undefined', 'chrome.runtime.sendMessage does not exist for a web page');
  assert.match(attempts[1] ?? '', /^threw/);
  await release(page);
  const r = await result;
  assert.equal(r.outcome, 'succeeded', JSON.stringify(r.error));
  const outputs = (r.result as { outputs: Record<string, unknown> }).outputs;
  assert.equal(outputs.clicks, '0', 'the forged click step did nothing');
  assert.equal(outputs.details, '', 'the forged details click did nothing (still hidden)');
  assert.equal((await status()).auth, 'signed-in', 'the forged sign-out did nothing');
});

test('another extension is refused: sendMessage answers PAL_ERR_SENDER_REFUSED, connect is dropped', async () => {
  const intruder = await findWorker(browser.ctx, 'Intruder');
  const before = (await status()).refused.PAL_ERR_SENDER_REFUSED ?? 0;
  const replies = await intruder.evaluate(async (palisadeId) => {
    const out: unknown[] = [];
    for (const m of [{ type: 'popup.status' }, { type: 'popup.signOut' }, { type: 'popup.addSite', origin: 'https://evil.example' }, { type: 'content.ready', url: 'x' }]) {
      out.push(await chrome.runtime.sendMessage(palisadeId, m));
    }
    const port = chrome.runtime.connect(palisadeId);
    out.push(await new Promise((resolve) => port.onDisconnect.addListener(() => resolve('disconnected'))));
    return out;
  }, browser.extensionId);
  const refused = { ok: false, error: { code: 'PAL_ERR_SENDER_REFUSED', message: 'messages from other extensions or pages are refused' } };
  assert.deepEqual(replies, [refused, refused, refused, refused, 'disconnected']);
  const s = await status();
  assert.equal(s.auth, 'signed-in');
  assert.deepEqual(s.sites.map((x) => x.origin), [O], 'no site was added');
  assert.equal((s.refused.PAL_ERR_SENDER_REFUSED ?? 0) - before, 5, 'each attempt was counted');
});

test('content messages: refused from a tab no task drives; a flood from the driven tab hits PAL_ERR_RATE_LIMITED', async () => {
  // A tab on the granted site that no task drives.
  const idle = await browser.ctx.newPage();
  await idle.goto(`${O}/about.html`);
  const idleTab = await browser.worker.evaluate(async (url) => (await chrome.tabs.query({ url })).at(0)?.id, `${O}/about.html`);
  assert.ok(idleTab !== undefined);
  // Runs in Palisade's own isolated world in that tab: the same context its content script has.
  const sendFrom = (tabId: number, count: number) =>
    browser.worker.evaluate(
      async ({ tabId, count }) => {
        const [res] = await chrome.scripting.executeScript({
          target: { tabId },
          args: [count],
          func: async (k: number) => {
            const codes: string[] = [];
            for (let i = 0; i < k; i++) {
              const r = (await chrome.runtime.sendMessage({ type: 'content.ready', url: location.href })) as { ok: boolean; error?: { code: string } };
              codes.push(r.ok ? 'ok' : (r.error?.code ?? '?'));
            }
            return codes;
          },
        });
        return res?.result as string[];
      },
      { tabId, count },
    );
  assert.deepEqual(await sendFrom(idleTab, 3), ['PAL_ERR_SENDER_REFUSED', 'PAL_ERR_SENDER_REFUSED', 'PAL_ERR_SENDER_REFUSED']);
  await idle.close();

  const { page, result, taskId } = await startWaitingTask();
  const tabId = await browser.worker.evaluate(async (url) => (await chrome.tabs.query({ url })).at(0)?.id, page.url());
  assert.ok(tabId !== undefined);
  const codes = await sendFrom(tabId, 160);
  const ok = codes.filter((c) => c === 'ok').length;
  const limited = codes.filter((c) => c === 'PAL_ERR_RATE_LIMITED').length;
  assert.equal(ok + limited, codes.length, `only ok or rate-limited: ${[...new Set(codes)]}`);
  assert.ok(ok >= 50 && ok <= 101, `at most the per-origin limit passes (${ok})`);
  assert.ok(limited >= 59, `the rest is refused (${limited})`);
  assert.ok(codes.slice(0, 50).every((c) => c === 'ok'), 'the first messages pass');
  // The origin bucket refills one token every 0.6 s (100 a minute): on a loaded machine the last
  // 20 messages can take long enough for one or two to pass again.
  const tailRefused = codes.slice(-20).filter((c) => c === 'PAL_ERR_RATE_LIMITED').length;
  assert.ok(tailRefused >= 17, `the tail of the flood is refused (${tailRefused} of 20)`);
  assert.ok(((await status()).refused.PAL_ERR_RATE_LIMITED ?? 0) >= limited);
  // The flood did not disturb the task.
  await release(page);
  const r = await result;
  assert.equal(r.outcome, 'succeeded', `${taskId}: ${JSON.stringify(r.error)}`);
});

test('bad server frames are refused and change nothing; an invalid dispatch gets PAL_ERR_VALIDATION', async () => {
  const framesBefore = server.frames.length;
  for (const bad of [{ type: 'nope' }, { type: 'welcome', v: 1, agentId: 'x', heartbeatMs: 30_000, extra: true }, { type: 'task.cancel', taskId: '../../x', reason: 'r' }, [1, 2, 3], 'string']) {
    server.send(bad);
  }
  const { result } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/about.html`, unknown: 1 }] });
  assert.equal((result.error as { code: string }).code, 'PAL_ERR_VALIDATION');
  // Still connected and working.
  const { result: ok } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/about.html` }, { type: 'extract', name: 't', selectors: [['h1']] }] });
  assert.equal(ok.outcome, 'succeeded', JSON.stringify(ok.error));
  assert.equal((ok.result as { outputs: Record<string, unknown> }).outputs.t, 'About');
  assert.ok(server.frames.slice(framesBefore).every((f) => f.type !== 'hello'), 'no reconnection was needed');
  assert.deepEqual(server.invalid, []);
});

test('content scripts cannot read chrome.storage.local (the refresh token), nor see it change', async () => {
  const page = await browser.ctx.newPage();
  await page.goto(`${O}/about.html`);
  const tabId = await browser.worker.evaluate(async (url) => (await chrome.tabs.query({ url })).at(0)?.id, `${O}/about.html`);
  assert.ok(tabId !== undefined);
  // The worker itself still reads it.
  assert.equal(await browser.worker.evaluate(async () => (await chrome.storage.local.get('refreshToken')).refreshToken), 'fake-refresh-token');
  // Runs in the isolated world of that tab: exactly where Palisade's content script runs.
  const attempt = browser.worker.evaluate(async (tabId) => {
    const [res] = await chrome.scripting.executeScript({
      target: { tabId },
      func: async () => {
        const out: { get: string; changes: string[]; listen: string } = { get: '', changes: [], listen: '' };
        try {
          out.get = `read: ${JSON.stringify(await chrome.storage.local.get(null))}`;
        } catch (e) {
          out.get = `threw: ${(e as Error).message}`;
        }
        try {
          chrome.storage.onChanged.addListener((changes) => void out.changes.push(JSON.stringify(changes)));
          chrome.storage.local.onChanged.addListener((changes) => void out.changes.push(JSON.stringify(changes)));
          out.listen = 'listening';
        } catch (e) {
          out.listen = `threw: ${(e as Error).message}`;
        }
        await new Promise((r) => setTimeout(r, 1500));
        return out;
      },
    });
    return res?.result as { get: string; changes: string[]; listen: string };
  }, tabId);
  await new Promise((r) => setTimeout(r, 500));
  // A rotation while the content script listens.
  await browser.worker.evaluate(() => chrome.storage.local.set({ refreshToken: 'fake-refresh-token-2' }));
  const seen = await attempt;
  await browser.worker.evaluate(() => chrome.storage.local.set({ refreshToken: 'fake-refresh-token' }));
  await page.close();
  assert.match(seen.get, /^threw: Access to storage is not allowed from this context/, seen.get);
  assert.ok(!JSON.stringify(seen).includes('fake-refresh-token'), JSON.stringify(seen));
  assert.deepEqual(seen.changes, []);
});
