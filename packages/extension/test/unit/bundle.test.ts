/**
 * The built extension (dist/ and dist-test/, from `node packages/extension/build.ts --all`):
 * manifest invariants, and no dynamic code in any bundled file (our code and every dependency).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = join(root, 'dist');
const DIST_TEST = join(root, 'dist-test');

/** Patterns that mean dynamic code or HTML injection. `Function(` alone is TypeBox's `Type.Function` builder, so only the string-taking forms are flagged. */
const FORBIDDEN: [string, RegExp][] = [
  ['eval', /(?<![\w$.])eval\s*\(/],
  ['new Function', /new\s+Function\s*\(/],
  ['Function("…")', /(?<![\w$.])Function\s*\(\s*["'`]/],
  ['string timer', /set(?:Timeout|Interval)\s*\(\s*["'`]/],
  ['innerHTML/outerHTML assignment', /\.(?:inner|outer)HTML\s*[+]?=/],
  ['insertAdjacentHTML', /insertAdjacentHTML/],
  ['document.write', /document\.write(?:ln)?\s*\(/],
  ['importScripts', /importScripts\s*\(/],
  ['remote import', /import\s*\(\s*["'`]https?:/],
  ['srcdoc', /\.srcdoc\s*=/],
];

export function scan(text: string): string[] {
  return FORBIDDEN.filter(([, re]) => re.test(text)).map(([name]) => name);
}

function built(dir: string): Record<string, string> {
  assert.ok(existsSync(join(dir, 'manifest.json')), `${dir} is missing: run node packages/extension/build.ts --all`);
  return Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

test('the scanner catches each forbidden form (so a clean scan means something)', () => {
  assert.deepEqual(scan('x = eval("1")'), ['eval']);
  assert.deepEqual(scan('new Function("return 1")'), ['new Function', 'Function("…")']);
  assert.deepEqual(scan("setTimeout('alert(1)', 5)"), ['string timer']);
  assert.deepEqual(scan('el.innerHTML = data'), ['innerHTML/outerHTML assignment']);
  assert.deepEqual(scan('el.insertAdjacentHTML("beforeend", x)'), ['insertAdjacentHTML']);
  assert.deepEqual(scan('document.write(x)'), ['document.write']);
  assert.deepEqual(scan('importScripts("https://x")'), ['importScripts']);
  assert.deepEqual(scan('await import("https://cdn.example/x.js")'), ['remote import']);
  assert.deepEqual(scan('document.evaluate(xp, root); obj.evaluate(1); Type.Function([], x)'), []);
});

for (const dir of [DIST, DIST_TEST]) {
  test(`${dir.endsWith('test') ? 'test' : 'release'} build: no dynamic code in any bundled file`, () => {
    const files = built(dir);
    for (const f of ['background.js', 'content.js', 'popup.js', 'popup.html']) assert.ok(files[f], `${f} built`);
    for (const [name, text] of Object.entries(files)) assert.deepEqual(scan(text), [], name);
  });
}

test('popup.html loads only its own module script', () => {
  const html = built(DIST)['popup.html'] ?? '';
  const scripts = [...html.matchAll(/<script\b[^>]*>/g)].map((m) => m[0]);
  assert.deepEqual(scripts, ['<script type="module" src="popup.js">']);
  assert.doesNotMatch(html, /\son\w+\s*=/i, 'no inline event handlers');
});

test('release manifest: least privilege', () => {
  const m = JSON.parse(built(DIST)['manifest.json'] ?? '{}');
  assert.equal(m.manifest_version, 3);
  assert.equal(m.name, 'Palisade');
  assert.deepEqual(m.background, { service_worker: 'background.js', type: 'module' });
  assert.deepEqual(
    [...m.permissions].sort(),
    ['alarms', 'declarativeNetRequest', 'downloads', 'identity', 'scripting', 'storage', 'tabs'],
    'declarativeNetRequest, not ...WithHostAccess; identity for launchWebAuthFlow (see build.ts)',
  );
  assert.equal(m.oauth2, undefined, 'no Google OAuth client: only launchWebAuthFlow against the Palisade server is used');
  assert.equal(m.host_permissions, undefined);
  assert.deepEqual(m.optional_host_permissions, ['https://*/*', 'http://*/*']);
  assert.equal(m.content_scripts, undefined);
  assert.equal(m.externally_connectable, undefined);
  assert.equal(m.web_accessible_resources, undefined);
  assert.deepEqual(m.content_security_policy, { extension_pages: "script-src 'self'; object-src 'none'" });
  assert.ok(Number(m.minimum_chrome_version) >= 116);
  assert.doesNotMatch(JSON.stringify(m), /<all_urls>|\*:\/\/\*/);
});

test('chrome.identity is used for launchWebAuthFlow only, never for Google accounts', () => {
  const bg = built(DIST)['background.js'] ?? '';
  assert.match(bg, /launchWebAuthFlow/);
  assert.match(bg, /getRedirectURL/);
  assert.doesNotMatch(bg, /getAuthToken|getProfileUserInfo|getAccounts|removeCachedAuthToken|clearAllCachedAuthTokens/);
});

test('test manifest: only the 127.0.0.1 fixture origins are added; localhost stays ungranted', () => {
  const release = JSON.parse(built(DIST)['manifest.json'] ?? '{}');
  const m = JSON.parse(built(DIST_TEST)['manifest.json'] ?? '{}');
  assert.deepEqual(m.host_permissions, ['http://127.0.0.1/*', 'https://127.0.0.1/*']);
  assert.doesNotMatch(JSON.stringify(m), /localhost|<all_urls>/);
  const { host_permissions: _h, name: _n, ...rest } = m;
  const { name: _rn, ...releaseRest } = release;
  assert.deepEqual(rest, releaseRest, 'otherwise identical to the release manifest');
});
