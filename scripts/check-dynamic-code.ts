/**
 * @module scripts/check-dynamic-code — the CI check behind security invariants 3 and 4: no dynamic
 * code and no broad permissions, in any package, in the recipes, and in the built extension.
 *
 * Sources (`packages/*\/src`, `packages/extension/*.ts`, `recipes/`, `scripts/`, `bench/`, `test/`)
 * and the extension bundles (`packages/extension/dist/**`, `dist-test/**`) are parsed with the
 * TypeScript parser and names are resolved, so comments and string contents never count,
 * `redis.eval()` is not the global one, and neither is a bundle's own `function Function`. Flagged: calls of the global evaluator, the `Function` constructor (called, `new`-ed or
 * passed on), string timers, assignments to `innerHTML`/`outerHTML`, `insertAdjacentHTML`,
 * `document.write`, and — in extension code — `import()`/`importScripts()` of anything but a
 * literal. HTML files: remote `<script src>` and the same checks inside inline scripts. Recipes:
 * code-running step types and `javascript:` URLs. Every extension manifest: no `<all_urls>`, no
 * wildcard host outside `optional_host_permissions` (which may hold only `https://*\/*` and
 * `http://*\/*`), no wildcard `externally_connectable`, and a CSP whose `extension_pages` has
 * `script-src 'self'` and no `'unsafe-eval'`.
 *
 * Run `node scripts/check-dynamic-code.ts [--root DIR]`: exit 1 listing `file:line: rule: message`,
 * or exit 0 with a one-line summary. A missing extension build is a failure (build first).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { REFUSED_STEP_TYPES } from '../packages/protocol/src/steps.ts';

/** What a finding is about. */
export type Rule =
  | 'eval'
  | 'function-constructor'
  | 'string-timer'
  | 'html-assignment'
  | 'insert-adjacent-html'
  | 'document-write'
  | 'dynamic-import'
  | 'remote-script'
  | 'code-step'
  | 'script-url'
  | 'manifest'
  | 'missing-build';

/** One problem: `line` is 1-based, 0 when the finding is about a whole file or folder. */
export interface Finding {
  file: string;
  line: number;
  rule: Rule;
  message: string;
}

/** Options of the source checks. */
export interface ScanOptions {
  /** Extension code: also refuse `import()` and `importScripts()` of non-literals. Default `false`. */
  extension?: boolean;
}

/** What {@link scanRepo} saw. */
export interface ScanResult {
  findings: Finding[];
  /** Source, HTML and recipe files scanned. */
  files: number;
  /** Extension manifests checked. */
  manifests: number;
}

/** Extension build folders that must exist and are scanned. */
export const EXTENSION_BUILDS = ['packages/extension/dist', 'packages/extension/dist-test'] as const;

// Names are assembled so that no line of this file reads like the code it looks for.
const EVAL = ['ev', 'al'].join('');
const FUNCTION = ['Func', 'tion'].join('');
const HTML_PROPS = new Set(['inner', 'outer'].map((p) => `${p}HTML`));
const INSERT_HTML = ['insertAdjacent', 'HTML'].join('');
const WRITES = new Set(['write', 'writeln']);
const TIMERS = new Set(['setTimeout', 'setInterval']);
const IMPORT_SCRIPTS = ['import', 'Scripts'].join('');
const GLOBALS = new Set(['window', 'self', 'globalThis', 'global', 'top', 'parent', 'frames']);
const INVOKERS = new Set(['call', 'apply', 'bind', 'constructor']);
const ASSIGNMENTS = new Set([
  ts.SyntaxKind.EqualsToken,
  ts.SyntaxKind.PlusEqualsToken,
  ts.SyntaxKind.BarBarEqualsToken,
  ts.SyntaxKind.AmpersandAmpersandEqualsToken,
  ts.SyntaxKind.QuestionQuestionEqualsToken,
]);

const SCRIPT_KINDS: Record<string, ts.ScriptKind> = {
  '.ts': ts.ScriptKind.TS,
  '.mts': ts.ScriptKind.TS,
  '.cts': ts.ScriptKind.TS,
  '.tsx': ts.ScriptKind.TSX,
  '.js': ts.ScriptKind.JS,
  '.mjs': ts.ScriptKind.JS,
  '.cjs': ts.ScriptKind.JS,
  '.jsx': ts.ScriptKind.JSX,
};
const HTML_EXTS = new Set(['.html', '.htm']);
const SKIP_DIRS = new Set(['node_modules', '.git']);

/** Formats a finding as `file:line: rule: message`. */
export function formatFinding(f: Finding): string {
  return `${f.file}${f.line > 0 ? `:${f.line}` : ''}: ${f.rule}: ${f.message}`;
}

/**
 * Checks one JavaScript or TypeScript source. `file` names it in findings and picks the parser
 * (`.ts` → TypeScript, anything else → JavaScript); `lineOffset` is added to every line.
 */
export function scanSource(text: string, file: string, opts: ScanOptions = {}, lineOffset = 0): Finding[] {
  const ext = extname(file).toLowerCase();
  const kind = SCRIPT_KINDS[ext] ?? ts.ScriptKind.JS;
  const sf = ts.createSourceFile(`/scanned${SCRIPT_KINDS[ext] === undefined ? '.js' : ext}`, text, ts.ScriptTarget.Latest, true, kind);
  const out: Finding[] = [];
  let checker: ts.TypeChecker | undefined;
  /** Whether `id` names the global (no declaration of that name in this file is in scope). */
  const isGlobal = (id: ts.Identifier): boolean => {
    checker ??= checkerFor(sf);
    const declarations = checker.getSymbolAtLocation(id)?.declarations ?? [];
    return !declarations.some((d) => d.getSourceFile() === sf);
  };
  const report = (node: ts.Node, rule: Rule, message: string): void => {
    out.push({ file, line: sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1 + lineOffset, rule, message });
  };

  const visit = (node: ts.Node): void => {
    if (ts.isIdentifier(node)) checkIdentifier(node);
    else if (ts.isPropertyAccessExpression(node) || ts.isElementAccessExpression(node)) checkMember(node);
    else if (ts.isCallExpression(node) || ts.isNewExpression(node)) checkCall(node);
    else if (ts.isBinaryExpression(node) && ASSIGNMENTS.has(node.operatorToken.kind)) {
      const name = memberName(skipParens(node.left));
      if (name !== undefined && HTML_PROPS.has(name)) report(node, 'html-assignment', `assignment to ${name} parses a string as HTML; build the DOM with createElement/textContent`);
    }
    ts.forEachChild(node, visit);
  };

  function checkIdentifier(id: ts.Identifier): void {
    if ((id.text !== EVAL && id.text !== FUNCTION) || !isReference(id) || !isGlobal(id)) return;
    const parent = id.parent;
    if (id.text === EVAL) {
      report(id, 'eval', `${EVAL} runs a string as code`);
    } else if (id.text === FUNCTION) {
      // `Function.prototype`, `x instanceof Function` and `typeof Function` create nothing.
      if (ts.isPropertyAccessExpression(parent) && parent.expression === id && !INVOKERS.has(parent.name.text)) return;
      if (ts.isBinaryExpression(parent) && parent.operatorToken.kind === ts.SyntaxKind.InstanceOfKeyword && parent.right === id) return;
      if (ts.isTypeOfExpression(parent)) return;
      report(id, 'function-constructor', `the ${FUNCTION} constructor compiles a string into code`);
    }
  }

  function checkMember(node: ts.PropertyAccessExpression | ts.ElementAccessExpression): void {
    const name = memberName(node);
    if (name === undefined) return;
    const object = skipParens(node.expression);
    const onGlobal = ts.isIdentifier(object) && GLOBALS.has(object.text);
    if (onGlobal && name === EVAL) report(node, 'eval', `${EVAL} runs a string as code`);
    else if (onGlobal && name === FUNCTION) report(node, 'function-constructor', `the ${FUNCTION} constructor compiles a string into code`);
    else if (name === INSERT_HTML) report(node, 'insert-adjacent-html', `${INSERT_HTML} parses a string as HTML; build the DOM with createElement/textContent`);
    else if (WRITES.has(name) && isDocument(object)) report(node, 'document-write', `document.${name} parses a string as HTML`);
  }

  function checkCall(node: ts.CallExpression | ts.NewExpression): void {
    const callee = skipParens(node.expression);
    const args = node.arguments ?? ts.factory.createNodeArray<ts.Expression>();
    const first = args[0];
    const name = ts.isIdentifier(callee) ? callee.text : memberName(callee);
    if (name !== undefined && TIMERS.has(name) && first !== undefined && isStringish(first)) {
      report(node, 'string-timer', `${name} with a string runs it as code; pass a function`);
    }
    if (name === 'constructor' && !ts.isIdentifier(callee) && args.some(isStringish)) {
      report(node, 'function-constructor', `calling a .constructor with a string compiles it into code`);
    }
    if (opts.extension && node.expression.kind === ts.SyntaxKind.ImportKeyword && (first === undefined || !isLiteral(first))) {
      report(node, 'dynamic-import', 'import() of a computed specifier loads code chosen at run time; import a literal path');
    }
    if (opts.extension && ts.isIdentifier(callee) && callee.text === IMPORT_SCRIPTS && args.some((a) => !isLiteral(a) || /^\s*(https?:)?\/\//i.test(a.text))) {
      report(node, 'dynamic-import', `${IMPORT_SCRIPTS}() of a computed or remote URL loads code chosen at run time`);
    }
  }

  visit(sf);
  return out;
}

/**
 * A type checker over `sf` alone (no lib, no imports followed), used only to resolve names: a
 * bundle may declare its own `Function` (TypeBox's `Type.Function` builder does), which is not the
 * global constructor.
 */
function checkerFor(sf: ts.SourceFile): ts.TypeChecker {
  const host: ts.CompilerHost = {
    getSourceFile: (name) => (name === sf.fileName ? sf : undefined),
    getDefaultLibFileName: () => '/lib.d.ts',
    writeFile: () => undefined,
    getCurrentDirectory: () => '/',
    getCanonicalFileName: (name) => name,
    useCaseSensitiveFileNames: () => true,
    getNewLine: () => '\n',
    fileExists: (name) => name === sf.fileName,
    readFile: () => undefined,
  };
  const options: ts.CompilerOptions = { noLib: true, noResolve: true, allowJs: true, types: [], noEmit: true };
  return ts.createProgram({ rootNames: [sf.fileName], options, host }).getTypeChecker();
}

/** The property a member expression names, when it is static (`a.b`, `a['b']`). */
function memberName(node: ts.Node): string | undefined {
  if (ts.isPropertyAccessExpression(node)) return node.name.text;
  if (ts.isElementAccessExpression(node) && ts.isStringLiteralLike(node.argumentExpression)) return node.argumentExpression.text;
  return undefined;
}

/** Unwraps `(x)`, `x as T`, `x!` and the comma trick `(0, x)`. */
function skipParens(node: ts.Expression): ts.Expression {
  for (;;) {
    if (ts.isParenthesizedExpression(node) || ts.isAsExpression(node) || ts.isNonNullExpression(node) || ts.isSatisfiesExpression(node)) node = node.expression;
    else if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.CommaToken) node = node.right;
    else return node;
  }
}

function isDocument(node: ts.Expression): boolean {
  return (ts.isIdentifier(node) && node.text === 'document') || memberName(node) === 'document';
}

function isLiteral(node: ts.Expression): node is ts.StringLiteral | ts.NoSubstitutionTemplateLiteral {
  return ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node);
}

/** Whether an expression is evidently a string: a literal, a template, or a concatenation with one. */
function isStringish(node: ts.Expression): boolean {
  const n = skipParens(node);
  if (ts.isStringLiteralLike(n) || ts.isTemplateExpression(n) || ts.isTaggedTemplateExpression(n)) return true;
  if (ts.isBinaryExpression(n) && n.operatorToken.kind === ts.SyntaxKind.PlusToken) return isStringish(n.left) || isStringish(n.right);
  if (ts.isConditionalExpression(n)) return isStringish(n.whenTrue) || isStringish(n.whenFalse);
  return false;
}

/** Whether an identifier refers to a binding (rather than naming a property, a type or a label). */
function isReference(id: ts.Identifier): boolean {
  const p = id.parent;
  if (p === undefined) return true;
  if (ts.isPropertyAccessExpression(p)) return p.name !== id;
  if (ts.isQualifiedName(p) || ts.isTypeReferenceNode(p) || ts.isTypeQueryNode(p) || ts.isExpressionWithTypeArguments(p)) return false;
  if (ts.isImportSpecifier(p) || ts.isExportSpecifier(p) || ts.isImportClause(p) || ts.isNamespaceImport(p)) return false;
  if (ts.isLabeledStatement(p) || ts.isBreakOrContinueStatement(p) || ts.isJsxAttribute(p)) return false;
  if (ts.isBindingElement(p) && p.propertyName === id) return false;
  if (
    (ts.isPropertyAssignment(p) || ts.isMethodDeclaration(p) || ts.isPropertyDeclaration(p) || ts.isPropertySignature(p) ||
      ts.isMethodSignature(p) || ts.isGetAccessorDeclaration(p) || ts.isSetAccessorDeclaration(p) || ts.isEnumMember(p)) &&
    p.name === id
  ) {
    return false;
  }
  return true;
}

const SCRIPT_TAG = /<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi;
const SRC_ATTR = /(?:^|\s)src\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i;

/** Checks an HTML file: remote `<script src>`, and inline scripts as sources. */
export function scanHtml(text: string, file: string, opts: ScanOptions = {}): Finding[] {
  const out: Finding[] = [];
  for (const m of text.matchAll(SCRIPT_TAG)) {
    const line = lineAt(text, m.index);
    const src = SRC_ATTR.exec(m[1] ?? '');
    const url = src ? (src[1] ?? src[2] ?? src[3] ?? '') : undefined;
    if (url !== undefined && /^\s*(https?:)?\/\//i.test(url)) {
      out.push({ file, line, rule: 'remote-script', message: `script loaded from ${url.trim()}; serve every script from the package itself` });
    }
    const body = m[2] ?? '';
    if (url === undefined && body.trim() !== '') {
      const bodyStart = m.index + m[0].indexOf('>') + 1;
      out.push(...scanSource(body, `${file}.inline.js`, opts, lineAt(text, bodyStart) - 1).map((f) => ({ ...f, file })));
    }
  }
  return out;
}

/** Checks a recipe document for code-running steps and `javascript:` URLs (by text, so it works on invalid JSON too). */
export function scanRecipe(text: string, file: string): Finding[] {
  const out: Finding[] = [];
  const steps = new RegExp(`"type"\\s*:\\s*"(${REFUSED_STEP_TYPES.join('|')})"`, 'g');
  const scriptUrl = new RegExp(`"\\s*${['java', 'script:'].join('')}`, 'gi');
  for (const m of text.matchAll(steps)) out.push({ file, line: lineAt(text, m.index), rule: 'code-step', message: `step type "${m[1]}" runs code in the page and is refused` });
  for (const m of text.matchAll(scriptUrl)) out.push({ file, line: lineAt(text, m.index), rule: 'script-url', message: 'a javascript: URL runs code' });
  return out.sort((a, b) => a.line - b.line);
}

/** Optional host permissions may be exactly these: the user grants single sites at run time. */
export const ALLOWED_OPTIONAL_HOSTS: readonly string[] = ['https://*/*', 'http://*/*'];
const ALL_URLS = '<all_urls>';

/** Checks one extension manifest (its text). */
export function checkManifest(text: string, file: string): Finding[] {
  const out: Finding[] = [];
  const add = (line: number, message: string): void => void out.push({ file, line, rule: 'manifest', message });
  let m: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    m = parsed as Record<string, unknown>;
  } catch (e) {
    add(0, `not a JSON object: ${(e as Error).message}`);
    return out;
  }
  const lineOf = (value: string): number => {
    const i = text.indexOf(JSON.stringify(value));
    return i < 0 ? 0 : lineAt(text, i);
  };

  if (m.manifest_version !== 3) add(lineOf('manifest_version'), 'manifest_version must be 3');

  for (const [path, value] of strings(m, '')) {
    if (value.includes(ALL_URLS)) add(lineOf(value), `${path} grants ${ALL_URLS}; request single sites at run time instead`);
  }

  for (const [i, p] of list(m.host_permissions).entries()) {
    if (p !== ALL_URLS && isWildcardHost(p)) add(lineOf(p), `host_permissions[${i}] "${p}" is a wildcard host; request single sites through optional_host_permissions`);
  }
  for (const [i, cs] of list<Record<string, unknown>>(m.content_scripts).entries()) {
    for (const [j, p] of list(cs?.matches).entries()) {
      if (p !== ALL_URLS && isWildcardHost(p)) add(lineOf(p), `content_scripts[${i}].matches[${j}] "${p}" is a wildcard host; inject into granted sites at run time`);
    }
  }
  for (const [i, p] of list(m.optional_host_permissions).entries()) {
    if (p !== ALL_URLS && !ALLOWED_OPTIONAL_HOSTS.includes(p)) {
      add(lineOf(p), `optional_host_permissions[${i}] "${p}" is not allowed; only ${ALLOWED_OPTIONAL_HOSTS.join(' and ')}`);
    }
  }

  const ec = m.externally_connectable as Record<string, unknown> | undefined;
  if (ec !== undefined) {
    for (const [i, p] of list(ec.matches).entries()) {
      if (p !== ALL_URLS && isWildcardHost(p)) add(lineOf(p), `externally_connectable.matches[${i}] "${p}" lets any site message the extension`);
    }
    for (const [i, id] of list(ec.ids).entries()) {
      if (id.includes('*')) add(lineOf(id), `externally_connectable.ids[${i}] "${id}" lets any extension message this one`);
    }
  }

  const csp = m.content_security_policy;
  const pages = csp !== null && typeof csp === 'object' ? (csp as Record<string, unknown>).extension_pages : undefined;
  if (typeof pages !== 'string') {
    add(lineOf('content_security_policy'), `content_security_policy.extension_pages must be set and contain script-src 'self'`);
  } else {
    const line = lineOf(pages);
    const directives = new Map(pages.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map((d) => [d[0]!.toLowerCase(), d.slice(1)] as const));
    const scriptSrc = directives.get('script-src');
    if (!scriptSrc?.includes("'self'")) add(line, `content_security_policy.extension_pages has no script-src 'self'`);
    for (const [name, sources] of directives) {
      if (sources.includes("'unsafe-eval'")) add(line, `content_security_policy.extension_pages allows 'unsafe-eval' in ${name}`);
    }
  }
  return out;
}

/** Whether a match pattern matches any host: `*://*\/*`, `https://*.example.com/*`, `*`. */
export function isWildcardHost(pattern: string): boolean {
  if (pattern === ALL_URLS) return true;
  const m = /^([a-z*-]+):\/\/([^/]*)(\/.*)?$/i.exec(pattern);
  if (!m) return true; // not a match pattern Chrome accepts host-wise: treat as broad
  return m[2]!.startsWith('*');
}

function list<T = string>(value: unknown): T[] {
  return Array.isArray(value) ? (value.filter((v) => v !== null && v !== undefined) as T[]) : [];
}

function* strings(value: unknown, path: string): Generator<[string, string]> {
  if (typeof value === 'string') yield [path || '/', value];
  else if (Array.isArray(value)) for (const [i, v] of value.entries()) yield* strings(v, `${path}[${i}]`);
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) yield* strings(v, path ? `${path}.${k}` : k);
}

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

/** Every file under `dir` (sorted), skipping `node_modules` and `.git`. */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) {
      if (!SKIP_DIRS.has(name)) out.push(...walk(path));
    } else if (st.isFile()) {
      out.push(path);
    }
  }
  return out;
}

/** Scans the repository at `root`: every source root, both extension builds and their manifests. */
export function scanRepo(root: string): ScanResult {
  const findings: Finding[] = [];
  let files = 0;
  let manifests = 0;
  const rel = (p: string): string => relative(root, p).split(sep).join('/');

  const scanFile = (path: string, opts: ScanOptions, recipes = false): void => {
    const ext = extname(path).toLowerCase();
    const kind = SCRIPT_KINDS[ext];
    if (kind === undefined && !HTML_EXTS.has(ext) && !(recipes && ext === '.json')) return;
    const text = readFileSync(path, 'utf8');
    files++;
    if (kind !== undefined) findings.push(...scanSource(text, rel(path), opts));
    else if (HTML_EXTS.has(ext)) findings.push(...scanHtml(text, rel(path), opts));
    else findings.push(...scanRecipe(text, rel(path)));
  };
  const scanDir = (dir: string, opts: ScanOptions, recipes = false): void => {
    if (existsSync(dir) && statSync(dir).isDirectory()) for (const f of walk(dir)) scanFile(f, opts, recipes);
  };

  const packages = join(root, 'packages');
  if (existsSync(packages)) {
    for (const pkg of readdirSync(packages).sort()) scanDir(join(packages, pkg, 'src'), { extension: pkg === 'extension' });
  }
  const extensionDir = join(root, 'packages', 'extension');
  if (existsSync(extensionDir)) {
    for (const name of readdirSync(extensionDir).sort()) {
      const path = join(extensionDir, name);
      if (name.endsWith('.ts') && statSync(path).isFile()) scanFile(path, { extension: true });
    }
  }
  scanDir(join(root, 'recipes'), {}, true);
  for (const dir of ['scripts', 'bench', 'test']) scanDir(join(root, dir), {});

  for (const build of EXTENSION_BUILDS) {
    const dir = join(root, build);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      findings.push({ file: build, line: 0, rule: 'missing-build', message: 'the extension build is missing; build it first (npm run build) so the bundle can be scanned' });
      continue;
    }
    scanDir(dir, { extension: true });
    const manifest = join(dir, 'manifest.json');
    if (!existsSync(manifest)) {
      findings.push({ file: `${build}/manifest.json`, line: 0, rule: 'missing-build', message: 'the extension build has no manifest.json; build it first (npm run build)' });
      continue;
    }
    manifests++;
    findings.push(...checkManifest(readFileSync(manifest, 'utf8'), rel(manifest)));
  }
  return { findings, files, manifests };
}

/** Command line: `node scripts/check-dynamic-code.ts [--root DIR]`. */
export function main(argv: readonly string[]): number {
  const at = argv.indexOf('--root');
  const root = at >= 0 && argv[at + 1] ? argv[at + 1]! : fileURLToPath(new URL('..', import.meta.url));
  const { findings, files, manifests } = scanRepo(root);
  if (findings.length > 0) {
    for (const f of findings) process.stderr.write(`${formatFinding(f)}\n`);
    process.stderr.write(`✖ ${findings.length} finding${findings.length === 1 ? '' : 's'} in ${files} files and ${manifests} manifests\n`);
    return 1;
  }
  process.stdout.write(`✔ no dynamic code, remote scripts or broad permissions: ${files} files and ${manifests} extension manifests checked\n`);
  return 0;
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
