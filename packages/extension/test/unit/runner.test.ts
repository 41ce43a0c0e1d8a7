import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError, type AgentFrame } from '@palisade/protocol';
import { TaskRunner, type PageDriver } from '../../src/worker/runner.ts';

const SITE = 'https://shop.example';

/** A driver that records every call; page steps answer from `pageAnswers`. */
function fakeDriver(pageAnswers: Record<string, unknown> = {}, downloadFinalUrl = `${SITE}/x.txt`) {
  const calls: string[] = [];
  let url = 'about:blank';
  let watcher: ((u: string | undefined) => void) | undefined;
  const driver: PageDriver = {
    openTab: async () => (calls.push('openTab'), 1),
    closeTab: async () => void calls.push('closeTab'),
    navigate: async (_t, u) => {
      calls.push(`navigate ${u}`);
      url = u;
      watcher?.(u);
    },
    tabUrl: async () => url,
    setViewport: async () => void calls.push('setViewport'),
    runPageStep: async (_t, req, signal) => {
      calls.push(`page ${req.step.type}`);
      if (req.step.type === 'waitForElement') {
        await new Promise((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
      }
      return pageAnswers[req.step.type] ?? null;
    },
    settle: async () => {},
    screenshot: async () => 'data:image/png;base64,AAAA',
    guardTab: async (t, site) => (calls.push(`guard ${t} ${site}`), async () => void calls.push(`unguard ${t}`)),
    download: async (u) => (calls.push(`download ${u}`), { id: 7, filename: 'x.txt', finalUrl: downloadFinalUrl, bytes: 3, mimeType: 'text/plain' }),
    discardDownload: async (id) => void calls.push(`discard ${id}`),
    watchTab: (_t, cb) => ((watcher = cb), () => (watcher = undefined)),
  };
  return { driver, calls, navigateAway: (u: string) => ((url = u), watcher?.(u)) };
}

function runner(driver: PageDriver, granted = [SITE]) {
  const sent: AgentFrame[] = [];
  const r = new TaskRunner({ driver, isGranted: async (s) => granted.includes(s), send: (f) => void sent.push(f) });
  return { r, sent, result: () => sent.find((f) => f.type === 'task.result') as Extract<AgentFrame, { type: 'task.result' }> | undefined };
}

const dispatch = (steps: unknown[], extra: Record<string, unknown> = {}) => ({ type: 'task.dispatch', taskId: 't1', site: SITE, steps, deadline: Date.now() + 60_000, ...extra });

test('runs the steps: accept, progress started/done per step, result with outputs and timings', async () => {
  const { driver, calls } = fakeDriver({ extract: ['a', 'b'] });
  const { r, sent, result } = runner(driver);
  await r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'extract', name: 'names', selectors: ['li'], all: true }]));
  assert.deepEqual(sent.map((f) => (f.type === 'task.progress' ? `${f.type}:${f.step}:${f.status}` : f.type)), [
    'task.accept', 'task.progress:0:started', 'task.progress:0:done', 'task.progress:1:started', 'task.progress:1:done', 'task.result',
  ]);
  assert.equal(result()?.outcome, 'succeeded');
  assert.deepEqual(result()?.result.outputs, { names: ['a', 'b'] });
  assert.deepEqual(result()?.result.timings.steps.map((s) => s.type), ['navigate', 'extract']);
  assert.deepEqual(calls, ['openTab', `guard 1 ${SITE}`, `navigate ${SITE}/`, 'page extract', 'closeTab', 'unguard 1']);
});

const refusals: [string, unknown, string][] = [
  ['a site not granted', dispatch([{ type: 'navigate', url: 'http://localhost:1/' }], { site: 'http://localhost:1' }), 'PAL_ERR_SITE_NOT_GRANTED'],
  ['waitForExpression', dispatch([{ type: 'waitForExpression', expression: 'true' }]), 'PAL_ERR_STEP_REFUSED'],
  ['customStep', dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'customStep', name: 'x', parameters: {} }]), 'PAL_ERR_STEP_REFUSED'],
  ['a javascript: URL', dispatch([{ type: 'navigate', url: 'javascript:alert(1)' }]), 'PAL_ERR_URL_REFUSED'],
  ['a data: URL', dispatch([{ type: 'navigate', url: 'data:text/html,<script>1</script>' }]), 'PAL_ERR_URL_REFUSED'],
  ['a file: URL', dispatch([{ type: 'navigate', url: 'file:///etc/passwd' }]), 'PAL_ERR_URL_REFUSED'],
  ['a chrome: URL', dispatch([{ type: 'navigate', url: 'chrome://settings' }]), 'PAL_ERR_URL_REFUSED'],
  ['another origin', dispatch([{ type: 'navigate', url: 'https://evil.example/' }]), 'PAL_ERR_URL_REFUSED'],
  ['a download off the site', dispatch([{ type: 'download', name: 'd', url: 'https://evil.example/x' }]), 'PAL_ERR_URL_REFUSED'],
  ['an unknown field', dispatch([{ type: 'navigate', url: `${SITE}/`, extra: 1 }]), 'PAL_ERR_VALIDATION'],
  ['a past deadline', dispatch([{ type: 'navigate', url: `${SITE}/` }], { deadline: Date.now() - 1 }), 'PAL_ERR_TASK_EXPIRED'],
];
for (const [what, frame, code] of refusals) {
  test(`refuses ${what} with ${code} without touching any tab`, async () => {
    const { driver, calls } = fakeDriver();
    const { r, sent, result } = runner(driver);
    await r.dispatch(frame);
    assert.deepEqual(calls, []);
    assert.deepEqual(sent.map((f) => f.type), ['task.result']);
    assert.equal(result()?.outcome, 'failed');
    assert.equal(result()?.error?.code, code);
  });
}

test('a navigation off the site during a step fails the task with PAL_ERR_URL_REFUSED', async () => {
  const fake = fakeDriver();
  const { r, result } = runner(fake.driver);
  const done = r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'waitForElement', selectors: ['#never'] }]));
  while (!fake.calls.includes('page waitForElement')) await new Promise((res) => setImmediate(res));
  assert.equal(r.drivenSite(1), SITE);
  fake.navigateAway('https://evil.example/phish');
  await done;
  assert.equal(result()?.error?.code, 'PAL_ERR_URL_REFUSED');
  assert.equal(result()?.error?.step, 1);
  assert.equal(r.drivenSite(1), undefined, 'the tab is no longer driven');
  assert.ok(fake.calls.includes('closeTab'));
});

test('task.cancel stops the running step', async () => {
  const fake = fakeDriver();
  const { r, result } = runner(fake.driver);
  const done = r.dispatch(dispatch([{ type: 'waitForElement', selectors: ['#never'] }]));
  while (!fake.calls.includes('page waitForElement')) await new Promise((res) => setImmediate(res));
  r.cancel('t1', 'caller gave up');
  await done;
  assert.equal(result()?.error?.code, 'PAL_ERR_TASK_CANCELLED');
});

test('the deadline bounds the whole task', async () => {
  const fake = fakeDriver();
  const { r, result } = runner(fake.driver);
  await r.dispatch(dispatch([{ type: 'waitForElement', selectors: ['#never'] }], { deadline: Date.now() + 150 }));
  assert.equal(result()?.outcome, 'failed');
  assert.ok(['PAL_ERR_TASK_EXPIRED', 'PAL_ERR_TIMEOUT'].includes(result()?.error?.code ?? ''), result()?.error?.code);
});

test('a result too large for a frame is replaced by PAL_ERR_FRAME_TOO_LARGE', async () => {
  const { driver } = fakeDriver({ extract: 'x'.repeat(1_100_000) });
  const { r, result } = runner(driver);
  await r.dispatch(dispatch([{ type: 'extract', name: 'big', selectors: ['body'] }]));
  assert.equal(result()?.error?.code, 'PAL_ERR_FRAME_TOO_LARGE');
  assert.deepEqual(result()?.result.outputs, {});
});

test('the result limit counts bytes: 500k characters of CJK text (1.5 MB) is too large, 500k ASCII is not', async () => {
  const cjk = runner(fakeDriver({ extract: '漢'.repeat(500_000) }).driver);
  await cjk.r.dispatch(dispatch([{ type: 'extract', name: 'big', selectors: ['body'] }]));
  assert.equal(cjk.result()?.error?.code, 'PAL_ERR_FRAME_TOO_LARGE');
  const ascii = runner(fakeDriver({ extract: 'x'.repeat(500_000) }).driver);
  await ascii.r.dispatch(dispatch([{ type: 'extract', name: 'big', selectors: ['body'] }]));
  assert.equal(ascii.result()?.outcome, 'succeeded');
});

test('emulateNetworkConditions from a Recorder flow is accepted and skipped: nothing reaches the page', async () => {
  const { driver, calls } = fakeDriver();
  const { r, result } = runner(driver);
  await r.dispatch(dispatch([{ type: 'emulateNetworkConditions', download: 50_000, upload: 50_000, latency: 2000 }, { type: 'navigate', url: `${SITE}/` }]));
  assert.equal(result()?.outcome, 'succeeded');
  assert.deepEqual(result()?.result.timings.steps.map((s) => s.type), ['emulateNetworkConditions', 'navigate']);
  assert.deepEqual(calls, ['openTab', `guard 1 ${SITE}`, `navigate ${SITE}/`, 'closeTab', 'unguard 1']);
});

test('the tab is guarded before its first navigation and unguarded after it closes, on every ending', async () => {
  const endings: [string, (r: TaskRunner, fake: ReturnType<typeof fakeDriver>) => Promise<void>][] = [
    ['success', (r) => r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }]))],
    ['a failing step', (r) => r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'screenshot', name: 's', timeout: 1 }]))],
    ['off-site', async (r, fake) => {
      const done = r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'waitForElement', selectors: ['#never'] }]));
      while (!fake.calls.includes('page waitForElement')) await new Promise((res) => setImmediate(res));
      fake.navigateAway('https://evil.example/');
      await done;
    }],
    ['cancel', async (r, fake) => {
      const done = r.dispatch(dispatch([{ type: 'waitForElement', selectors: ['#never'] }]));
      while (!fake.calls.includes('page waitForElement')) await new Promise((res) => setImmediate(res));
      r.cancel('t1', 'x');
      await done;
    }],
    ['deadline', (r) => r.dispatch(dispatch([{ type: 'waitForElement', selectors: ['#never'] }], { deadline: Date.now() + 100 }))],
    ['the tab closed by a step', (r) => r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }, { type: 'close' }]))],
  ];
  for (const [what, end] of endings) {
    const fake = fakeDriver();
    if (what === 'a failing step') fake.driver.screenshot = async () => 'not a png';
    const { r } = runner(fake.driver);
    await end(r, fake);
    const guardAt = fake.calls.indexOf(`guard 1 ${SITE}`);
    const firstNav = fake.calls.findIndex((c) => c.startsWith('navigate') || c.startsWith('page'));
    assert.ok(guardAt === 1 && guardAt < firstNav, `${what}: guarded right after openTab, before anything else (${fake.calls})`);
    assert.equal(fake.calls.at(-1), 'unguard 1', `${what}: unguarded last (${fake.calls})`);
    assert.equal(fake.calls.filter((c) => c.startsWith('unguard')).length, 1, `${what}: once`);
  }
});

test('a guard that cannot be set fails the task before any navigation', async () => {
  const fake = fakeDriver();
  fake.driver.guardTab = async () => {
    throw new PalisadeError('PAL_ERR_INTERNAL', 'no rules');
  };
  const { r, result } = runner(fake.driver);
  await r.dispatch(dispatch([{ type: 'navigate', url: `${SITE}/` }]));
  assert.equal(result()?.error?.code, 'PAL_ERR_INTERNAL');
  assert.ok(!fake.calls.some((c) => c.startsWith('navigate')), String(fake.calls));
  assert.ok(fake.calls.includes('closeTab'));
});

test('a download whose final URL is off the site is refused and its file discarded (second line behind the driver)', async () => {
  const fake = fakeDriver({}, 'https://evil.example/x.txt');
  const { r, result } = runner(fake.driver);
  await r.dispatch(dispatch([{ type: 'download', name: 'd', url: `${SITE}/x.txt` }]));
  assert.equal(result()?.error?.code, 'PAL_ERR_URL_REFUSED');
  assert.deepEqual(result()?.result.artifacts, []);
  assert.ok(fake.calls.includes('discard 7'), String(fake.calls));
  const ok = fakeDriver();
  const { r: r2, result: res2 } = runner(ok.driver);
  await r2.dispatch(dispatch([{ type: 'download', name: 'd', url: `${SITE}/x.txt` }]));
  assert.equal(res2()?.outcome, 'succeeded');
  assert.ok(!ok.calls.some((c) => c.startsWith('discard')), 'an on-site download is kept');
});
