/**
 * @module test/support/observatory — Mozilla HTTP Observatory's score of one HTTP response.
 *
 * A port of the published rules: the repository mdn/mdn-http-observatory (algorithm version 4),
 * whose scoring table MDN publishes as "HTTP Observatory scoring methodology":
 * - src/scanner/index.js — the score starts at 100 and takes every test's modifier; the bonuses
 *   (positive modifiers) count only if the score with the penalties alone is at least 90;
 * - src/grader/charts.js (`SCORE_TABLE`) — the modifier of each result (`MODIFIERS` below), and
 *   src/grader/grader.js — the grade of a score;
 * - src/analyzer/tests/*.js — one function below per test, same names, same order of checks:
 *   csp.js (+ src/analyzer/cspParser.js), cookies.js, cors.js, redirection.js, referrer-policy.js,
 *   strict-transport-security.js, subresource-integrity.js, x-content-type-options.js,
 *   x-frame-options.js, cross-origin-resource-policy.js.
 *
 * Where this port differs from a live scan, and why that is safe here:
 * - Headers only: `<meta http-equiv>` is not read (the tests assert our pages have none).
 * - The HSTS preload list is not consulted (a test server's 127.0.0.1 is never on it), so no
 *   `hsts-preloaded`; the certificate chain counts as valid (the harness trusts its CA).
 * - Redirection: the scanner starts at `http://host/` on port 80. A server that speaks only TLS
 *   gets `redirection-not-needed-no-http` (an https URL here); a plain-HTTP one `redirection-missing`.
 * - Cookies: the scanner's jar holds the cookies of the whole visit; pass them as `cookies`.
 * - CORS: the scanner repeats the request with an `Origin` of its own; pass that answer as `corsProbe`.
 * - Any status is scored (the scanner grades only 2xx, 3xx, 401 and 403: this is stricter).
 * - Subresource Integrity: `<script>` tags are found with a regular expression, not jsdom, and
 *   "same second-level domain" compares the last two labels of the host names, not the public
 *   suffix list (our pages load no script by URL).
 */

/** What a scan saw of one URL. */
export interface ObservedResponse {
  url: string;
  headers: Headers;
  body: string;
  /** `Set-Cookie` lines of the whole visit (the scanner's cookie jar). Default: this response's. */
  cookies?: string[];
  /** The same URL requested again with `Origin: origin` (the scanner's CORS probe). */
  corsProbe?: { origin: string; headers: Headers };
}

export interface ObservatoryScore {
  score: number;
  grade: string;
  /** Each test's result and its modifier. */
  tests: Record<string, { result: string; modifier: number }>;
}

/** charts.js `SCORE_TABLE`: the modifier of every result. */
export const MODIFIERS: Record<string, number> = {
  'csp-implemented-with-no-unsafe-default-src-none': 10,
  'csp-implemented-with-no-unsafe': 5,
  'csp-implemented-with-unsafe-inline-in-style-src-only': 0,
  'csp-implemented-with-insecure-scheme-in-passive-content-only': -10,
  'csp-implemented-with-unsafe-eval': -10,
  'csp-implemented-with-unsafe-inline': -20,
  'csp-implemented-with-insecure-scheme': -20,
  'csp-header-invalid': -25,
  'csp-not-implemented': -25,
  'csp-not-implemented-but-reporting-enabled': -25,
  'csp-implemented-but-duplicate-directives': 0,
  'cookies-secure-with-httponly-sessions-and-samesite': 5,
  'cookies-secure-with-httponly-sessions': 0,
  'cookies-not-found': 0,
  'cookies-without-secure-flag-but-protected-by-hsts': -5,
  'cookies-session-without-secure-flag-but-protected-by-hsts': -10,
  'cookies-without-secure-flag': -20,
  'cookies-samesite-flag-invalid': -20,
  'cookies-anticsrf-without-samesite-flag': -20,
  'cookies-session-without-httponly-flag': -30,
  'cookies-session-without-secure-flag': -40,
  'cross-origin-resource-sharing-not-implemented': 0,
  'cross-origin-resource-sharing-implemented-with-public-access': 0,
  'cross-origin-resource-sharing-implemented-with-restricted-access': 0,
  'cross-origin-resource-sharing-implemented-with-universal-access': -50,
  'redirection-all-redirects-preloaded': 0,
  'redirection-to-https': 0,
  'redirection-not-needed-no-http': 0,
  'redirection-off-host-from-http': -5,
  'redirection-not-to-https-on-initial-redirection': -10,
  'redirection-not-to-https': -20,
  'redirection-missing': -20,
  'redirection-invalid-cert': -20,
  'referrer-policy-private': 5,
  'referrer-policy-not-implemented': 0,
  'referrer-policy-unsafe': -5,
  'referrer-policy-header-invalid': -5,
  'hsts-preloaded': 5,
  'hsts-implemented-max-age-at-least-six-months': 0,
  'hsts-implemented-max-age-less-than-six-months': -10,
  'hsts-not-implemented': -20,
  'hsts-header-invalid': -20,
  'hsts-not-implemented-no-https': -20,
  'hsts-invalid-cert': -20,
  'sri-implemented-and-all-scripts-loaded-securely': 5,
  'sri-implemented-and-external-scripts-loaded-securely': 5,
  'sri-not-implemented-response-not-html': 0,
  'sri-not-implemented-but-no-scripts-loaded': 0,
  'sri-not-implemented-but-all-scripts-loaded-from-secure-origin': 0,
  'sri-not-implemented-but-external-scripts-loaded-securely': -5,
  'sri-implemented-but-external-scripts-not-loaded-securely': -20,
  'sri-not-implemented-and-external-scripts-not-loaded-securely': -50,
  'x-content-type-options-nosniff': 0,
  'x-content-type-options-not-implemented': -5,
  'x-content-type-options-header-invalid': -5,
  'x-frame-options-implemented-via-csp': 5,
  'x-frame-options-sameorigin-or-deny': 0,
  'x-frame-options-allow-from-origin': 0,
  'x-frame-options-not-implemented': -20,
  'x-frame-options-header-invalid': -20,
  'cross-origin-resource-policy-header-invalid': -5,
  'cross-origin-resource-policy-implemented-with-cross-origin': 0,
  'cross-origin-resource-policy-implemented-with-same-origin': 10,
  'cross-origin-resource-policy-implemented-with-same-site': 10,
  'cross-origin-resource-policy-not-implemented': 0,
  'html-not-parsable': -20,
};

/** charts.js `MINIMUM_SCORE_FOR_EXTRA_CREDIT`. */
const MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90;

/** Scores one response as scanner/index.js does. */
export function observatoryScore(r: ObservedResponse): ObservatoryScore {
  const tests: Record<string, string> = {
    'content-security-policy': contentSecurityPolicyTest(r).result,
    cookies: cookiesTest(r),
    'cross-origin-resource-sharing': crossOriginResourceSharingTest(r),
    redirection: redirectionTest(r),
    'referrer-policy': referrerPolicyTest(r),
    'strict-transport-security': strictTransportSecurityTest(r).result,
    'subresource-integrity': subresourceIntegrityTest(r),
    'x-content-type-options': xContentTypeOptionsTest(r),
    'x-frame-options': xFrameOptionsTest(r),
    'cross-origin-resource-policy': crossOriginResourcePolicyTest(r),
  };
  let withExtraCredit = 100;
  let uncurved = 100;
  const out: ObservatoryScore['tests'] = {};
  for (const [name, result] of Object.entries(tests)) {
    const modifier = MODIFIERS[result];
    if (modifier === undefined) throw new Error(`no modifier for ${result}`);
    out[name] = { result, modifier };
    withExtraCredit += modifier;
    if (modifier < 0) uncurved += modifier;
  }
  const score = Math.max(uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtraCredit : uncurved, 0);
  return { score, grade: gradeOf(score), tests: out };
}

/** grader.js `getGradeAndLikelihoodForScore`: the grade of the score rounded down to a multiple of 5, capped at 100. */
function gradeOf(score: number): string {
  const band = Math.min(score - (score % 5), 100);
  if (band >= 100) return 'A+';
  if (band >= 90) return 'A';
  if (band >= 85) return 'A-';
  if (band >= 80) return 'B+';
  if (band >= 70) return 'B';
  if (band >= 65) return 'B-';
  if (band >= 60) return 'C+';
  if (band >= 50) return 'C';
  if (band >= 45) return 'C-';
  if (band >= 40) return 'D+';
  if (band >= 30) return 'D';
  if (band >= 25) return 'D-';
  return 'F';
}

// ---- cspParser.js ----

type Csp = Map<string, Set<string>>;
const SHORTEST_DIRECTIVE_LENGTH = 'img-src'.length - 1;
const ALLOWED_DUPLICATE_KEYS = new Set(['report-uri', 'report-to']);
const DUPLICATE_WARNINGS_KEY = '_observatory_duplicate_key_warnings';
const compareString = new Intl.Collator('en').compare;

/** cspParser.js `parseCsp`: one map of directive → sources for a list of policies (a source must be in every policy to count). */
function parseCsp(cspList: string[]): Csp {
  const clean = cspList.map((c) => c.replaceAll(/[\r\n]/g, '').trim());
  if (clean.length === 0) return new Map();
  for (const c of clean) if (!c || c.length < SHORTEST_DIRECTIVE_LENGTH) throw new Error(`Invalid policy: ${c}`);
  type Source = { source: string; index: number; keep: boolean };
  const csp = new Map<string, Source[]>();
  const duplicateWarnings = new Set<string>();
  for (const [policyIndex, policy] of clean.entries()) {
    const seen = new Set<string>();
    for (const [directiveEntry, ...valueEntries] of policy.split(';').map((e) => e.trim().split(/\s+/))) {
      if (!directiveEntry) continue;
      const directive = directiveEntry.toLowerCase();
      if (seen.has(directive)) {
        if (ALLOWED_DUPLICATE_KEYS.has(directive)) duplicateWarnings.add(directive);
        else throw new Error(`Duplicate directive ${directive} in policy ${policyIndex}`);
      } else seen.add(directive);
      const keep = policyIndex === 0;
      const values: Source[] = valueEntries.length
        ? valueEntries.map((raw) => ({ source: raw.trim().toLocaleLowerCase(), index: policyIndex, keep }))
        : directive.endsWith('-src') ? [{ source: "'none'", index: policyIndex, keep }] : [];
      const combined = policyIndex === 0 ? [...values] : [...(csp.get(directive) ?? []), ...values];
      combined.sort((a, b) => compareString(a.source, b.source));
      for (let i = 1; i < combined.length; i++) {
        const source = combined[i]!;
        const prev = combined[i - 1]!;
        if (source.index === prev.index && source.source.startsWith(prev.source)) source.keep = false;
        if (source.index !== prev.index && pathPartMatch(prev.source, source.source)) source.keep = true;
      }
      csp.set(directive, combined.filter((s) => s.keep));
      if (policyIndex === 0 && cspList.length > 1) for (const s of csp.get(directive) ?? []) s.keep = false;
    }
  }
  const final: Csp = new Map([...csp.entries()].map(([d, sources]) => [d, sources.length ? new Set(sources.map((s) => s.source)) : new Set(["'none'"])]));
  if (duplicateWarnings.size) final.set(DUPLICATE_WARNINGS_KEY, duplicateWarnings);
  return final;
}

/** cspParser.js `pathPartMatch`. */
function pathPartMatch(pathA: string, pathB: string): boolean {
  if (pathA.length === 0) return true;
  if (pathA === '/' && pathB.length === 0) return true;
  const exactMatch = !pathA.endsWith('/');
  const a = pathA.split('/');
  const b = pathB.split('/');
  if (a.length > b.length) return false;
  if (exactMatch && a.length !== b.length) return false;
  if (!exactMatch) a.pop();
  for (let i = 0; i < a.length; i++) if (decodeURIComponent(a[i]!) !== decodeURIComponent(b[i]!)) return false;
  return true;
}

// ---- csp.js ----

const DANGEROUSLY_BROAD = new Set(['ftp:', 'http:', 'https:', '*', 'http://*', 'http://*.*', 'https://*', 'https://*.*']);
const UNSAFE_INLINE = new Set(["'unsafe-inline'", 'data:']);
const DANGEROUSLY_BROAD_AND_UNSAFE_INLINE = new Set([...DANGEROUSLY_BROAD, ...UNSAFE_INLINE]);
const PASSIVE_DIRECTIVES = new Set(['img-src', 'media-src']);
const NONCES_HASHES = ["'sha256-", "'sha384-", "'sha512-", "'nonce-"];
const startsWithNoncesHash = (sources: Iterable<string>) => [...sources].some((s) => NONCES_HASHES.some((n) => s.startsWith(n)));

/** csp.js `contentSecurityPolicyTest` (headers only); `data` is the parsed policy when it could be read. */
function contentSecurityPolicyTest(r: ObservedResponse): { result: string; data: Record<string, string[]> | null } {
  const header = r.headers.get('content-security-policy');
  // csp.js `splitCspHeaders`: several headers (or one with commas) are several policies.
  const policies = header === null ? [] : header.split(',').map((s) => s.trim());
  let csp: Csp;
  try {
    csp = parseCsp(policies);
  } catch {
    return { result: 'csp-header-invalid', data: null };
  }
  if (csp.size === 0) {
    return { result: r.headers.get('content-security-policy-report-only') ? 'csp-not-implemented-but-reporting-enabled' : 'csp-not-implemented', data: null };
  }
  let result: string | null = null;
  const objectSrc = csp.get('object-src') ?? csp.get('default-src') ?? new Set(['*']);
  const scriptSrc = csp.get('script-src') ?? csp.get('default-src') ?? new Set(['*']);
  const styleSrc = csp.get('style-src') ?? csp.get('default-src') ?? new Set(['*']);
  for (const list of [scriptSrc, styleSrc]) if (startsWithNoncesHash(list) && list.has("'unsafe-inline'")) list.delete("'unsafe-inline'");
  if (startsWithNoncesHash(scriptSrc) && scriptSrc.has("'strict-dynamic'")) {
    for (const s of scriptSrc) if ([...DANGEROUSLY_BROAD].some((b) => s.startsWith(b)) || s === "'self'" || s === "'unsafe-inline'") scriptSrc.delete(s);
  } else if (scriptSrc.has("'strict-dynamic'") && result === null) {
    result = 'csp-header-invalid';
  }
  const active = [...csp.entries()].filter(([d]) => !PASSIVE_DIRECTIVES.has(d) && d !== 'script-src').flatMap(([, l]) => [...l]);
  active.push(...scriptSrc);
  const passive = [...PASSIVE_DIRECTIVES].flatMap((d) => [...(csp.get(d) ?? csp.get('default-src') ?? new Set<string>())]);
  const https = new URL(r.url).protocol === 'https:';
  const insecure = (s: string) => s.startsWith('http:') || s.startsWith('ftp:');
  if ([...scriptSrc].some((s) => DANGEROUSLY_BROAD_AND_UNSAFE_INLINE.has(s)) || [...objectSrc].some((s) => DANGEROUSLY_BROAD.has(s))) {
    result ??= 'csp-implemented-with-unsafe-inline';
  }
  if (https && active.some(insecure)) result ??= 'csp-implemented-with-insecure-scheme';
  if (new Set([...scriptSrc, ...styleSrc]).has("'unsafe-eval'")) result ??= 'csp-implemented-with-unsafe-eval';
  if (https && passive.some(insecure)) result ??= 'csp-implemented-with-insecure-scheme-in-passive-content-only';
  if ([...styleSrc].some((s) => DANGEROUSLY_BROAD_AND_UNSAFE_INLINE.has(s))) result ??= 'csp-implemented-with-unsafe-inline-in-style-src-only';
  const defaultSrc = csp.get('default-src');
  if (defaultSrc?.has("'none'") && defaultSrc.size === 1) result ??= 'csp-implemented-with-no-unsafe-default-src-none';
  else result ??= 'csp-implemented-with-no-unsafe';
  const passed = ['csp-implemented-with-no-unsafe', 'csp-implemented-with-no-unsafe-default-src-none', 'csp-implemented-with-unsafe-inline-in-style-src-only', 'csp-implemented-with-insecure-scheme-in-passive-content-only'];
  if (passed.includes(result) && csp.has(DUPLICATE_WARNINGS_KEY)) result = 'csp-implemented-but-duplicate-directives';
  const data: Record<string, string[]> = {};
  for (const [k, v] of csp) if (k !== DUPLICATE_WARNINGS_KEY) data[k] = [...v].sort();
  return { result, data };
}

// ---- cookies.js ----

interface JarCookie { key: string; secure: boolean; httpOnly: boolean; sameSite: string | undefined }

/** Parses `Set-Cookie` lines into the jar the scanner would hold (deleted cookies removed, the last one of a name kept). */
function cookieJar(lines: string[]): JarCookie[] {
  const jar = new Map<string, JarCookie>();
  for (const line of lines) {
    const [pair = '', ...attrs] = line.split(';');
    const key = pair.slice(0, pair.indexOf('=')).trim();
    if (!key) continue;
    const cookie: JarCookie = { key, secure: false, httpOnly: false, sameSite: undefined };
    let expired = false;
    for (const a of attrs) {
      const [name = '', ...rest] = a.trim().split('=');
      const value = rest.join('=').trim();
      const n = name.trim().toLowerCase();
      if (n === 'secure') cookie.secure = true;
      else if (n === 'httponly') cookie.httpOnly = true;
      // tough-cookie (the scanner's jar) keeps only the values it knows.
      else if (n === 'samesite') cookie.sameSite = ['strict', 'lax', 'none'].includes(value.toLowerCase()) ? value.toLowerCase() : undefined;
      else if (n === 'max-age' && Number(value) <= 0) expired = true;
      else if (n === 'expires' && Date.parse(value) < Date.now()) expired = true;
    }
    if (expired) jar.delete(key);
    else jar.set(key, cookie);
  }
  return [...jar.values()];
}

/** cookies.js `containsInvalidSameSiteCookie`. */
function containsInvalidSameSiteCookie(line: string): boolean {
  for (const p of line.trim().split(';')) {
    const [key = '', value] = p.trim().split('=');
    if (key.trim().toLowerCase() === 'samesite') {
      if (!value) return true;
      if (!['lax', 'strict', 'none'].includes(value.trim().toLowerCase())) return true;
    }
  }
  return false;
}

/** cookies.js `cookiesTest`. */
function cookiesTest(r: ObservedResponse): string {
  const goodness = [
    'cookies-without-secure-flag-but-protected-by-hsts',
    'cookies-without-secure-flag',
    'cookies-session-without-secure-flag-but-protected-by-hsts',
    'cookies-samesite-flag-invalid',
    'cookies-anticsrf-without-samesite-flag',
    'cookies-session-without-httponly-flag',
    'cookies-session-without-secure-flag',
  ];
  const worse = (next: string, current: string | null) => (current === null || goodness.indexOf(next) > goodness.indexOf(current) ? next : current);
  const hsts = strictTransportSecurityTest(r).pass;
  let result: string | null = null;
  for (const raw of r.headers.getSetCookie()) if (containsInvalidSameSiteCookie(raw)) result = worse('cookies-samesite-flag-invalid', result);
  const all = cookieJar(r.cookies ?? r.headers.getSetCookie());
  if (all.length === 0) return 'cookies-not-found';
  let missingSameSite = false;
  for (const c of all) {
    const sessionId = ['login', 'sess'].some((i) => c.key.toLowerCase().includes(i));
    const anticsrf = c.key.toLowerCase().includes('csrf');
    if (!c.secure && c.sameSite === 'none') result = worse('cookies-samesite-flag-invalid', result);
    if (!c.secure && hsts) result = worse('cookies-without-secure-flag-but-protected-by-hsts', result);
    else if (!c.secure) result = worse('cookies-without-secure-flag', result);
    if (anticsrf && !c.sameSite) result = worse('cookies-anticsrf-without-samesite-flag', result);
    if (sessionId && !c.secure && hsts) result = worse('cookies-session-without-secure-flag-but-protected-by-hsts', result);
    else if (sessionId && !c.secure) result = worse('cookies-session-without-secure-flag', result);
    if (sessionId && !c.httpOnly) result = worse('cookies-session-without-httponly-flag', result);
    if (!c.sameSite) missingSameSite = true;
  }
  return result ?? (missingSameSite ? 'cookies-secure-with-httponly-sessions' : 'cookies-secure-with-httponly-sessions-and-samesite');
}

// ---- cors.js ----

/** cors.js `crossOriginResourceSharingTest`. */
function crossOriginResourceSharingTest(r: ObservedResponse): string {
  const probe = r.corsProbe;
  const acao = probe?.headers.get('access-control-allow-origin');
  if (!probe || !acao) return 'cross-origin-resource-sharing-not-implemented';
  const data = acao.slice(0, 256).trim().toLowerCase();
  if (data === '*') return 'cross-origin-resource-sharing-implemented-with-public-access';
  const credentials = probe.headers.get('access-control-allow-credentials');
  if (probe.origin === acao && credentials?.toLowerCase().trim() === 'true') return 'cross-origin-resource-sharing-implemented-with-universal-access';
  return 'cross-origin-resource-sharing-implemented-with-restricted-access';
}

// ---- redirection.js (see the module comment) ----

function redirectionTest(r: ObservedResponse): string {
  return new URL(r.url).protocol === 'https:' ? 'redirection-not-needed-no-http' : 'redirection-missing';
}

// ---- referrer-policy.js ----

/** referrer-policy.js `referrerPolicyTest` (headers only). */
function referrerPolicyTest(r: ObservedResponse): string {
  const good = ['no-referrer', 'same-origin', 'strict-origin', 'strict-origin-when-cross-origin'];
  const bad = ['origin', 'origin-when-cross-origin', 'unsafe-url', 'no-referrer-when-downgrade'];
  const header = r.headers.get('referrer-policy');
  if (header === null) return 'referrer-policy-not-implemented';
  const policy = header.split(',').filter((e) => [...good, ...bad].includes(e.toLowerCase().trim())).reverse()[0]?.toLowerCase().trim() ?? '';
  return good.includes(policy) ? 'referrer-policy-private' : bad.includes(policy) ? 'referrer-policy-unsafe' : 'referrer-policy-header-invalid';
}

// ---- strict-transport-security.js ----

/** 15768000 s is six months; the scanner accepts 15552000 ("a white lie"). */
const SIX_MONTHS = 15552000;

/** strict-transport-security.js `strictTransportSecurityTest` (no preload list; see the module comment). */
function strictTransportSecurityTest(r: ObservedResponse): { result: string; pass: boolean } {
  let result = 'hsts-not-implemented';
  if (new URL(r.url).protocol !== 'https:') result = 'hsts-not-implemented-no-https';
  else {
    const header = r.headers.get('strict-transport-security');
    if (header !== null) {
      const data = header.slice(0, 1024);
      let maxAge: number | null = null;
      if (data.includes(',')) result = 'hsts-header-invalid'; // set more than once
      else {
        for (const p of data.split(';').map((i) => i.trim().toLowerCase())) if (p.startsWith('max-age=')) maxAge = Number.parseInt(p.slice(8, 128), 10);
        result = maxAge === null ? 'hsts-header-invalid' : maxAge < SIX_MONTHS ? 'hsts-implemented-max-age-less-than-six-months' : 'hsts-implemented-max-age-at-least-six-months';
      }
    }
  }
  return { result, pass: result === 'hsts-implemented-max-age-at-least-six-months' || result === 'hsts-preloaded' };
}

// ---- subresource-integrity.js ----

const HTML_TYPES = new Set(['text/html', 'application/xhtml+xml']);

/** subresource-integrity.js `subresourceIntegrityTest` (see the module comment for the approximations). */
function subresourceIntegrityTest(r: ObservedResponse): string {
  const goodness = [
    'sri-implemented-and-all-scripts-loaded-securely',
    'sri-implemented-and-external-scripts-loaded-securely',
    'sri-implemented-but-external-scripts-not-loaded-securely',
    'sri-not-implemented-but-external-scripts-loaded-securely',
    'sri-not-implemented-and-external-scripts-not-loaded-securely',
    'sri-not-implemented-response-not-html',
  ];
  const worse = (next: string, current: string | null) => (current === null || goodness.indexOf(next) > goodness.indexOf(current) ? next : current);
  const mime = (r.headers.get('content-type') ?? '').split(';')[0]!;
  if (!HTML_TYPES.has(mime)) return 'sri-not-implemented-response-not-html';
  const scripts = [...r.body.matchAll(/<script\b([^>]*)>/gi)].map((m) => m[1]!);
  const attr = (attrs: string, name: string) => new RegExp(`\\b${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(attrs)?.slice(1).find((v) => v !== undefined);
  const site = (host: string) => host.split('.').slice(-2).join('.');
  const pageUrl = new URL(r.url);
  let result: string | null = null;
  let foreign = false;
  for (const attrs of scripts) {
    const src = attr(attrs, 'src');
    if (!src) continue;
    const integrity = attr(attrs, 'integrity');
    const relativeProtocol = /^(\/\/)[^/]/.test(src);
    const fullUrl = /^https?:\/\//.test(src);
    const relativeOrigin = !relativeProtocol && !fullUrl;
    const sameSecondLevelDomain = relativeProtocol || relativeOrigin || site(new URL(src).hostname) === site(pageUrl.hostname);
    const secureOrigin = relativeOrigin || (sameSecondLevelDomain && !relativeProtocol);
    if (!secureOrigin) foreign = true;
    const scheme = !relativeProtocol && !relativeOrigin ? new URL(src).protocol : null;
    const secureScheme = scheme === 'https:' || (relativeOrigin && pageUrl.protocol === 'https:');
    if (!secureOrigin) {
      if (integrity && !secureScheme) result = worse('sri-implemented-but-external-scripts-not-loaded-securely', result);
      else if (!integrity && secureScheme) result = worse('sri-not-implemented-but-external-scripts-loaded-securely', result);
      else if (!integrity && !secureScheme) result = worse('sri-not-implemented-and-external-scripts-not-loaded-securely', result);
    } else if (integrity && secureScheme && !result) result = 'sri-implemented-and-all-scripts-loaded-securely';
  }
  if (scripts.length === 0) return 'sri-not-implemented-but-no-scripts-loaded';
  return result ?? (foreign ? 'sri-implemented-and-external-scripts-loaded-securely' : 'sri-not-implemented-but-all-scripts-loaded-from-secure-origin');
}

// ---- x-content-type-options.js, x-frame-options.js, cross-origin-resource-policy.js ----

/** x-content-type-options.js `xContentTypeOptionsTest`. */
function xContentTypeOptionsTest(r: ObservedResponse): string {
  const header = firstHeader(r.headers, 'x-content-type-options');
  if (header === null) return 'x-content-type-options-not-implemented';
  return header.slice(0, 256).trim().toLowerCase() === 'nosniff' ? 'x-content-type-options-nosniff' : 'x-content-type-options-header-invalid';
}

/** x-frame-options.js `xFrameOptionsTest`: CSP `frame-ancestors` wins over the header. */
function xFrameOptionsTest(r: ObservedResponse): string {
  const header = firstHeader(r.headers, 'x-frame-options');
  let result = 'x-frame-options-not-implemented';
  if (header !== null) {
    const xfo = header.slice(0, 1024).trim().toLowerCase();
    result = ['deny', 'sameorigin'].includes(xfo) ? 'x-frame-options-sameorigin-or-deny' : xfo.startsWith('allow-from') ? 'x-frame-options-allow-from-origin' : 'x-frame-options-header-invalid';
  }
  if (contentSecurityPolicyTest(r).data?.['frame-ancestors']) result = 'x-frame-options-implemented-via-csp';
  return result;
}

/** cross-origin-resource-policy.js `crossOriginResourcePolicyTest` (headers only). */
function crossOriginResourcePolicyTest(r: ObservedResponse): string {
  const header = firstHeader(r.headers, 'cross-origin-resource-policy');
  if (!header) return 'cross-origin-resource-policy-not-implemented';
  const corp = header.slice(0, 256).trim().toLowerCase();
  return corp === 'same-site' ? 'cross-origin-resource-policy-implemented-with-same-site'
    : corp === 'same-origin' ? 'cross-origin-resource-policy-implemented-with-same-origin'
      : corp === 'cross-origin' ? 'cross-origin-resource-policy-implemented-with-cross-origin'
        : 'cross-origin-resource-policy-header-invalid';
}

/** utils.js `getFirstHttpHeader`: a `Headers` object joins repeated headers with ", "; the first is before the first comma. */
function firstHeader(headers: Headers, name: string): string | null {
  const v = headers.get(name);
  return v === null ? null : v.split(',')[0]!;
}
