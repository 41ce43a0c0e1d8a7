/**
 * The real service worker in real headless Chromium, driven through its real agent protocol by a
 * fake Palisade server: Recorder flows, extraction, assertions, refusals, downloads, screenshots.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { eventually, FakePalisade, tabUrls, type Browser, type Received, type AgentRig, startAgentRig } from '../support/harness.ts';
import { PNG_SIGNATURE, decodePng, pngBytes, pngSize, type DecodedPng } from '../support/png.ts';

let rig: AgentRig;
let browser: Browser;
let server: FakePalisade;
let O = '';
let LOCALHOST = '';
let n = 0;
const id = () => `task-${++n}`;

before(async () => {
  // localhost is in the stored list too (as if stale), but Chrome holds no permission for it.
  rig = await startAgentRig({ storedSites: (origin, localhost) => [origin, localhost] });
  ({ browser, server, origin: O, localhost: LOCALHOST } = rig);
});

after(async () => rig?.close());

const errorOf = (r: Received) => r.error as { code: string; message: string; step?: number } | undefined;
const outputsOf = (r: Received) => (r.result as { outputs: Record<string, unknown> }).outputs;

test('the agent connects with the bearer subprotocol and reports only sites Chrome really granted', async () => {
  const hello = await server.waitFor((f) => f.type === 'hello');
  assert.equal(hello.v, 1);
  assert.deepEqual(hello.grants, [O], 'localhost is stored but not granted, so not reported');
  assert.equal((hello.agent as { name: string }).name, 'Palisade');
  assert.deepEqual(server.tokens, ['fake-access-token']);
  assert.deepEqual(server.origins, [`chrome-extension://${browser.extensionId}`]);
  assert.deepEqual(server.invalid, [], 'every frame the agent sent matches AgentFrame');
});

test('a Recorder flow runs: navigate, change, Enter, waitForElement, clicks by aria/ xpath/ pierce/ text/, extract', async () => {
  const flow = {
    title: 'Search the fixture shop',
    steps: [
      { type: 'setViewport', width: 1024, height: 768, deviceScaleFactor: 1, isMobile: false, hasTouch: false, isLandscape: false },
      { type: 'navigate', url: `${O}/search.html`, assertedEvents: [{ type: 'navigation', url: `${O}/search.html`, title: 'Fixture search' }] },
      { type: 'click', target: 'main', selectors: [['aria/Search products'], ['#q']], offsetY: 9, offsetX: 40 },
      { type: 'change', value: 'lamp', selectors: [['aria/Search products'], ['#q']], target: 'main' },
      { type: 'keyDown', target: 'main', key: 'Enter' },
      { type: 'keyUp', target: 'main', key: 'Enter' },
      { type: 'waitForElement', selectors: [['li.result']], count: 3, operator: '==' },
      { type: 'click', target: 'main', selectors: [['aria/Show details[role="button"]']], offsetX: 5, offsetY: 5 },
      { type: 'waitForElement', selectors: [['#details']], visible: true },
      { type: 'click', target: 'main', selectors: [['#no-such-element'], ['xpath///*[@id="danger"]']], offsetX: 5, offsetY: 5 },
      { type: 'click', target: 'main', selectors: [['pierce/#shadow-btn']] },
      { type: 'click', target: 'main', selectors: [['#frame', 'text/Frame button']] },
      { type: 'extract', name: 'rows', selectors: [['li.result']], all: true, fields: { name: { selector: '.name' }, price: { selector: '.price' }, currency: { selector: '.price', attribute: 'data-currency' }, link: { selector: 'a', attribute: 'href' } } },
      { type: 'extract', name: 'query', selectors: [['#query']] },
      { type: 'extract', name: 'clicks', selectors: [['#clicks']] },
      { type: 'extract', name: 'shadow', selectors: [['#widget-host', '#shadow-out']] },
      { type: 'extract', name: 'frame', selectors: [['#frame', '#frame-out']] },
      { type: 'extract', name: 'names', selectors: [['.name']], all: true, limit: 2 },
      { type: 'assert', selectors: [['#query']], text: 'lamp' },
    ],
  };
  const taskId = id();
  const { result, frames } = await server.run({ taskId, site: O, steps: flow.steps });
  assert.equal(result.outcome, 'succeeded', JSON.stringify(result.error));
  const out = outputsOf(result);
  const link = (name: string) => `${O}/item.html?name=${encodeURIComponent(name)}`;
  assert.deepEqual(out.rows, [
    { name: 'lamp basic', price: '10.00', currency: 'EUR', link: link('lamp basic') },
    { name: 'lamp deluxe', price: '25.50', currency: 'EUR', link: link('lamp deluxe') },
    { name: 'lamp ultimate', price: '99.99', currency: 'EUR', link: link('lamp ultimate') },
  ]);
  assert.equal(out.query, 'You searched for: lamp');
  assert.equal(out.clicks, '1', 'the xpath/ click reached #danger exactly once');
  assert.equal(out.shadow, 'shadow clicked', 'the pierce/ click reached the button in the shadow root');
  assert.equal(out.frame, 'frame clicked', 'the chained text/ click reached the button in the iframe');
  assert.deepEqual(out.names, ['lamp basic', 'lamp deluxe']);
  // The wire: accept, then started/done for every step in order, then the result.
  const expected = ['task.accept', ...flow.steps.flatMap((s, i) => [`started:${i}:${s.type}`, `done:${i}:${s.type}`]), 'task.result'];
  assert.deepEqual(frames.map((f) => (f.type === 'task.progress' ? `${f.status}:${f.step}:${f.stepType}` : f.type)), expected);
  const timings = (result.result as { timings: { totalMs: number; steps: { index: number; type: string; ms: number }[] } }).timings;
  assert.equal(timings.steps.length, flow.steps.length);
  assert.ok(timings.totalMs > 0);
  assert.deepEqual(server.invalid, []);
  // The task's tab is closed at the end.
  assert.ok(!(await tabUrls(browser.worker)).some((u) => u.startsWith(O)), 'no fixture tab left open');
});

test('a failing assert gives PAL_ERR_ASSERTION_FAILED at that step', async () => {
  const steps = [
    { type: 'navigate', url: `${O}/about.html` },
    { type: 'assert', selectors: [['#about-text']], text: 'small fixture' },
    { type: 'assert', selectors: [['#about-text']], text: 'this text is not there', timeout: 500 },
  ];
  const { result } = await server.run({ taskId: id(), site: O, steps });
  assert.equal(result.outcome, 'failed');
  assert.equal(errorOf(result)?.code, 'PAL_ERR_ASSERTION_FAILED');
  assert.equal(errorOf(result)?.step, 2);
  assert.match(errorOf(result)?.message ?? '', /#about-text/);
  const { result: r2 } = await server.run({ taskId: id(), site: O, steps: [steps[0], { type: 'assert', selectors: [['h1']], exists: false, timeout: 300 }] });
  assert.equal(errorOf(r2)?.code, 'PAL_ERR_ASSERTION_FAILED');
});

test('a step whose element never appears fails with PAL_ERR_STEP_FAILED naming the selectors; waitForElement with PAL_ERR_TIMEOUT', async () => {
  const { result } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/about.html` }, { type: 'click', selectors: [['#missing'], ['aria/Nothing']], timeout: 300 }] });
  assert.equal(errorOf(result)?.code, 'PAL_ERR_STEP_FAILED');
  assert.match(errorOf(result)?.message ?? '', /"#missing".*"aria\/Nothing"/);
  const { result: r2 } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/about.html` }, { type: 'waitForElement', selectors: [['.never']], timeout: 300 }] });
  assert.equal(errorOf(r2)?.code, 'PAL_ERR_TIMEOUT');
});

test('navigate to javascript:, data:, file:, chrome: is refused with PAL_ERR_URL_REFUSED and no tab goes there', async () => {
  const tabsBefore = await tabUrls(browser.worker);
  for (const url of ['javascript:alert(document.cookie)', 'data:text/html,<h1>x</h1>', 'file:///etc/passwd', 'chrome://settings', 'chrome-extension://abc/x.html', `${LOCALHOST}/search.html`]) {
    const taskId = id();
    const { result, frames } = await server.run({ taskId, site: O, steps: [{ type: 'navigate', url: `${O}/search.html` }, { type: 'navigate', url }] });
    assert.equal(result.outcome, 'failed', url);
    assert.equal(errorOf(result)?.code, 'PAL_ERR_URL_REFUSED', url);
    assert.deepEqual(frames.map((f) => f.type), ['task.result'], `${url}: refused before accepting, no step ran`);
  }
  const tabsAfter = await tabUrls(browser.worker);
  assert.deepEqual(tabsAfter, tabsBefore, 'no tab was opened or navigated');
});

test('a click that navigates off the site fails with PAL_ERR_URL_REFUSED and the tab is closed', async () => {
  const { result } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/search.html` }, { type: 'click', selectors: [['#away']] }, { type: 'extract', name: 'x', selectors: [['body']] }] });
  assert.equal(errorOf(result)?.code, 'PAL_ERR_URL_REFUSED');
  assert.equal(errorOf(result)?.step, 1);
  assert.equal(outputsOf(result).x, undefined, 'nothing was read from the other site');
  assert.ok(!(await tabUrls(browser.worker)).some((u) => u.includes('localhost')), 'the off-site tab is gone');
});

test('a task for a site not granted (localhost) is refused with PAL_ERR_SITE_NOT_GRANTED without touching a tab', async () => {
  const tabsBefore = await tabUrls(browser.worker);
  const { result, frames } = await server.run({ taskId: id(), site: LOCALHOST, steps: [{ type: 'navigate', url: `${LOCALHOST}/search.html` }] });
  assert.equal(errorOf(result)?.code, 'PAL_ERR_SITE_NOT_GRANTED');
  assert.deepEqual(frames.map((f) => f.type), ['task.result']);
  assert.deepEqual(await tabUrls(browser.worker), tabsBefore);
});

test('waitForExpression and customStep are refused with PAL_ERR_STEP_REFUSED', async () => {
  for (const step of [{ type: 'waitForExpression', expression: 'document.title === "x"' }, { type: 'customStep', name: 'run', parameters: { code: 'alert(1)' } }]) {
    const { result, frames } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/search.html` }, step] });
    assert.equal(errorOf(result)?.code, 'PAL_ERR_STEP_REFUSED', step.type);
    assert.deepEqual(frames.map((f) => f.type), ['task.result']);
  }
});

test('download: saved under palisade/ with a sanitised name, reported with its size', async () => {
  const dir = join(browser.downloadDir, 'palisade');
  const steps = [
    { type: 'navigate', url: `${O}/results.html?q=x` },
    // The link's download attribute is "../../report:final?.txt".
    { type: 'download', name: 'report', selectors: [['#file']] },
    { type: 'download', name: 'again', url: `${O}/files/report%20final.txt`, filename: '../../etc/CON.txt' },
    { type: 'download', name: 'third', url: `${O}/files/report%20final.txt`, filename: '..\\..\\etc\\CON.txt' },
  ];
  const { result } = await server.run({ taskId: id(), site: O, steps });
  assert.equal(result.outcome, 'succeeded', JSON.stringify(result.error));
  const artifacts = (result.result as { artifacts: { name: string; kind: string; filename: string; bytes: number; mimeType?: string }[] }).artifacts;
  const content = readFileSync(join(fixtures_dir(), 'files', 'report final.txt'));
  assert.deepEqual(artifacts.map((a) => [a.name, a.kind, a.filename, a.bytes]), [
    ['report', 'download', 'report_final_.txt', content.length],
    ['again', 'download', 'etc_CON.txt', content.length],
    ['third', 'download', 'etc_CON (1).txt', content.length],
  ]);
  assert.equal(artifacts[0]?.mimeType, 'text/plain');
  assert.deepEqual(readdirSync(dir).sort(), ['etc_CON (1).txt', 'etc_CON.txt', 'report_final_.txt']);
  assert.deepEqual(readFileSync(join(dir, 'report_final_.txt')), content);
  assert.ok(!existsSync(join(browser.downloadDir, 'etc')), 'nothing escaped the palisade folder');
});

test('a download URL off the site is refused before anything is fetched', async () => {
  const { result } = await server.run({ taskId: id(), site: O, steps: [{ type: 'download', name: 'x', url: `${LOCALHOST}/files/report%20final.txt` }] });
  assert.equal(errorOf(result)?.code, 'PAL_ERR_URL_REFUSED');
});

test('screenshot: Chrome refuses captureVisibleTab here, so the content script draws the viewport into a PNG', async () => {
  // This build holds neither <all_urls> nor an activeTab grant: Chrome's capture is refused.
  const refusal = await browser.worker.evaluate(() => chrome.tabs.captureVisibleTab({ format: 'png' }).then(() => 'captured', (e: Error) => e.message));
  assert.notEqual(refusal, 'captured');
  const steps = [
    { type: 'navigate', url: `${O}/shot.html` },
    { type: 'extract', name: 'viewport', selectors: [['#size']] },
    { type: 'change', value: 'Ada', selectors: [['#name']] },
    { type: 'screenshot', name: 'top' },
    { type: 'scroll', x: 0, y: 1400 },
    { type: 'screenshot', name: 'scrolled' },
  ];
  const { result } = await server.run({ taskId: id(), site: O, steps });
  assert.equal(result.outcome, 'succeeded', JSON.stringify(result.error));
  const [vw, vh] = String(outputsOf(result).viewport).split('x').map(Number) as [number, number];
  assert.ok(vw > 600 && vh > 300, `viewport ${vw}x${vh}`);
  const artifacts = (result.result as { artifacts: { name: string; kind: string; mimeType: string; bytes: number; dataUrl: string }[] }).artifacts;
  assert.deepEqual(artifacts.map((a) => [a.name, a.kind, a.mimeType]), [['top', 'screenshot', 'image/png'], ['scrolled', 'screenshot', 'image/png']]);
  const [top, scrolled] = artifacts.map((a) => {
    const bytes = pngBytes(a.dataUrl);
    assert.ok(bytes.subarray(0, 8).equals(PNG_SIGNATURE), 'PNG signature');
    assert.deepEqual(pngSize(bytes), { width: vw, height: vh }, 'the image is the viewport, at device pixel ratio 1');
    assert.ok(Math.abs(a.bytes - bytes.length) <= 2, `bytes ${a.bytes} ≈ ${bytes.length}`);
    return decodePng(bytes);
  }) as [DecodedPng, DecodedPng];
  const near = (img: DecodedPng, x: number, y: number, rgb: [number, number, number], what: string) => {
    const [r, g, b] = img.pixel(x, y);
    assert.ok(Math.abs(r - rgb[0]) <= 8 && Math.abs(g - rgb[1]) <= 8 && Math.abs(b - rgb[2]) <= 8, `${what} at (${x}, ${y}): got rgb(${r}, ${g}, ${b}), want rgb(${rgb.join(', ')})`);
  };
  const RED: [number, number, number] = [255, 0, 0];
  const WHITE: [number, number, number] = [255, 255, 255];
  const GREEN: [number, number, number] = [0, 160, 0];
  near(top, 100, 100, RED, 'the red block');
  near(top, 45, 65, RED, 'the red block, near its corner');
  near(top, 36, 100, WHITE, 'left of the red block');
  near(top, 205, 155, [255, 0, 255], 'the ::before box');
  near(top, 330, 90, [255, 255, 0], 'the same-origin image, inlined');
  near(top, 430, 90, WHITE, 'the cross-origin image, left blank');
  near(top, 530, 90, [0, 255, 255], 'the box in the closed shadow root');
  near(top, vw - 50, 20, GREEN, 'the fixed bar');
  let dark = 0;
  for (let y = 16; y < 56; y++) for (let x = 8; x < 300; x++) if (top.pixel(x, y).slice(0, 3).every((c) => c < 96)) dark++;
  assert.ok(dark > 200, `the heading's text is drawn (${dark} dark pixels)`);
  // Scrolled by 1400 px: the blue block (top 1500) is 100 px down, the fixed bar stays, the red block is gone.
  near(scrolled, 400, 160, [0, 0, 255], 'the blue block after scrolling');
  near(scrolled, vw - 50, 20, GREEN, 'the fixed bar after scrolling');
  near(scrolled, 100, 100, WHITE, 'where the red block was');
  assert.deepEqual(server.invalid, []);
});

test('screenshot: a page whose Content-Security-Policy forbids data: images is still drawn (the content script is not bound by it)', async () => {
  const { result } = await server.run({ taskId: id(), site: O, steps: [{ type: 'navigate', url: `${O}/csp.html` }, { type: 'screenshot', name: 'shot' }] });
  assert.equal(result.outcome, 'succeeded', JSON.stringify(result.error));
  const [shot] = (result.result as { artifacts: { dataUrl: string }[] }).artifacts;
  const png = decodePng(pngBytes(shot!.dataUrl));
  let dark = 0;
  for (let y = 0; y < Math.min(80, png.height); y++) for (let x = 0; x < Math.min(400, png.width); x++) if (png.pixel(x, y).slice(0, 3).every((c) => c < 96)) dark++;
  assert.ok(dark > 100, `the heading is drawn (${dark} dark pixels)`);
});

function fixtures_dir(): string {
  return join(import.meta.dirname, '..', 'fixtures');
}

test('a result finished while the connection was down is sent once the agent is welcomed back, and not run again', async () => {
  const taskId = id();
  const url = `${O}/results.html?q=${taskId}`;
  const result = server.run({
    taskId, site: O,
    steps: [{ type: 'navigate', url }, { type: 'waitForElement', selectors: [['#release']], timeout: 25_000 }, { type: 'extract', name: 'clicks', selectors: [['#clicks']] }],
  }).then((r) => r.result);
  await server.waitFor((f) => f.type === 'task.progress' && f.taskId === taskId && f.step === 1 && f.status === 'started');
  const page = await eventually('the task tab to be visible to the test', () => browser.ctx.pages().find((p) => p.url() === url));
  // The server restarts: the connection is closed (1012) and upgrades are refused for a while.
  server.refusing = true;
  const hellos = server.frames.filter((f) => f.type === 'hello').length;
  server.kick(1012, 'server restarting');
  await page.evaluate(() => document.body.append(Object.assign(document.createElement('p'), { id: 'release', textContent: 'released' })));
  await new Promise((r) => setTimeout(r, 1500)); // the task ends meanwhile; its result has nowhere to go
  assert.equal(server.frames.filter((f) => f.type === 'task.result' && f.taskId === taskId).length, 0, 'no result while disconnected');
  server.refusing = false;
  const r = await result; // after the agent reconnects and is welcomed
  assert.ok(server.frames.filter((f) => f.type === 'hello').length > hellos, 'it came back through a new connection');
  assert.equal(r.outcome, 'succeeded', JSON.stringify(r.error));
  assert.equal(outputsOf(r).clicks, '0');
  assert.equal(server.frames.filter((f) => f.type === 'task.result' && f.taskId === taskId).length, 1, 'sent once');
});
