/**
 * The CI scanner `scripts/check-dynamic-code.ts`: each forbidden construct in a small temporary
 * repository is found at its exact line; legitimate look-alikes are not; manifests with broad
 * permissions are refused; the command exits 1 with findings and 0 with a summary.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  checkManifest,
  formatFinding,
  isWildcardHost,
  scanHtml,
  scanRecipe,
  scanRepo,
  scanSource,
  type Finding,
} from '../../../scripts/check-dynamic-code.ts';

const SCRIPT = fileURLToPath(new URL('../../../scripts/check-dynamic-code.ts', import.meta.url));
const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** Writes `files` (path → text) into a fresh temporary folder and returns it. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'palisade-scan-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

/** `file:line rule` of each finding, for compact exact comparisons. */
const brief = (fs: readonly Finding[]): string[] => fs.map((f) => `${f.file}:${f.line} ${f.rule}`);

const CLEAN_MANIFEST = JSON.stringify(
  {
    manifest_version: 3,
    name: 'Palisade',
    version: '0.1.0',
    permissions: ['storage', 'scripting', 'downloads'],
    optional_host_permissions: ['https://*/*', 'http://*/*'],
    background: { service_worker: 'background.js', type: 'module' },
    content_security_policy: { extension_pages: "script-src 'self'; object-src 'self'" },
  },
  null,
  2,
);

/** A repository with both extension builds and nothing wrong. */
const CLEAN_BUILDS: Record<string, string> = {
  'packages/extension/dist/manifest.json': CLEAN_MANIFEST,
  'packages/extension/dist/background.js': 'import { a } from "./chunk.js";\nconst m = await import("./lazy.js");\n',
  'packages/extension/dist/popup.html': '<!doctype html>\n<script src="popup.js" type="module"></script>\n',
  'packages/extension/dist-test/manifest.json': CLEAN_MANIFEST,
  'packages/extension/dist-test/background.js': 'export {};\n',
};

const BAD_SOURCE = [
  "const a = eval('1 + 1');", // 1
  "const f = new Function('a', 'return a');", // 2
  "const g = Function('return 1');", // 3
  "setTimeout('tick()', 10);", // 4
  'setInterval(`tick(${a})`, 10);', // 5
  "document.body.innerHTML = '<b>x</b>';", // 6
  'el.outerHTML += html;', // 7
  "el.insertAdjacentHTML('beforeend', html);", // 8
  "document.write('<p>');", // 9
  "window.eval('x');", // 10
  "(0, eval)('x');", // 11
  "globalThis.Function('x');", // 12
  "el['innerHTML'] = html;", // 13
  "window.setTimeout('x' + y, 1);", // 14
  "Function.call(null, 'return 1');", // 15
  "const e2 = eval;", // 16
  "(function () {}).constructor('return 1');", // 17
  'const m = await import(name);', // 18: only refused in extension code
  '',
].join('\n');

const BAD_SOURCE_FINDINGS = [
  '1 eval', '2 function-constructor', '3 function-constructor', '4 string-timer', '5 string-timer', '6 html-assignment',
  '7 html-assignment', '8 insert-adjacent-html', '9 document-write', '10 eval', '11 eval', '12 function-constructor',
  '13 html-assignment', '14 string-timer', '15 function-constructor', '16 eval', '17 function-constructor',
];

const CLEAN_SOURCE = `
// A comment may say eval('x'), new Function('y') or el.innerHTML = z: comments are not code.
/* setTimeout('x', 1); document.write('y') */
const s = "eval('x'); el.innerHTML = y; new Function('z')";
await redis.eval(script, 0);
setTimeout(() => tick(), 10);
setInterval(tick, 10);
const html = el.innerHTML;
if (el.outerHTML === '') stream.write('x');
el.textContent = s;
const isFn = x instanceof Function || typeof Function === 'function' || Function.prototype.toString.length > 0;
const t: Function = tick;
class A { eval(): void {} clone() { return new this.constructor({ a: 1 }); } }
const o = { eval: 1, innerHTML: 2, Function: 3 };
const { eval: e } = o;
const lazy = await import('./literal.js');
`;

test('each forbidden construct is found at its line', () => {
  assert.deepEqual(scanSource(BAD_SOURCE, 'bad.ts').map((f) => `${f.line} ${f.rule}`), BAD_SOURCE_FINDINGS);
  assert.deepEqual(scanSource(BAD_SOURCE, 'bad.js').map((f) => `${f.line} ${f.rule}`), BAD_SOURCE_FINDINGS);
});

test('findings carry the file and a message that says what to do', () => {
  const [f] = scanSource("x.innerHTML = y;\n", 'packages/a/src/x.ts');
  assert.deepEqual(f, { file: 'packages/a/src/x.ts', line: 1, rule: 'html-assignment', message: 'assignment to innerHTML parses a string as HTML; build the DOM with createElement/textContent' });
  assert.equal(formatFinding(f), 'packages/a/src/x.ts:1: html-assignment: assignment to innerHTML parses a string as HTML; build the DOM with createElement/textContent');
});

test('in extension code, import() and importScripts() of non-literals are refused', () => {
  const src = "const a = await import('./ok.js');\nconst b = await import(name);\nimportScripts('lib.js');\nimportScripts(url);\nimportScripts('https://cdn.example/x.js');\nconst c = await import(`./${x}.js`);\n";
  assert.deepEqual(scanSource(src, 'bg.js', { extension: true }).map((f) => `${f.line} ${f.rule}`), ['2 dynamic-import', '4 dynamic-import', '5 dynamic-import', '6 dynamic-import']);
  assert.deepEqual(scanSource(src, 'server.ts'), []);
});

test('look-alikes that run no code are not flagged', () => {
  assert.deepEqual(scanSource(CLEAN_SOURCE, 'clean.ts'), []);
});

test('a local binding named like the global is not the global', () => {
  const src = [
    'function Function(params, returns) { return { params, returns }; }', // 1: TypeBox's Type.Function in a bundle
    'const t = Function([], null);', // 2
    'const m = { Function: () => Function };', // 3
    '{', // 4
    '  const g = (Function) => Function("x");', // 5: a parameter
    '}', // 6
    '',
  ].join('\n');
  assert.deepEqual(scanSource(src, 'bundle.js'), []);
  const scoped = [
    'function f() { var Function = (x) => x; return Function("a"); }', // 1: local to f
    'const h = Function("return 1");', // 2: the global
    'function g() { if (a) { var ev = 1; } return eval("1"); }', // 3
    '',
  ].join('\n');
  assert.deepEqual(scanSource(scoped, 'x.js').map((f) => `${f.line} ${f.rule}`), ['2 function-constructor', '3 eval']);
});

test('the scanner and this test do not flag themselves', () => {
  assert.deepEqual(scanSource(readFileSync(SCRIPT, 'utf8'), 'scripts/check-dynamic-code.ts', { extension: true }), []);
  assert.deepEqual(scanSource(readFileSync(fileURLToPath(import.meta.url), 'utf8'), 'check-dynamic-code.test.ts', { extension: true }), []);
});

test('HTML: remote scripts, and the same checks inside inline scripts', () => {
  const page = [
    '<!doctype html>', // 1
    '<script src="https://cdn.example.com/lib.js"></script>', // 2
    "<script src='//cdn.example.com/x.js' defer></script>", // 3
    '<script src=http://evil.example/a.js></script>', // 4
    '<script src="/local.js"></script>', // 5
    '<script>', // 6
    'const ok = 1;', // 7
    'document.body.innerHTML = location.hash;', // 8
    '</script>', // 9
    '',
  ].join('\n');
  assert.deepEqual(brief(scanHtml(page, 'p.html')), ['p.html:2 remote-script', 'p.html:3 remote-script', 'p.html:4 remote-script', 'p.html:8 html-assignment']);
  assert.match(scanHtml(page, 'p.html')[0]!.message, /https:\/\/cdn\.example\.com\/lib\.js/);
});

test('recipes: code-running steps and javascript: URLs', () => {
  const recipe = JSON.stringify({ steps: [{ type: 'navigate', url: 'javascript:alert(1)' }, { type: 'click', selectors: ['#a'] }, { type: 'waitForExpression', expression: '1' }, { type: 'customStep', name: 'x', parameters: {} }] }, null, 2);
  const lines = recipe.split('\n');
  const lineOf = (needle: string): number => lines.findIndex((l) => l.includes(needle)) + 1;
  assert.deepEqual(brief(scanRecipe(recipe, 'r.json')), [
    `r.json:${lineOf('javascript:')} script-url`,
    `r.json:${lineOf('waitForExpression')} code-step`,
    `r.json:${lineOf('customStep')} code-step`,
  ]);
  assert.deepEqual(scanRecipe(readFileSync(new URL('../../../recipes/search-extract.json', import.meta.url), 'utf8'), 'r.json'), []);
});

test('manifests: a least-privilege manifest passes', () => {
  assert.deepEqual(checkManifest(CLEAN_MANIFEST, 'm.json'), []);
});

test('manifests: <all_urls>, wildcard hosts, wildcard externally_connectable and a weak CSP are refused', () => {
  const manifest = JSON.stringify(
    {
      manifest_version: 3, // line 2
      name: 'Bad', // 3
      host_permissions: [
        '<all_urls>', // 5
        'https://*/*', // 6
        'https://example.com/*', // 7
        '*://*.example.org/*', // 8
      ],
      content_scripts: [
        {
          matches: [
            'http://*/*', // 13
            'https://app.example.net/*', // 14
          ],
          js: ['content.js'],
        },
      ],
      optional_host_permissions: [
        'https://*/*',
        'http://*/*',
        'https://example.io/*', // 24
        '*://*/*', // 25
      ],
      externally_connectable: {
        matches: [
          'https://*.example.com/*', // 29
        ],
        ids: [
          '*', // 32
        ],
      },
      content_security_policy: {
        extension_pages: "script-src 'self' 'unsafe-eval'; object-src 'self'", // 36
      },
    },
    null,
    2,
  );
  assert.deepEqual(
    checkManifest(manifest, 'm.json').map((f) => `${f.line} ${f.message}`),
    [
      '5 host_permissions[0] grants <all_urls>; request single sites at run time instead',
      '6 host_permissions[1] "https://*/*" is a wildcard host; request single sites through optional_host_permissions',
      '8 host_permissions[3] "*://*.example.org/*" is a wildcard host; request single sites through optional_host_permissions',
      '13 content_scripts[0].matches[0] "http://*/*" is a wildcard host; inject into granted sites at run time',
      '24 optional_host_permissions[2] "https://example.io/*" is not allowed; only https://*/* and http://*/*',
      '25 optional_host_permissions[3] "*://*/*" is not allowed; only https://*/* and http://*/*',
      '29 externally_connectable.matches[0] "https://*.example.com/*" lets any site message the extension',
      '32 externally_connectable.ids[0] "*" lets any extension message this one',
      "36 content_security_policy.extension_pages allows 'unsafe-eval' in script-src",
    ],
  );
});

test('manifests: <all_urls> is refused wherever it appears, and the CSP must be set with script-src \'self\'', () => {
  const base = JSON.parse(CLEAN_MANIFEST) as Record<string, unknown>;
  const msgs = (m: unknown): string[] => checkManifest(JSON.stringify(m), 'm.json').map((f) => f.message);
  assert.deepEqual(msgs({ ...base, optional_permissions: ['<all_urls>'] }), ['optional_permissions[0] grants <all_urls>; request single sites at run time instead']);
  assert.deepEqual(msgs({ ...base, content_scripts: [{ matches: ['<all_urls>'], js: ['c.js'] }] }), ['content_scripts[0].matches[0] grants <all_urls>; request single sites at run time instead']);
  assert.deepEqual(msgs({ ...base, content_security_policy: undefined }), ["content_security_policy.extension_pages must be set and contain script-src 'self'"]);
  assert.deepEqual(msgs({ ...base, content_security_policy: { extension_pages: "default-src 'self'" } }), ["content_security_policy.extension_pages has no script-src 'self'"]);
  assert.deepEqual(msgs({ ...base, content_security_policy: { extension_pages: "script-src 'self'; default-src 'unsafe-eval'" } }), ["content_security_policy.extension_pages allows 'unsafe-eval' in default-src"]);
  assert.deepEqual(msgs({ ...base, manifest_version: 2 }), ['manifest_version must be 3']);
  assert.deepEqual(checkManifest('not json', 'm.json').map((f) => f.rule), ['manifest']);
});

test('wildcard hosts', () => {
  for (const p of ['<all_urls>', '*://*/*', 'https://*/*', 'http://*/*', '*://*.example.com/*', 'https://*.com/*', 'nonsense']) assert.equal(isWildcardHost(p), true, p);
  for (const p of ['https://example.com/*', 'http://127.0.0.1/*', '*://example.com/*', 'https://a.example.com/path/*']) assert.equal(isWildcardHost(p), false, p);
});

test('scanRepo: every root is scanned, node_modules and other folders are not, builds are required', () => {
  const root = tree({
    ...CLEAN_BUILDS,
    'packages/demo/src/bad.ts': BAD_SOURCE,
    'packages/demo/src/nested/ok.ts': 'export const ok = 1;\n',
    'packages/demo/test/not-scanned.test.ts': "eval('x');\n",
    'packages/extension/src/bg.ts': 'export {};\nconst m = await import(name);\n',
    'packages/extension/build.ts': "eval('x');\n",
    'packages/extension/dist/bundle.js': 'var x = 1;\nvar f = new Function("return x");\n',
    'packages/extension/dist/page.html': '<!doctype html>\n<script src="https://cdn.example.com/a.js"></script>\n',
    'packages/extension/dist-test/harness.js': "\n\nel.innerHTML = data;\n",
    'recipes/bad.json': '{\n  "steps": [\n    { "type": "waitForExpression", "expression": "1" }\n  ]\n}\n',
    'recipes/README.md': "Never write eval('x').\n",
    'scripts/tool.ts': "\nsetTimeout('x', 1);\n",
    'bench/b.ts': "document.write('x');\n",
    'test/fixtures/page.html': '<script src="//cdn.example.com/x.js"></script>\n',
    'test/fixtures/public/app.js': "el.insertAdjacentHTML('afterbegin', x);\n",
    'test/node_modules/dep/index.js': "eval('x');\n",
    'docs/notes.ts': "eval('x');\n",
  });
  const result = scanRepo(root);
  const fromBad = BAD_SOURCE_FINDINGS.map((f) => {
    const [line, rule] = f.split(' ');
    return `packages/demo/src/bad.ts:${line} ${rule}`;
  });
  assert.deepEqual(brief(result.findings), [
    ...fromBad,
    'packages/extension/src/bg.ts:2 dynamic-import',
    'packages/extension/build.ts:1 eval',
    'recipes/bad.json:3 code-step',
    'scripts/tool.ts:2 string-timer',
    'bench/b.ts:1 document-write',
    'test/fixtures/page.html:1 remote-script',
    'test/fixtures/public/app.js:1 insert-adjacent-html',
    'packages/extension/dist/bundle.js:2 function-constructor',
    'packages/extension/dist/page.html:2 remote-script',
    'packages/extension/dist-test/harness.js:3 html-assignment',
  ]);
  assert.equal(result.manifests, 2);
});

test('scanRepo: a missing extension build fails and says to build first', () => {
  const root = tree({ 'packages/protocol/src/index.ts': 'export const x = 1;\n', 'packages/extension/dist/manifest.json': CLEAN_MANIFEST });
  const { findings } = scanRepo(root);
  assert.deepEqual(brief(findings), ['packages/extension/dist-test:0 missing-build']);
  assert.match(findings[0]!.message, /build it first/);
  const noManifest = tree({ 'packages/extension/dist/a.js': '', 'packages/extension/dist-test/manifest.json': CLEAN_MANIFEST });
  assert.deepEqual(brief(scanRepo(noManifest).findings), ['packages/extension/dist/manifest.json:0 missing-build']);
});

test('scanRepo: manifests of both builds are checked', () => {
  const wide = JSON.stringify({ ...(JSON.parse(CLEAN_MANIFEST) as object), host_permissions: ['*://*/*'] }, null, 2);
  const root = tree({ ...CLEAN_BUILDS, 'packages/extension/dist-test/manifest.json': wide });
  assert.deepEqual(brief(scanRepo(root).findings), [`packages/extension/dist-test/manifest.json:${wide.split('\n').findIndex((l) => l.includes('*://*/*')) + 1} manifest`]);
});

test('command line: exit 1 with file:line findings, exit 0 with a one-line summary', () => {
  const bad = tree({ ...CLEAN_BUILDS, 'scripts/x.ts': "\n\nconst y = eval('1');\n" });
  const r1 = spawnSync(process.execPath, [SCRIPT, '--root', bad], { encoding: 'utf8' });
  assert.equal(r1.status, 1, r1.stderr);
  assert.equal(r1.stdout, '');
  assert.match(r1.stderr, /^scripts\/x\.ts:3: eval: /m);
  assert.match(r1.stderr, /1 finding in/);

  const clean = tree({ ...CLEAN_BUILDS, 'scripts/x.ts': 'export const y = 1;\n' });
  const r2 = spawnSync(process.execPath, [SCRIPT, '--root', clean], { encoding: 'utf8' });
  assert.equal(r2.status, 0, r2.stderr);
  assert.equal(r2.stderr, '');
  assert.equal(r2.stdout.trim().split('\n').length, 1);
  assert.match(r2.stdout, /: 4 files and 2 extension manifests checked$/m);

  const unbuilt = tree({ 'scripts/x.ts': 'export const y = 1;\n' });
  const r3 = spawnSync(process.execPath, [SCRIPT, '--root', unbuilt], { encoding: 'utf8' });
  assert.equal(r3.status, 1);
  assert.match(r3.stderr, /^packages\/extension\/dist: missing-build: .*build it first/m);
});
