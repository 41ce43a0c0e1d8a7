import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageGate, PIPELINES, fromDrivenTab, fromPopupPage, fromTaskSite, knownType, matchesSchema, senderIsThisExtension, withinRateLimits, type PipelineEnv, type Sender } from '../../src/worker/pipeline.ts';
import { RateLimiter } from '../../src/worker/rate-limit.ts';

const ID = 'abcdefghijklmnopabcdefghijklmnop';
const POPUP = `chrome-extension://${ID}/popup.html`;
const SITE = 'http://127.0.0.1:8080';

function gate(drivenTabs: Record<number, string> = { 5: SITE }, limiter = new RateLimiter()) {
  const log: { code: string }[] = [];
  const env: PipelineEnv = { extensionId: ID, popupUrl: POPUP, drivenSite: (t) => drivenTabs[t], limiter };
  return { gate: new MessageGate(env, (e) => log.push(e)), log };
}
const popupSender: Sender = { id: ID, url: POPUP, origin: `chrome-extension://${ID}` };
const contentSender: Sender = { id: ID, url: `${SITE}/page.html`, origin: SITE, tab: { id: 5 }, frameId: 0 };

test('the pipelines are the documented checks, in order', () => {
  assert.deepEqual(PIPELINES.popup, [senderIsThisExtension, knownType, fromPopupPage, withinRateLimits, matchesSchema]);
  assert.deepEqual(PIPELINES.content, [senderIsThisExtension, knownType, fromDrivenTab, fromTaskSite, withinRateLimits, matchesSchema]);
});

test('accepts a valid popup message from the popup page', () => {
  const { gate: g } = gate();
  const r = g.check({ type: 'popup.addSite', origin: 'https://a.example' }, popupSender);
  assert.deepEqual(r, { ok: true, channel: 'popup', message: { type: 'popup.addSite', origin: 'https://a.example' } });
  // The popup page may carry a query or hash.
  assert.equal(g.check({ type: 'popup.status' }, { ...popupSender, url: `${POPUP}?x=1#y` }).ok, true);
});

test('refuses a wrong sender id (another extension) with PAL_ERR_SENDER_REFUSED, counted and logged', () => {
  const { gate: g, log } = gate();
  const r = g.check({ type: 'popup.status' }, { ...popupSender, id: 'otherextensionidotherextensionid' });
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.error.code, 'PAL_ERR_SENDER_REFUSED');
  assert.equal(g.check({ type: 'popup.status' }, { url: POPUP }).ok, false, 'no id at all');
  assert.equal(g.refused.PAL_ERR_SENDER_REFUSED, 2);
  assert.equal(log.length, 2);
});

test('refuses popup messages from any page other than the popup', () => {
  const { gate: g } = gate();
  for (const url of [`chrome-extension://${ID}/other.html`, `${SITE}/page.html`, `chrome-extension://${ID}/popup.html.evil`, undefined, 'not a url']) {
    const r = g.check({ type: 'popup.signOut' }, { ...popupSender, url });
    assert.equal(!r.ok && r.error.code, 'PAL_ERR_SENDER_REFUSED', String(url));
  }
  // A content script (tab sender) cannot send popup messages either.
  const r = g.check({ type: 'popup.signOut' }, contentSender);
  assert.equal(!r.ok && r.error.code, 'PAL_ERR_SENDER_REFUSED');
});

test('refuses content messages from a tab no task drives, from another origin, or from a sub-frame', () => {
  const { gate: g } = gate();
  const msg = { type: 'content.ready', url: `${SITE}/page.html` };
  assert.equal(g.check(msg, contentSender).ok, true);
  const cases: Sender[] = [
    { ...contentSender, tab: { id: 6 } },
    { ...contentSender, tab: undefined },
    { ...contentSender, origin: 'http://localhost:8080', url: 'http://localhost:8080/x' },
    { ...contentSender, frameId: 3 },
  ];
  for (const s of cases) {
    const r = g.check(msg, s);
    assert.equal(!r.ok && r.error.code, 'PAL_ERR_SENDER_REFUSED', JSON.stringify(s));
  }
});

test('refuses a bad schema: unknown type, missing field, extra field, wrong type', () => {
  const { gate: g } = gate();
  const bad: unknown[] = [
    null,
    'popup.status',
    { type: 'popup.nope' },
    { type: 'popup.addSite' },
    { type: 'popup.addSite', origin: 'https://a.example', extra: 1 },
    { type: 'popup.addSite', origin: 42 },
    { type: 'popup.signIn', server: 'x'.repeat(5000) },
    { type: 'content.ready' },
  ];
  for (const m of bad) {
    const sender = (m as { type?: string } | null)?.type?.startsWith('content.') ? contentSender : popupSender;
    const r = g.check(m, sender);
    assert.equal(!r.ok && r.error.code, 'PAL_ERR_VALIDATION', JSON.stringify(m)?.slice(0, 80));
  }
  assert.equal(g.refused.PAL_ERR_VALIDATION, bad.length);
});

test('a flood past the per-origin limit is refused with PAL_ERR_RATE_LIMITED', () => {
  let now = 0;
  const { gate: g } = gate({ 5: SITE }, new RateLimiter({}, () => now));
  const msg = { type: 'content.ready', url: SITE };
  const codes = Array.from({ length: 150 }, () => {
    const r = g.check(msg, contentSender);
    return r.ok ? 'ok' : r.error.code;
  });
  assert.equal(codes.filter((c) => c === 'ok').length, 100);
  assert.deepEqual(new Set(codes.slice(100)), new Set(['PAL_ERR_RATE_LIMITED']));
  assert.equal(g.refused.PAL_ERR_RATE_LIMITED, 50);
  // The popup has its own origin and is not starved by the flood.
  assert.equal(g.check({ type: 'popup.status' }, popupSender).ok, true);
  now += 60_000;
  assert.equal(g.check(msg, contentSender).ok, true);
});

test('the sender is checked before the rate limit: foreign senders cannot drain it', () => {
  const limiter = new RateLimiter({ perOrigin: 1 });
  const { gate: g } = gate({ 5: SITE }, limiter);
  for (let i = 0; i < 10; i++) g.check({ type: 'popup.status' }, { ...popupSender, id: 'x' });
  assert.equal(g.check({ type: 'popup.status' }, popupSender).ok, true);
});
