/**
 * The fixture site (`test/fixtures/site.ts`) serves what the recipes and the recorded flow expect:
 * the elements their selectors name, deterministic escaped results, a CSP with no inline script,
 * and a real PNG per prompt.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { crc32, inflateSync } from 'node:zlib';
import { Recipe, RecorderFlow, parse, validator } from '../src/index.ts';
import {
  IMAGE_SIZE,
  NO_RESULTS_QUERY,
  PNG_SIGNATURE,
  RESULTS_PER_QUERY,
  escapeHtml,
  generatedImage,
  imageIdFor,
  loadRecorderFlow,
  pngForId,
  searchResults,
  startFixtureSite,
  type FixtureSite,
} from '../../../test/fixtures/site.ts';
import { scanSource } from '../../../scripts/check-dynamic-code.ts';

const DELAY_MS = 300;
let site: FixtureSite;
before(async () => {
  site = await startFixtureSite({ generateDelayMs: DELAY_MS });
});
after(async () => {
  await site.close();
});

const recipe = (name: string) => parse(validator(Recipe), JSON.parse(readFileSync(new URL(`../../../recipes/${name}.json`, import.meta.url), 'utf8')));

async function get(path: string): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(site.url(path));
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The start tags in `html` that carry `attr` (a name, or `name="value"`). */
function tagsWith(html: string, attr: string): string[] {
  return [...html.matchAll(/<[a-z][a-z0-9]*\b[^>]*>/gi)].map((m) => m[0]).filter((t) => new RegExp(`\\s${attr.replace(/[[\]()"]/g, '\\$&')}(?=[\\s>])`).test(t));
}

/** Parses the PNG chunks of `png`, checking every CRC. */
function pngChunks(png: Buffer): { type: string; data: Buffer }[] {
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  const chunks: { type: string; data: Buffer }[] = [];
  for (let at = 8; at < png.length; ) {
    const len = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + len);
    assert.equal(png.readUInt32BE(at + 8 + len), crc32(png.subarray(at + 4, at + 8 + len)) >>> 0, `CRC of ${type}`);
    chunks.push({ type, data });
    at += 12 + len;
  }
  return chunks;
}

test('listens on 127.0.0.1 on a free port and logs requests', async () => {
  assert.match(site.origin, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(site.url('/search?q=a'), `${site.origin}/search?q=a`);
  await get('/?logged=1');
  assert.ok(site.requests.some((r) => r.method === 'GET' && r.path === '/?logged=1'));
});

test('/search has the search box and button the search-extract recipe clicks', async () => {
  const { status, headers, text } = await get('/search');
  assert.equal(status, 200);
  assert.match(headers.get('content-type') ?? '', /^text\/html/);
  const [input] = tagsWith(text, 'aria-label="Search"');
  assert.ok(input !== undefined && input.startsWith('<input'), 'aria/Search is the input');
  assert.match(input, /\stype="search"/);
  assert.match(input, /\sname="q"/);
  assert.match(input, /\sid="q"/);
  assert.deepEqual(tagsWith(text, 'id="search-button"').map((t) => /aria-label="([^"]*)"/.exec(t)?.[1]), ['Submit search']);
  assert.equal(tagsWith(text, 'data-result').length, 0, 'no results before a query');
  // The recipe's selectors name exactly these.
  const steps = JSON.stringify(recipe('search-extract').steps);
  for (const s of ['aria/Search', '#q', 'aria/Submit search', '#search-button', 'li[data-result]', '.snippet']) assert.ok(steps.includes(JSON.stringify(s).slice(1, -1)), s);
});

test('/search?q= renders the deterministic results server-side, each {title, url, snippet}', async () => {
  const { text } = await get('/search?q=palisade');
  const items = [...text.matchAll(/<li data-result><a href="([^"]*)">([^<]*)<\/a><p class="snippet">([^<]*)<\/p><\/li>/g)];
  assert.equal(items.length, RESULTS_PER_QUERY);
  assert.equal(tagsWith(text, 'data-result').length, RESULTS_PER_QUERY);
  const expected = searchResults(site.origin, 'palisade');
  assert.deepEqual(items.map((m) => ({ url: m[1], title: m[2], snippet: m[3]!.replaceAll('&#34;', '"') })), expected);
  assert.ok(expected.every((r) => r.url.startsWith(`${site.origin}/item/`)));
  assert.equal((await get(new URL(expected[0]!.url).pathname)).status, 200);
  // Same query, same page; another query, other results.
  assert.equal((await get('/search?q=palisade')).text, text);
  assert.notDeepEqual(searchResults(site.origin, 'other').map((r) => r.url), expected.map((r) => r.url));
});

test('/search escapes the query everywhere it appears', async () => {
  const q = '<script>alert("x")</script>&\'';
  const { text } = await get(`/search?q=${encodeURIComponent(q)}`);
  assert.ok(!text.includes('<script>alert'));
  assert.ok(text.includes(escapeHtml(q)));
  assert.equal(escapeHtml(q), '&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;&#38;&#39;');
  assert.equal(tagsWith(text, 'data-result').length, RESULTS_PER_QUERY);
});

test(`/search?q=${NO_RESULTS_QUERY} shows no results, and an overlong query is refused`, async () => {
  const { text } = await get(`/search?q=${NO_RESULTS_QUERY}`);
  assert.equal(tagsWith(text, 'data-result').length, 0);
  assert.equal(tagsWith(text, 'id="no-results"').length, 1);
  assert.equal((await get(`/search?q=${'a'.repeat(513)}`)).status, 400);
});

test('every HTML page is served with a script-src \'self\' CSP and no inline script', async () => {
  for (const path of ['/', '/search?q=a', '/chat', '/recorder', '/recorder/results?q=a', '/nope']) {
    const { headers, text } = await get(path);
    const csp = headers.get('content-security-policy') ?? '';
    assert.match(csp, /(^|;)\s*script-src 'self'\s*(;|$)/, path);
    assert.ok(!csp.includes('unsafe'), path);
    assert.equal(headers.get('x-content-type-options'), 'nosniff');
    const scripts = [...text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    for (const s of scripts) {
      assert.match(s[1]!, /\ssrc="\/[^/]/, `${path}: scripts are same-origin files`);
      assert.equal(s[2], '', `${path}: no inline script`);
    }
    assert.ok(!/\son[a-z]+=/i.test(text), `${path}: no inline event handlers`);
  }
});

test('/chat has the prompt box, Send and the idle marker the image-prompt recipe uses', async () => {
  const { status, text } = await get('/chat');
  assert.equal(status, 200);
  const [prompt] = tagsWith(text, 'aria-label="Prompt"');
  assert.ok(prompt !== undefined && prompt.startsWith('<textarea'));
  assert.match(prompt, /\sid="prompt"/);
  assert.match(prompt, /\sname="prompt"/);
  assert.match(text, /<button type="submit" id="send">Send<\/button>/);
  assert.deepEqual(tagsWith(text, 'data-state="idle"').map((t) => t.slice(0, 5)), ['<main']);
  assert.match(text, /<script src="\/chat\.js" defer><\/script>/);
  const steps = JSON.stringify(recipe('image-prompt').steps);
  for (const s of ['aria/Prompt', '#prompt', 'aria/Send', '#send', '[data-state=\\"idle\\"] img[data-generated]']) assert.ok(steps.includes(s), s);
});

test('/chat.js builds the DOM without HTML strings and marks busy, then idle with image and link', async () => {
  const res = await fetch(site.url('/chat.js'));
  assert.match(res.headers.get('content-type') ?? '', /^text\/javascript/);
  const js = await res.text();
  assert.deepEqual(scanSource(js, 'chat.js'), []);
  assert.ok(!/innerHTML|outerHTML|insertAdjacentHTML/.test(js));
  for (const needle of ["fetch('/api/generate'", "chat.dataset.state = 'busy'", "chat.dataset.state = 'idle'", "element('img', 'generated')", 'img.dataset.generated', 'link.download', "'Download image'"]) {
    assert.ok(js.includes(needle), needle);
  }
});

test('/api/generate answers after the delay with the image of the prompt', async () => {
  const prompt = 'a lighthouse at dusk';
  const t0 = performance.now();
  const res = await fetch(site.url('/api/generate'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt }) });
  const elapsed = performance.now() - t0;
  assert.equal(res.status, 200);
  assert.ok(elapsed >= DELAY_MS - 5, `answered after ${elapsed} ms`);
  const body = (await res.json()) as ReturnType<typeof generatedImage>;
  assert.deepEqual(body, generatedImage(site.origin, prompt));
  assert.equal(body.id, imageIdFor(prompt));
  assert.equal(body.url, `${site.origin}/images/${body.id}.png`);
  assert.equal(body.alt, `Generated image: ${prompt}`);
});

test('/api/generate refuses bad requests', async () => {
  const post = (body: string, type = 'application/json') => fetch(site.url('/api/generate'), { method: 'POST', headers: { 'content-type': type }, body }).then((r) => r.status);
  assert.equal(await post(JSON.stringify({ prompt: '' })), 400);
  assert.equal(await post(JSON.stringify({ prompt: 'x'.repeat(4001) })), 400);
  assert.equal(await post(JSON.stringify({ prompt: 1 })), 400);
  assert.equal(await post('{'), 400);
  assert.equal(await post(JSON.stringify({ prompt: 'x' }), 'text/plain'), 415);
  assert.equal(await post(JSON.stringify({ prompt: 'x'.repeat(20_000) })), 413);
  assert.equal((await fetch(site.url('/api/generate'))).status, 405);
});

test('/images/<id>.png is a valid PNG whose pixels depend on the prompt', async () => {
  const { url, id } = generatedImage(site.origin, 'a red fox');
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/png');
  const png = Buffer.from(await res.arrayBuffer());
  assert.deepEqual(png, pngForId(id));
  const chunks = pngChunks(png);
  assert.deepEqual(chunks.map((c) => c.type), ['IHDR', 'IDAT', 'IEND']);
  const ihdr = chunks[0]!.data;
  assert.deepEqual([ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), ihdr[8], ihdr[9]], [IMAGE_SIZE, IMAGE_SIZE, 8, 2]);
  const raw = inflateSync(chunks[1]!.data);
  assert.equal(raw.length, IMAGE_SIZE * (1 + IMAGE_SIZE * 3));

  const other = inflateSync(pngChunks(pngForId(imageIdFor('a blue whale')))[1]!.data);
  assert.notDeepEqual(other, raw);
  assert.deepEqual(pngForId(imageIdFor('a red fox')), png);

  assert.equal((await fetch(site.url('/images/nothex.png'))).status, 404);
});

test('/recorder pages match the recorded flow: titles, the #q box, and the result count it waits for', async () => {
  const flow = parse(validator(RecorderFlow), loadRecorderFlow('search', site.origin));
  const navigate = flow.steps.find((s) => s.type === 'navigate');
  assert.ok(navigate?.type === 'navigate');
  const start = await fetch(navigate.url);
  const startHtml = await start.text();
  assert.equal(start.url, navigate.assertedEvents?.[0]?.url);
  assert.equal(/<title>([^<]*)<\/title>/.exec(startHtml)?.[1], navigate.assertedEvents?.[0]?.title);
  assert.ok(tagsWith(startHtml, 'aria-label="Search"')[0]?.includes('id="q"'));
  assert.match(startHtml, /<form role="search" action="\/recorder\/results" method="get">/);

  const keyDown = flow.steps.find((s) => s.type === 'keyDown');
  const change = flow.steps.find((s) => s.type === 'change');
  assert.ok(keyDown?.type === 'keyDown' && change?.type === 'change');
  const event = keyDown.assertedEvents?.[0];
  assert.equal(event?.url, `${site.origin}/recorder/results?q=${encodeURIComponent(change.value)}`);
  const results = await (await fetch(event.url!)).text();
  assert.equal(/<title>([^<]*)<\/title>/.exec(results)?.[1], event.title);
  assert.equal(tagsWith(results, 'aria-label="Results"').length, 1);
  const waitCount = flow.steps.findLast((s) => s.type === 'waitForElement');
  assert.ok(waitCount?.type === 'waitForElement');
  assert.equal(tagsWith(results, 'data-result').length, waitCount.count);
});

test('close() stops the site', async () => {
  const other = await startFixtureSite();
  assert.equal((await fetch(other.url('/'))).status, 200);
  await other.close();
  await assert.rejects(fetch(other.url('/')));
});
