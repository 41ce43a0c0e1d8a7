/**
 * @module fuzz/http — the HTTP surface: generated requests across every route (the REST API, the
 * sign-in pages, oidc-provider's `/oauth2/*`, unknown paths), well-formed ones through undici and
 * malformed ones as raw bytes over a fresh TLS (or plain TCP) connection, each checked against
 * the oracle.
 */
import { Type } from '@sinclair/typebox';
import { TaskSubmission, Step } from '@palisade/protocol';
import { request, type Dispatcher } from 'undici';
import { CLIENT_SCOPES } from '../../packages/server/src/auth/clients.ts';
import { rngFor, type Rng } from './rng.ts';
import { encode, mutate, mutateText, valid, word, str, deep, anyValue, tagDeep, tamper, type Raw, ORIGINS, GRANTED, PH } from './gen.ts';
import { exchange, type RawResponse, type Target } from './raw.ts';
import { leaks, problemViolations, printable, type Violation } from './oracle.ts';

/** The API's client-creation body (packages/server/src/api/routes.ts keeps it private). */
const CreateClient = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 128 }), scopes: Type.Optional(Type.Array(Type.Union(CLIENT_SCOPES.map((s) => Type.Literal(s))), { minItems: 1, maxItems: 8, uniqueItems: true })) },
  { additionalProperties: false },
);

/** One generated HTTP input. Strings and bytes may hold placeholders (`@@…@@`), filled in when sent. */
export interface HttpInput {
  index: number;
  /** The route it aims at (`POST /api/v1/tasks`, `raw:smuggle`, …): for the report and the known-finding matchers. */
  route: string;
  /** `undici`: a well-formed request; `raw`: bytes over a fresh TLS connection; `tcp`: bytes over plain TCP to the TLS port. */
  mode: 'undici' | 'raw' | 'tcp';
  method: string;
  target: string;
  headers: [string, string][];
  body?: Buffer | undefined;
  /** raw/tcp: the bytes, in chunks written one after another. */
  chunks?: Buffer[] | undefined;
  /** raw: responses a correct server sends (0 when the request is deliberately incomplete). */
  expect: number;
  tags: string[];
  /** Extra time the server may take (Prefer: wait), ms. */
  waitMs: number;
}

/** What the run knows that inputs refer to (tokens, ids), filled in when an input is sent. */
export interface HttpContext {
  target: Target;
  origin: string;
  adminToken: string;
  clientToken: string;
  agentToken: string;
  clientId: string;
  clientSecret: string;
  taskIds: string[];
}

/** encodeURIComponent that never throws (lone surrogates become U+FFFD). */
const enc = (s: string) => encodeURIComponent(s.toWellFormed());

// ── generation ───────────────────────────────────────────────────────────────────────────────────

type TokenClass = 'none' | 'admin' | 'client' | 'agent' | 'garbage' | 'tampered' | 'alg-none' | 'basic';

const TOKEN_OF: Record<TokenClass, string> = {
  none: '', admin: PH.adminToken, client: PH.clientToken, agent: PH.agentToken, garbage: '', tampered: '@@TAMPERED@@', 'alg-none': '@@ALG_NONE@@', basic: '@@BASIC@@',
};

function authHeader(rng: Rng, cls: TokenClass): [string, string][] {
  if (cls === 'none') return [];
  if (cls === 'basic') return [['authorization', `Basic ${rng.chance(0.7) ? '@@BASIC@@' : Buffer.from(`${word(rng)}:${word(rng)}`).toString('base64')}`]];
  const token = cls === 'garbage'
    ? rng.pick([word(rng, 1, 60), 'eyJhbGciOiJIUzI1NiJ9.e30.', 'a.b.c', `${word(rng)}.${word(rng)}.${word(rng)}`, 'x'.repeat(rng.pick([1000, 8000, 20_000])), '=====', '....', str(rng)])
    : TOKEN_OF[cls];
  const form = rng.weighted<string>([['Bearer T', 85], ['bearer T', 3], ['BEARER T', 2], ['Bearer  T', 2], ['Bearer T extra', 2], ['Bearer', 1], ['Token T', 1], ['Bearer T,Bearer T', 1], [' Bearer T ', 1], ['Bearer "T"', 1]]);
  return [['authorization', form.replaceAll('T', token)]];
}

function tokenClass(rng: Rng): TokenClass {
  return rng.weighted<TokenClass>([['none', 14], ['admin', 30], ['client', 26], ['agent', 8], ['garbage', 14], ['tampered', 4], ['alg-none', 2], ['basic', 2]]);
}

const JSON_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json;charset=latin1', 'application/json; charset=utf-16',
  'application/vnd.api+json', 'application/merge-patch+json', 'text/plain', 'text/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
  '', '*/*', 'application/json, text/plain', 'application/json; boundary=', 'application/jsonx', 'application/ json', 'json',
];

/** A JSON body for `schema` (valid, mutated, broken as text, junk, empty or huge). */
function jsonBody(rng: Rng, makeValid: () => unknown, tags: string[]): Buffer {
  const mode = rng.weighted<string>([['valid', 26], ['mutated', 40], ['text', 14], ['junk', 6], ['empty', 4], ['literal', 6], ['huge', 0.6], ['deep', 3]]);
  tags.push(`body:${mode}`);
  switch (mode) {
    case 'valid':
      return Buffer.from(encode(makeValid()));
    case 'mutated': {
      const m = mutate(rng, makeValid());
      tags.push(...m.did.map((d) => `mut:${d}`));
      return Buffer.from(tagDeep(encode(m.value), tags));
    }
    case 'text': {
      const inner = rng.chance(0.5) ? undefined : mutate(rng, makeValid());
      const base = tagDeep(encode(inner ? inner.value : makeValid()), tags);
      if (inner) tags.push(...inner.did.map((d) => `mut:${d}`));
      const m = mutateText(rng, base);
      tags.push(`text:${m.did}`);
      return m.bytes;
    }
    case 'junk':
      return rng.bytes(rng.int(1, 2048));
    case 'empty':
      return Buffer.alloc(0);
    case 'literal':
      return Buffer.from(rng.pick(['null', '"x"', '123', 'true', '[]', '{}', '[{}]', '""', '-0', '1e309', ' ', '\n']));
    case 'huge':
      return Buffer.from(`{"name":"${'A'.repeat(rng.pick([1_048_577, 2_000_000]))}"}`);
    default: {
      // Deep nesting where the schema allows any value (waitForElement.properties), or anywhere.
      const d = deep(rng);
      tags.push(`deep:${depthOf(d)}`);
      const v = makeValid() as Record<string, unknown>;
      if (rng.chance(0.6)) {
        return Buffer.from(encode({ site: GRANTED[0], waitForAgent: true, steps: [{ type: 'waitForElement', selectors: ['a'], properties: { x: d } }] }));
      }
      return Buffer.from(encode({ ...v, [rng.pick(['steps', 'input', 'name', 'scopes', 'x'])]: d }));
    }
  }
}

function depthOf(r: Raw): number {
  const m = /^(\[+|(?:\{"a":)+)/.exec(r.text);
  return m ? (m[1]!.startsWith('[') ? m[1]!.length : m[1]!.length / 5) : 0;
}


/** A task submission that passes the schema and most of the service's checks. */
function validTask(rng: Rng): Record<string, unknown> {
  const t: Record<string, unknown> = {};
  if (rng.chance(0.4)) {
    t.recipe = rng.pick(['search-extract', 'image-prompt']);
    t.input = t.recipe === 'search-extract'
      ? { site: rng.pick(ORIGINS), query: word(rng), ...(rng.chance(0.3) ? { path: `/${word(rng)}` } : {}) }
      : { site: rng.pick(ORIGINS), prompt: word(rng), ...(rng.chance(0.3) ? { filename: `${word(rng)}.png` } : {}) };
  } else {
    const site = rng.weighted([[GRANTED[0]!, 5], [GRANTED[1]!, 2], [rng.pick(ORIGINS), 2]]);
    t.site = site;
    t.steps = [{ type: 'navigate', url: `${site}/` }, ...Array.from({ length: rng.int(0, 3) }, () => valid(rng, Step))];
    for (const s of t.steps as Record<string, unknown>[]) if (typeof s.url === 'string') s.url = `${site}/${word(rng)}`;
  }
  if (rng.chance(0.3)) t.waitForAgent = rng.chance(0.5);
  if (rng.chance(0.5)) t.timeoutMs = rng.int(1000, 5000);
  if (rng.chance(0.15)) t.idempotencyKey = `k${rng.int(1, 30)}`;
  if (rng.chance(0.05)) t.agentId = word(rng, 1, 64);
  return t;
}

const FORM_TYPES = ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'application/json', 'text/plain', 'multipart/form-data; boundary=x', ''];

/** An urlencoded form from `fields`, sometimes mutated (duplicates, bad escapes, huge values, other encodings). */
function formBody(rng: Rng, fields: [string, string][], tags: string[]): { body: Buffer; type: string } {
  const mode = rng.weighted<string>([['plain', 55], ['dup', 8], ['bad-escape', 8], ['huge', 2], ['json', 6], ['junk', 5], ['empty', 6], ['unicode', 6], ['extra', 4]]);
  tags.push(`form:${mode}`);
  const urlencoded = (f: [string, string][]) => f.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  let body: string | Buffer;
  switch (mode) {
    case 'dup':
      body = urlencoded([...fields, ...fields.map(([k]) => [k, word(rng)] as [string, string])]);
      break;
    case 'bad-escape':
      body = `${urlencoded(fields)}&${rng.pick(['%zz', '%', '%u1234', '%ff%fe', 'a=%c0%80', '=&=&', '&&&', 'a[b][c]=1', '__proto__[x]=1', 'constructor[prototype][x]=1'])}`;
      break;
    case 'huge':
      body = urlencoded([...fields, ['x', 'A'.repeat(rng.pick([16_385, 70_000, 1_100_000]))]]);
      break;
    case 'json':
      body = JSON.stringify(Object.fromEntries(fields));
      break;
    case 'junk':
      body = rng.bytes(rng.int(1, 512));
      break;
    case 'empty':
      body = '';
      break;
    case 'unicode':
      body = urlencoded(fields.map(([k, v]) => [k, rng.chance(0.5) ? str(rng) : v]));
      break;
    case 'extra':
      body = urlencoded([...fields, [str(rng), str(rng)]]);
      break;
    default:
      body = urlencoded(fields);
  }
  const type = mode === 'json' ? 'application/json' : rng.chance(0.85) ? 'application/x-www-form-urlencoded' : rng.pick(FORM_TYPES);
  return { body: typeof body === 'string' ? Buffer.from(body) : body, type };
}

/** A path parameter: plausible, a fixture id, or hostile. */
function param(rng: Rng, kind: 'task' | 'id' | 'name' | 'uid'): string {
  const plausible = kind === 'task' ? (rng.chance(0.6) ? PH.task : `t_${word(rng, 16, 16)}`) : kind === 'name' ? rng.pick(['search-extract', 'image-prompt', 'nope']) : word(rng, 8, 30);
  return rng.weighted<string>([
    [plausible, 70],
    [enc(str(rng)), 10],
    [rng.pick(['..', '.', '%2e%2e', '..%2f..%2fetc%2fpasswd', '%2F', '%00', '%', '%zz', '*', ':id', '%252e%252e', '..;', '~', '%E2%80%AE', '%F0%9F%98%80', '%C0%AE%C0%AE']), 12],
    ['a'.repeat(rng.pick([65, 129, 1000, 8000, 20_000])), 4],
    [`${plausible}${rng.pick(['/', '//', '/x', '%2f', ';x=1', '.json', '?'])}`, 4],
  ]);
}

function query(rng: Rng, fields: [string, string][] = []): string {
  const extra: [string, string][] = rng.chance(0.3) ? Array.from({ length: rng.int(1, 4) }, () => [rng.chance(0.7) ? word(rng) : str(rng), str(rng)] as [string, string]) : [];
  const all = [...fields, ...extra];
  if (all.length === 0 && rng.chance(0.9)) return '';
  let q = all.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  if (rng.chance(0.1)) q += `&${rng.pick(['a=1&a=2', 'a[]=1&a[]=2', 'a[b][c]=1', '__proto__[x]=1', '%zz=1', '=', '&', 'x=%', `long=${'q'.repeat(rng.pick([2000, 9000, 17_000]))}`])}`;
  return `?${q}`;
}

interface Built {
  route: string;
  method: string;
  path: string;
  headers: [string, string][];
  body?: Buffer;
  tags: string[];
  /** Whether an Authorization header belongs on this route. */
  authed: boolean;
  waitMs?: number;
}

type Builder = (rng: Rng, tags: string[]) => Omit<Built, 'tags' | 'route'>;

const api = (method: string, path: (rng: Rng) => string, body?: (rng: Rng, tags: string[]) => Buffer, extra?: (rng: Rng) => [string, string][]): Builder => (rng, tags) => {
  const headers: [string, string][] = [...(extra?.(rng) ?? [])];
  let b: Buffer | undefined;
  if (body && rng.chance(0.95)) {
    b = body(rng, tags);
    headers.push(['content-type', rng.chance(0.75) ? 'application/json' : rng.pick(JSON_TYPES)]);
  } else if (rng.chance(0.05)) {
    b = Buffer.from(encode(anyValue(rng)));
    headers.push(['content-type', rng.pick(JSON_TYPES)]);
  }
  return { method, path: `/api/v1${path(rng)}${query(rng)}`, headers, body: b, authed: true };
};

const form = (method: string, path: (rng: Rng) => string, fields: (rng: Rng) => [string, string][], extra?: (rng: Rng) => [string, string][]): Builder => (rng, tags) => {
  const headers: [string, string][] = [...(extra?.(rng) ?? [])];
  let body: Buffer | undefined;
  if (method !== 'GET') {
    const f = formBody(rng, fields(rng), tags);
    body = f.body;
    if (f.type) headers.push(['content-type', f.type]);
  }
  const q = method === 'GET' ? fields(rng) : [];
  return { method, path: `${path(rng)}${query(rng, q)}`, headers, body, authed: false };
};

const cookies = (rng: Rng): [string, string][] => rng.chance(0.3)
  ? [['cookie', rng.pick([`_interaction=${word(rng, 20, 30)}`, `_interaction=${word(rng)}; _interaction.sig=${word(rng)}`, `_session=${word(rng)}; _session.legacy=x`, `${word(rng)}=${str(rng)}`, `a=${'b'.repeat(8000)}`, '=;=;;'])]]
  : [];

const grantTypes = ['client_credentials', 'authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code', 'password', 'implicit', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'urn:ietf:params:oauth:grant-type:token-exchange', ''];
const scopes = ['tasks', 'tasks admin', 'agent', 'openid', 'openid offline_access tasks admin', 'openid offline_access agent', 'admin', 'tasks tasks', 'nope', ''];
const junkJwt = (rng: Rng) => rng.pick([
  `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify({ sub: 'x', iss: 'x' })).toString('base64url')}.`,
  `eyJhbGciOiJIUzI1NiIsInR5cCI6ImRwb3Arand0In0.${Buffer.from(JSON.stringify(anyValue(rng))).toString('base64url')}.${word(rng)}`,
  PH.clientToken, '@@TAMPERED@@', word(rng, 10, 200), 'a.b.c', '..', '',
]);

const tokenFields = (rng: Rng): [string, string][] => {
  const f: [string, string][] = [['grant_type', rng.weighted([[rng.pick(grantTypes), 3], ['client_credentials', 4]])]];
  if (rng.chance(0.6)) f.push(['scope', rng.pick(scopes)]);
  if (rng.chance(0.2)) f.push(['resource', rng.pick(['urn:palisade:api', 'https://evil.example', str(rng)])]);
  if (rng.chance(0.3)) f.push(['client_id', rng.pick([PH.clientId, 'palisade-cli', 'palisade-extension', word(rng), str(rng)])]);
  if (rng.chance(0.15)) f.push(['client_secret', rng.pick([PH.clientSecret, word(rng)])]);
  if (rng.chance(0.2)) f.push([rng.pick(['code', 'refresh_token', 'device_code', 'code_verifier', 'redirect_uri']), rng.pick([word(rng, 10, 80), str(rng)])]);
  if (rng.chance(0.08)) f.push(['client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'], ['client_assertion', junkJwt(rng)]);
  return f;
};

const authorizeFields = (rng: Rng): [string, string][] => {
  const f: [string, string][] = [];
  if (rng.chance(0.9)) f.push(['client_id', rng.pick(['palisade-cli', 'palisade-extension', PH.clientId, word(rng)])]);
  if (rng.chance(0.8)) f.push(['response_type', rng.pick(['code', 'token', 'id_token', 'code id_token', 'none', ''])]);
  if (rng.chance(0.7)) f.push(['redirect_uri', rng.pick(['http://127.0.0.1/callback', `http://127.0.0.1:${rng.int(1, 65535)}/callback`, 'http://127.0.0.1:8080/callback/../x', 'https://evil.example/cb', 'http://localhost/callback', str(rng)])]);
  if (rng.chance(0.7)) f.push(['scope', rng.pick(scopes)]);
  if (rng.chance(0.6)) f.push(['code_challenge', rng.pick([word(rng, 43, 43), word(rng, 1, 10), 'a'.repeat(200)])], ['code_challenge_method', rng.pick(['S256', 'plain', 'x'])]);
  if (rng.chance(0.5)) f.push(['state', word(rng)]);
  if (rng.chance(0.2)) f.push([rng.pick(['prompt', 'max_age', 'nonce', 'request', 'request_uri', 'claims', 'response_mode', 'ui_locales', 'login_hint', 'resource', 'id_token_hint']), rng.pick([str(rng), junkJwt(rng), '{"userinfo":{"email":null}}', 'consent', 'login none', '-1'])]);
  return f;
};

/** Every route, with how often it is aimed at. */
const ROUTES: [string, number, Builder][] = [
  ['GET /api/v1/me', 5, api('GET', () => '/me')],
  ['POST /api/v1/tasks', 16, api('POST', () => '/tasks', (rng, tags) => jsonBody(rng, () => (rng.chance(0.85) ? validTask(rng) : valid(rng, TaskSubmission)), tags), (rng) => [
    ...(rng.chance(0.15) ? [['idempotency-key', rng.pick([`k${rng.int(1, 30)}`, '', 'x'.repeat(129), str(rng)])] as [string, string]] : []),
    ...(rng.chance(0.15) ? [['prefer', rng.pick(['wait=0', 'wait=1', 'wait=2', 'respond-async, wait=1', 'wait=abc', 'wait=-1', 'wait=99999999', 'wait=1.5', 'wait=', str(rng)])] as [string, string]] : []),
  ])],
  ['GET /api/v1/tasks/:id', 6, api('GET', (rng) => `/tasks/${param(rng, 'task')}`)],
  ['POST /api/v1/tasks/:id/cancel', 4, api('POST', (rng) => `/tasks/${param(rng, 'task').replace(PH.task, '@@TASK_DONE@@')}/cancel`, (rng, tags) => (rng.chance(0.7) ? Buffer.alloc(0) : jsonBody(rng, () => ({ reason: word(rng) }), tags)))],
  ['GET /api/v1/tasks/:id/events', 4, api('GET', (rng) => `/tasks/${param(rng, 'task')}/events`, undefined, (rng) => (rng.chance(0.4) ? [['last-event-id', rng.pick(['-1', '0', '1', '5', 'abc', '1e9', '9007199254740993', '', ' 3', 'x'.repeat(500)])]] : []))],
  ['GET /api/v1/recipes', 3, api('GET', () => '/recipes')],
  ['GET /api/v1/recipes/:name', 3, api('GET', (rng) => `/recipes/${param(rng, 'name')}`)],
  ['GET /api/v1/agents', 3, api('GET', () => '/agents')],
  ['POST /api/v1/clients', 5, api('POST', () => '/clients', (rng, tags) => jsonBody(rng, () => valid(rng, CreateClient), tags))],
  ['GET /api/v1/clients', 2, api('GET', () => '/clients')],
  ['DELETE /api/v1/clients/:id', 3, api('DELETE', (rng) => `/clients/${param(rng, 'id')}`)],
  ['GET /api/v1/keys', 2, api('GET', () => '/keys')],
  // Rare: each rotation by a valid admin token really rotates the signing keys (kept an hour).
  ['POST /api/v1/keys/rotate', 0.05, api('POST', () => '/keys/rotate')],
  ['GET /api/v1/sessions', 3, api('GET', () => '/sessions')],
  ['DELETE /api/v1/sessions/:id', 3, api('DELETE', (rng) => `/sessions/${param(rng, 'id')}`)],
  ['DELETE /api/v1/sessions', 1, api('DELETE', () => '/sessions')],
  ['GET /', 1, (rng) => ({ method: 'GET', path: `/${query(rng)}`, headers: [], authed: false })],
  ['GET /healthz', 1, (rng) => ({ method: 'GET', path: `/healthz${query(rng)}`, headers: [], authed: false })],
  ['GET /assets/palisade.css', 0.5, () => ({ method: 'GET', path: '/assets/palisade.css', headers: [], authed: false })],
  ['GET /setup', 1.5, form('GET', () => '/setup', (rng) => (rng.chance(0.8) ? [['token', rng.pick([word(rng, 32, 32), '', 'x'.repeat(101), str(rng)])]] : []))],
  ['POST /setup', 2, form('POST', () => '/setup', (rng) => [['token', word(rng, 32, 32)], ['username', rng.pick(['admin', 'root', word(rng), str(rng)])], ['password', rng.pick(['short', 'correct horse battery staple', 'x'.repeat(300), str(rng)])]])],
  ['GET /interaction/:uid', 2, form('GET', (rng) => `/interaction/${param(rng, 'uid')}`, () => [], cookies)],
  ['POST /interaction/:uid/login', 2.5, form('POST', (rng) => `/interaction/${param(rng, 'uid')}/login`, (rng) => [['username', rng.pick(['admin', word(rng), str(rng)])], ['password', rng.pick([word(rng), 'x'.repeat(1000), str(rng)])]], cookies)],
  ['POST /interaction/:uid/confirm', 1.5, form('POST', (rng) => `/interaction/${param(rng, 'uid')}/confirm`, () => [], cookies)],
  ['POST /interaction/:uid/abort', 1, form('POST', (rng) => `/interaction/${param(rng, 'uid')}/abort`, () => [], cookies)],
  ['GET /oauth2/.well-known/openid-configuration', 1, () => ({ method: 'GET', path: '/oauth2/.well-known/openid-configuration', headers: [], authed: false })],
  ['GET /oauth2/jwks', 1, (rng) => ({ method: 'GET', path: `/oauth2/jwks${query(rng)}`, headers: [], authed: false })],
  ['POST /oauth2/token', 9, form('POST', () => '/oauth2/token', tokenFields, (rng) => [
    ...(rng.chance(0.45) ? authHeader(rng, 'basic') : []),
    ...(rng.chance(0.05) ? [['dpop', junkJwt(rng)] as [string, string]] : []),
  ])],
  ['POST /oauth2/device/auth', 3, form('POST', () => '/oauth2/device/auth', (rng) => [['client_id', rng.pick(['palisade-cli', 'palisade-extension', PH.clientId, word(rng)])], ...(rng.chance(0.8) ? [['scope', rng.pick(scopes)] as [string, string]] : [])])],
  ['GET /oauth2/device', 1, form('GET', () => '/oauth2/device', (rng) => (rng.chance(0.5) ? [['user_code', rng.pick(['BCDF-GHJK', word(rng, 8, 8), str(rng)])]] : []), cookies)],
  ['POST /oauth2/device', 1.5, form('POST', () => '/oauth2/device', (rng) => [['user_code', rng.pick(['BCDF-GHJK', word(rng, 8, 8), str(rng)])], ['xsrf', word(rng, 20, 40)], ...(rng.chance(0.2) ? [['confirm', 'yes'] as [string, string]] : [])], cookies)],
  ['GET /oauth2/auth', 3, form('GET', () => '/oauth2/auth', authorizeFields, cookies)],
  ['POST /oauth2/auth', 1, form('POST', () => '/oauth2/auth', authorizeFields, cookies)],
  ['POST /oauth2/request', 1, form('POST', () => '/oauth2/request', authorizeFields, (rng) => (rng.chance(0.6) ? authHeader(rng, 'basic') : []))],
  ['POST /oauth2/token/introspection', 2, form('POST', () => '/oauth2/token/introspection', (rng) => [['token', junkJwt(rng)], ...(rng.chance(0.4) ? [['token_type_hint', rng.pick(['access_token', 'refresh_token', 'x'])] as [string, string]] : [])], (rng) => (rng.chance(0.7) ? authHeader(rng, 'basic') : []))],
  ['POST /oauth2/token/revocation', 2, form('POST', () => '/oauth2/token/revocation', (rng) => [['token', junkJwt(rng)], ...(rng.chance(0.4) ? [['token_type_hint', rng.pick(['access_token', 'refresh_token', 'x'])] as [string, string]] : [])], (rng) => (rng.chance(0.7) ? authHeader(rng, 'basic') : []))],
  ['GET /oauth2/me', 1.5, (rng) => ({ method: rng.pick(['GET', 'POST']), path: `/oauth2/me${query(rng)}`, headers: [], authed: true })],
  ['GET /oauth2/session/end', 1, form('GET', () => '/oauth2/session/end', (rng) => (rng.chance(0.5) ? [['id_token_hint', junkJwt(rng)], ['post_logout_redirect_uri', rng.pick(['https://evil.example', str(rng)])]] : []), cookies)],
  ['POST /oauth2/session/end/confirm', 1, form('POST', () => '/oauth2/session/end/confirm', (rng) => [['xsrf', word(rng)], ...(rng.chance(0.5) ? [['logout', 'yes'] as [string, string]] : [])], cookies)],
  ['GET /oauth2/:odd', 2, (rng) => ({ method: rng.pick(['GET', 'POST', 'PUT', 'DELETE']), path: `/oauth2/${rng.pick(['auth', 'device/resume', 'device', 'reg', 'token', 'backchannel', 'jwks', 'device/auth'])}/${param(rng, 'uid')}${rng.pick(['', '/', '/login', '/consent'])}${query(rng)}`, headers: cookies(rng), authed: false })],
  ['ANY /random', 3, (rng) => ({ method: rng.pick(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']), path: randomPath(rng), headers: [], authed: rng.chance(0.5) })],
];

function randomPath(rng: Rng): string {
  const known = ['/api/v1/me', '/api/v1/tasks', '/api/v1/clients', '/oauth2/token', '/setup', '/interaction/x/login', '/healthz', '/ws/agent', '/assets/palisade.css', '/'];
  return rng.weighted<string>([
    [rng.pick(known), 3],
    [rng.pick(known).toUpperCase(), 1],
    [`/${Array.from({ length: rng.int(1, 6) }, () => (rng.chance(0.7) ? word(rng) : enc(str(rng)))).join('/')}`, 4],
    [`${rng.pick(known)}${rng.pick(['/', '//', '/..', '/../..', '/%2e%2e/%2e%2e/etc/passwd', '/.', '%00', ';x', '.json', '~', '/*'])}`, 3],
    [rng.pick(['//api/v1/me', '/./api/v1/me', '/api//v1/me', '/api/v1/../v1/me', '/api/v1/%6de', '/%2e/api/v1/me', '/api/v1/me%2f', '/oauth2/../api/v1/me', '/oauth2%2ftoken', '/oauth2?x', '/oauth2', '/oauth2/', '/oauth2/.well-known/../jwks']), 3],
    [`/${'a'.repeat(rng.pick([1000, 8000, 16_000, 70_000]))}`, 0.5],
  ]);
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

/** Extra headers: origins, accepts, odd and oversized ones. */
function extraHeaders(rng: Rng): [string, string][] {
  const h: [string, string][] = [];
  if (rng.chance(0.15)) h.push(['origin', rng.pick(['https://evil.example', 'null', 'chrome-extension://abcdefghijklmnopabcdefghijklmnop', `https://127.0.0.1`, str(rng)])]);
  if (rng.chance(0.1)) h.push(['accept', rng.pick(['application/json', 'text/html', '*/*', 'application/problem+json', 'text/event-stream', '', str(rng)])]);
  if (rng.chance(0.05)) h.push(['accept-encoding', rng.pick(['gzip', 'br', 'deflate', 'identity;q=0', '*'])]);
  if (rng.chance(0.05)) h.push(['x-forwarded-for', rng.pick(['1.2.3.4', '::1', '127.0.0.1, 10.0.0.1', str(rng)])]);
  if (rng.chance(0.03)) h.push(['access-control-request-method', rng.pick(['POST', 'DELETE', 'X'])], ['access-control-request-headers', 'authorization, content-type']);
  if (rng.chance(0.03)) h.push(['range', rng.pick(['bytes=0-10', 'bytes=-1', 'bytes=5-1', 'x'])]);
  if (rng.chance(0.03)) h.push(['if-none-match', rng.pick(['*', '"x"', 'W/"x"'])]);
  if (rng.chance(0.02)) h.push(['x-big', 'h'.repeat(rng.pick([4000, 8000, 17_000]))]);
  if (rng.chance(0.02)) for (let i = rng.int(50, 300); i > 0; i--) h.push([`x-h${i}`, word(rng)]);
  if (rng.chance(0.02)) h.push(['content-length', rng.pick(['0', '5', '-1', 'abc', '99999999999'])]);
  if (rng.chance(0.02)) h.push(['host', rng.pick(['evil.example', '', 'localhost:1', '@@HOSTPORT@@', str(rng)])]);
  return h;
}

/** Generates input `index` of the HTTP surface. */
export function generateHttp(seed: string, index: number): HttpInput {
  const rng = rngFor(seed, 'http', index);
  const kind = rng.weighted<string>([['route', 88], ['raw', 10], ['tcp', 2]]);
  const tags: string[] = [];
  const [route, , build] = rng.weighted(ROUTES.map((r) => [r, r[1]] as const));
  const b = build(rng, tags);
  let method = rng.chance(0.9) ? b.method : rng.pick(METHODS);
  if (method !== b.method) tags.push('method-swap', `method:${method}`);
  let cls: TokenClass = b.authed ? tokenClass(rng) : rng.chance(0.1) ? tokenClass(rng) : 'none';
  // Revoking every session of the admin (any person token may, the extension's too) would end the
  // fixtures' sign-ins and the fixture agent: that route is sent with other tokens.
  if (method === 'DELETE' && b.path.split('?')[0] === '/api/v1/sessions' && (cls === 'admin' || cls === 'agent')) cls = 'client';
  tags.push(`auth:${cls}`);
  const headers: [string, string][] = [...authHeader(rng, cls), ...b.headers, ...extraHeaders(rng)];
  if (headers.some(([k, v]) => k === 'host' && v !== '@@HOSTPORT@@')) tags.push('host:odd');
  let body = b.body;
  if (method === 'GET' || method === 'HEAD') {
    if (body && rng.chance(0.8)) body = undefined;
  }
  const prefer = headers.find(([k]) => k === 'prefer')?.[1];
  const waitMs = prefer && /wait=(\d+)/.test(prefer) ? Math.min(60, Number(/wait=(\d+)/.exec(prefer)![1])) * 1000 : 0;
  const base: HttpInput = { index, route, mode: 'undici', method, target: b.path, headers, body, expect: 1, tags, waitMs };
  // What undici would refuse to send (and a refusal inside its pool can leave a connection slot
  // taken for good, undici 7.30): sent as the same bytes on a connection of its own instead.
  if (kind === 'route' && !undiciSends(base)) return { ...base, mode: 'raw', chunks: [serialise(base)], tags: [...tags, 'not-for-undici'], expect: declaresMore(base) ? 0 : 1 };
  if (kind === 'route') return base;
  if (kind === 'tcp') return { ...base, mode: 'tcp', route: 'tcp:plain-to-tls', chunks: [rng.chance(0.5) ? serialise(base) : rng.bytes(rng.int(1, 600))], expect: 0 };
  const broken = breakRequest(rng, base);
  // A Content-Length header from extraHeaders that promises more than the body: the server rightly waits.
  return declaresMore(base) ? { ...broken, expect: 0 } : broken;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Headers undici sets itself or refuses (and `host`, which it takes as the TLS server name). */
const UNDICI_OWN = new Set(['host', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade', 'connection', 'expect']);

/** Whether undici sends this request as it is (its own checks, lib/core/request.js). */
function undiciSends(i: HttpInput): boolean {
  if (!TOKEN.test(i.method) || !i.target.startsWith('/') || /[^\u0021-\u00ff]/.test(i.target)) return false;
  return i.headers.every(([k, v]) => TOKEN.test(k) && !UNDICI_OWN.has(k.toLowerCase()) && !/[^\t\x20-\x7e\x80-\xff]/.test(v));
}

/** Whether a Content-Length header promises more bytes than the body has (the server waits for them). */
function declaresMore(i: HttpInput): boolean {
  const cl = i.headers.find(([k]) => k.toLowerCase() === 'content-length')?.[1];
  return cl !== undefined && /^\d+$/.test(cl.trim()) && Number(cl) > (i.body?.length ?? 0);
}

/** The request as HTTP/1.1 bytes. */
function serialise(i: HttpInput, o: { close?: boolean; version?: string; eol?: string } = {}): Buffer {
  const eol = o.eol ?? '\r\n';
  const hasHost = i.headers.some(([k]) => k.toLowerCase() === 'host');
  const lines = [`${i.method} ${i.target} ${o.version ?? 'HTTP/1.1'}`, ...(hasHost ? [] : ['host: @@HOSTPORT@@']), ...i.headers.map(([k, v]) => `${k}: ${v}`)];
  if (i.body && !i.headers.some(([k]) => k.toLowerCase() === 'content-length' || k.toLowerCase() === 'transfer-encoding')) lines.push(`content-length: ${i.body.length}`);
  if (o.close ?? true) lines.push('connection: close');
  return Buffer.concat([Buffer.from(lines.join(eol) + eol + eol, 'latin1'), i.body ?? Buffer.alloc(0)]);
}

/** Turns a request into malformed bytes: broken request lines, headers, framing, smuggling, pipelining. */
function breakRequest(rng: Rng, i: HttpInput): HttpInput {
  const how = rng.weighted<string>([
    ['request-line', 10], ['version', 5], ['lf-only', 3], ['header-syntax', 10], ['header-bytes', 6], ['no-host', 3], ['dup-host', 2],
    ['cl-te', 6], ['chunked', 10], ['cl-lie-long', 4], ['cl-lie-short', 4], ['dup-cl', 4], ['pipeline', 5], ['unicode-path', 6],
    ['absolute-form', 3], ['h2-preface', 1], ['expect', 3], ['upgrade', 3], ['slow', 2], ['huge-headers', 3], ['garbage', 3], ['keep-alive', 4],
  ]);
  const out = { ...i, mode: 'raw' as const, route: `raw:${how} ${i.route}`, tags: [...i.tags, `raw:${how}`], expect: 1 };
  const body = i.body ?? Buffer.alloc(0);
  const head = (lines: string[], eol = '\r\n') => Buffer.from(lines.join(eol) + eol + eol, 'latin1');
  const std = (): string[] => [`${i.method} ${i.target} HTTP/1.1`, 'host: @@HOSTPORT@@', ...i.headers.map(([k, v]) => `${k}: ${v}`), 'connection: close'];
  switch (how) {
    case 'request-line': {
      const line = rng.pick([
        `${i.method}  ${i.target} HTTP/1.1`, `${i.method} ${i.target}`, `${i.method} ${i.target} HTTP/1.1 extra`, `${i.method.toLowerCase()} ${i.target} HTTP/1.1`,
        ` ${i.method} ${i.target} HTTP/1.1`, `${i.method}\t${i.target} HTTP/1.1`, `FOO ${i.target} HTTP/1.1`, `G@T ${i.target} HTTP/1.1`, `CONNECT 127.0.0.1:443 HTTP/1.1`,
        `OPTIONS * HTTP/1.1`, `TRACE ${i.target} HTTP/1.1`, `PROPFIND ${i.target} HTTP/1.1`, `${i.method} ${i.target}#frag HTTP/1.1`, `${i.method} ${i.target.replace('/', '')} HTTP/1.1`,
        `${i.method} ${i.target} http/1.1`, `${i.method} /a b HTTP/1.1`, `${i.method} ${i.target}\u0000 HTTP/1.1`, '',
      ]);
      return { ...out, chunks: [Buffer.concat([head([line, ...std().slice(1)]), body])] };
    }
    case 'version':
      return { ...out, chunks: [serialise(i, { version: rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/3', 'HTTP/1.2', 'HTTP/1', 'HTTPS/1.1', 'HTTP/1.1.1']) })] };
    case 'lf-only':
      return { ...out, chunks: [serialise(i, { eol: rng.pick(['\n', '\r', '\r\r\n']) })] };
    case 'header-syntax': {
      const bad = rng.pick(['no colon here', ' folded: continuation', '\tfold', ': empty name', 'bad name: x', 'x:\u0000y', 'x-a\u0000: y', 'x: y\rz', `${'n'.repeat(300)}: x`, 'x : spaced', 'content-type :application/json', 'Transfer-Encoding : chunked']);
      const lines = std();
      lines.splice(rng.int(1, lines.length), 0, bad);
      return { ...out, chunks: [Buffer.concat([head(lines), body])] };
    }
    case 'header-bytes': {
      const lines = std();
      const junk = rng.bytes(rng.int(1, 64)).map((c) => (c === 13 || c === 10 ? 0x41 : c));
      const bytes = Buffer.concat([Buffer.from(`${lines.slice(0, 2).join('\r\n')}\r\nx-bytes: `, 'latin1'), junk, Buffer.from('\r\n'), head(lines.slice(2)), body]);
      return { ...out, chunks: [bytes] };
    }
    case 'no-host':
      return { ...out, chunks: [Buffer.concat([head(std().filter((l) => !l.startsWith('host:'))), body])] };
    case 'dup-host':
      return { ...out, chunks: [Buffer.concat([head([...std(), rng.pick(['host: evil.example', 'host: @@HOSTPORT@@', 'Host: '])]), body])] };
    case 'cl-te': {
      const chunked = Buffer.from(`${body.length.toString(16)}\r\n${body.toString('latin1')}\r\n0\r\n\r\n`, 'latin1');
      return { ...out, chunks: [Buffer.concat([head([...std(), `content-length: ${rng.pick([body.length, 0, 4, body.length + 10])}`, rng.pick(['transfer-encoding: chunked', 'Transfer-Encoding: chunked, identity', 'transfer-encoding: gzip, chunked', 'transfer-encoding:\tchunked', 'transfer-encoding: chunked\r\ntransfer-encoding: x'])]), chunked])] };
    }
    case 'chunked': {
      const size = rng.pick([body.length.toString(16), 'zz', '-1', 'ffffffffffffffff', `${body.length.toString(16)};ext=1`, `${body.length.toString(16)} `, '0x10', '']);
      const tail = rng.pick(['\r\n0\r\n\r\n', '\r\n0\r\nx-trailer: 1\r\n\r\n', '\r\n', '', '\r\n0\r\n']);
      const complete = tail.endsWith('\r\n\r\n') && size.split(';')[0] === body.length.toString(16);
      return { ...out, expect: complete ? 1 : 0, chunks: [Buffer.concat([head([...std(), 'transfer-encoding: chunked']), Buffer.from(`${size}\r\n`), body, Buffer.from(tail)])] };
    }
    case 'cl-lie-long':
      return { ...out, expect: 0, chunks: [Buffer.concat([head([...std(), `content-length: ${body.length + rng.int(1, 5000)}`]), body])] };
    case 'cl-lie-short': {
      const smuggled = Buffer.from(`GET /api/v1/me HTTP/1.1\r\nhost: @@HOSTPORT@@\r\nauthorization: Bearer ${PH.adminToken}\r\n\r\n`);
      return { ...out, expect: 1, chunks: [Buffer.concat([head([...std().filter((l) => l !== 'connection: close'), `content-length: ${Math.max(0, body.length - rng.int(0, body.length))}`]), body, rng.chance(0.5) ? smuggled : Buffer.alloc(0)])] };
    }
    case 'dup-cl':
      return { ...out, chunks: [Buffer.concat([head([...std(), `content-length: ${body.length}`, `content-length: ${rng.pick([body.length, body.length + 1, 0])}`]), body])] };
    case 'pipeline': {
      const keep = (x: HttpInput) => serialise(x, { close: false });
      return { ...out, expect: 2, chunks: [Buffer.concat([keep(i), serialise({ ...i, method: 'GET', target: '/healthz', headers: [], body: undefined }, { close: true })])] };
    }
    case 'unicode-path': {
      const t = rng.pick([`/api/v1/tasks/${str(rng)}`, `/api/v1/${'é'.repeat(rng.int(1, 100))}`, '/setup?token=ü', '/ä/../api/v1/me', `/oauth2/${str(rng)}`, `/interaction/${str(rng)}/login`]);
      return { ...out, chunks: [Buffer.concat([Buffer.from(`${i.method} `), Buffer.from(t, rng.chance(0.5) ? 'utf8' : 'latin1'), head([' HTTP/1.1', ...std().slice(1)]).subarray(0), body])] };
    }
    case 'absolute-form':
      return { ...out, chunks: [Buffer.concat([head([`${i.method} ${rng.pick(['https://@@HOSTPORT@@', 'http://evil.example', 'https://127.0.0.1'])}${i.target} HTTP/1.1`, ...std().slice(1)]), body])] };
    case 'h2-preface':
      return { ...out, expect: 0, chunks: [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), rng.bytes(rng.int(0, 64))] };
    case 'expect':
      return { ...out, chunks: [Buffer.concat([head([...std(), `content-length: ${body.length}`, rng.pick(['expect: 100-continue', 'expect: 200-ok', 'expect: x'])]), body])] };
    case 'upgrade':
      return { ...out, chunks: [Buffer.concat([head([...std().filter((l) => l !== 'connection: close'), rng.pick(['connection: upgrade', 'connection: Upgrade, close']), rng.pick(['upgrade: websocket', 'upgrade: h2c', 'upgrade: x']), 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version: 13', 'sec-websocket-protocol: palisade.v1']), body])] };
    case 'slow': {
      const all = serialise(i);
      const cut = rng.int(1, Math.max(1, all.length - 1));
      return { ...out, chunks: [all.subarray(0, cut), all.subarray(cut)] };
    }
    case 'huge-headers': {
      const lines = std();
      const n = rng.pick([100, 2000, 20_000]);
      for (let k = 0; k < (n > 1000 ? 5 : 1); k++) lines.splice(1, 0, `x-huge-${k}: ${'v'.repeat(n)}`);
      return { ...out, chunks: [Buffer.concat([head(lines), body])] };
    }
    case 'keep-alive':
      return { ...out, chunks: [serialise(i, { close: false })] };
    default:
      return { ...out, expect: 0, chunks: [rng.bytes(rng.int(1, 2048))] };
  }
}

// ── sending ──────────────────────────────────────────────────────────────────────────────────────

/** The outcome of one input: the responses (raw may have several), or none with the reason. */
export interface HttpOutcome {
  responses: { status: number; contentType: string; body: string; headers: Record<string, string | string[] | undefined> }[];
  /** No response at all: why. */
  error?: string | undefined;
  /** The bytes or request sent, printable (for the report). */
  sent: string;
  ms: number;
}


function algNone(jwt: string): string {
  const [, p] = jwt.split('.');
  return `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${p}.`;
}

/** The values of the placeholders an input may hold. */
export function placeholders(ctx: HttpContext, index: number): [string, string][] {
  return [
    [PH.adminToken, ctx.adminToken], [PH.clientToken, ctx.clientToken], [PH.agentToken, ctx.agentToken],
    ['@@TAMPERED@@', tamper(ctx.clientToken)], ['@@ALG_NONE@@', algNone(ctx.adminToken)],
    ['@@BASIC@@', Buffer.from(`${enc(ctx.clientId)}:${enc(ctx.clientSecret)}`).toString('base64')],
    [PH.clientId, ctx.clientId], [PH.clientSecret, ctx.clientSecret],
    // Cancels name the finished fixture task (the live one must stay live for the event streams).
    ['@@TASK_DONE@@', ctx.taskIds[0] ?? 't_none'],
    [PH.task, ctx.taskIds[index % ctx.taskIds.length] ?? 't_none'],
    ['@@HOSTPORT@@', `${ctx.target.host}:${ctx.target.port}`],
  ];
}

export function fillText(s: string, values: [string, string][]): string {
  if (!s.includes('@@')) return s;
  for (const [k, v] of values) s = s.replaceAll(k, v);
  return s;
}

export function fillBytes(b: Buffer, values: [string, string][]): Buffer {
  if (b.indexOf('@@') < 0) return b;
  let out = b;
  for (const [k, v] of values) {
    const parts: Buffer[] = [];
    let from = 0;
    for (let at = out.indexOf(k, from); at >= 0; at = out.indexOf(k, from)) {
      parts.push(out.subarray(from, at), Buffer.from(v));
      from = at + k.length;
    }
    if (parts.length > 0) out = Buffer.concat([...parts, out.subarray(from)]);
  }
  return out;
}

const BODY_CAP = 4 * 1024 * 1024;

/** Sends one input and collects what came back. */
export async function sendHttp(i: HttpInput, ctx: HttpContext, dispatcher: Dispatcher, timeoutMs = 15_000, at: (phase: string) => void = () => undefined): Promise<HttpOutcome> {
  const values = placeholders(ctx, i.index);
  const t0 = performance.now();
  if (i.mode === 'undici') {
    const headers: string[] = [];
    for (const [k, v] of i.headers) headers.push(k, fillText(v, values));
    const path = fillText(i.target, values);
    const body = i.body ? fillBytes(i.body, values) : undefined;
    const sent = `${i.method} ${path}\n${i.headers.map(([k, v]) => `${k}: ${fillText(v, values)}`).join('\n')}\n\n${body ? printable(body, 4000) : ''}`;
    try {
      at('request');
      // A HEAD answer is headers only: it gets a third of the time.
      const limit = (i.method === 'HEAD' ? timeoutMs / 3 : timeoutMs) + i.waitMs;
      const res = await request(`${ctx.origin}${path}`, { method: i.method as Dispatcher.HttpMethod, headers, body, dispatcher, headersTimeout: limit, bodyTimeout: limit });
      const contentType = String(res.headers['content-type'] ?? '');
      at(`body ${res.statusCode} ${contentType}`);
      let text = '';
      if (contentType.includes('text/event-stream')) {
        // A live stream: its first event is enough.
        for await (const chunk of res.body) {
          text += String(chunk);
          break;
        }
        res.body.destroy();
      } else {
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const chunk of res.body) {
          if (n < BODY_CAP) chunks.push(chunk as Buffer);
          n += (chunk as Buffer).length;
        }
        text = Buffer.concat(chunks).toString('utf8');
      }
      return { responses: [{ status: res.statusCode, contentType, body: text, headers: res.headers }], sent, ms: performance.now() - t0 };
    } catch (e) {
      const err = e as Error & { code?: string };
      if (err.code === 'UND_ERR_INVALID_ARG' || err.code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' || err.name === 'InvalidArgumentError') {
        // undici refuses to send it: send the same request as raw bytes.
        return sendHttp({ ...i, mode: 'raw', chunks: [serialise(i)], tags: [...i.tags, 'undici-refused'] }, ctx, dispatcher, timeoutMs, at);
      }
      return { responses: [], error: err.code ?? err.message, sent, ms: performance.now() - t0 };
    }
  }
  const chunks = (i.chunks ?? []).map((c) => fillBytes(c, values));
  at('raw');
  const sent = printable(Buffer.concat(chunks), 4000);
  // Pipelined inputs send the request, then GET /healthz: a HEAD answer has no body to read.
  const ex = await exchange(ctx.target, chunks, { plain: i.mode === 'tcp', expect: Math.max(1, i.expect), firstMs: i.expect > 0 ? timeoutMs + i.waitMs : 1500, idleMs: 1500, gapMs: 5, methods: [i.method, 'GET'] });
  const responses = ex.responses.map((r: RawResponse) => ({
    status: r.status, contentType: r.headers.get('content-type')?.[0] ?? '', body: r.body.toString('utf8'),
    headers: Object.fromEntries([...r.headers].map(([k, v]) => [k, v.length === 1 ? v[0] : v])),
  }));
  const error = responses.length === 0 ? (ex.ended === 'idle' ? (ex.silent ? 'no response (timed out)' : 'no complete response') : (ex.error ?? `connection ${ex.ended} without a response`)) : undefined;
  return { responses, error, sent, ms: performance.now() - t0 };
}

// ── checking ─────────────────────────────────────────────────────────────────────────────────────

/** Every rule the outcome of `i` breaks. */
export function checkHttp(i: HttpInput, o: HttpOutcome): Violation[] {
  const out: Violation[] = [];
  for (const r of o.responses) {
    if (r.status >= 500) out.push({ kind: 'server-error', detail: `HTTP ${r.status}: ${printable(r.body, 300)}` });
    if (r.contentType.includes('problem+json') && r.body.length > 0) out.push(...problemViolations(r.status, r.body));
    out.push(...leaks(r.body, o.sent));
    const path = fillText(i.target, []).split('?')[0]!;
    if (i.mode === 'undici' && path.startsWith('/api/') && r.status >= 400 && i.method !== 'HEAD' && !r.contentType.includes('application/problem+json')) {
      out.push({ kind: 'api-error-not-problem', detail: `HTTP ${r.status} ${r.contentType || '(no content-type)'}: ${printable(r.body, 200)}` });
    }
  }
  if (o.responses.length === 0 && i.mode === 'undici') {
    // A well-formed request answered by nothing. Oversized requests may be cut off while still being written.
    const big = (i.body?.length ?? 0) > 1_000_000 || i.target.length > 8000 || i.headers.some(([, v]) => v.length > 8000) || i.headers.length > 100;
    if (!big) out.push({ kind: /timed out|Timeout/i.test(o.error ?? '') ? 'hang' : 'no-response', detail: o.error ?? 'no response' });
  }
  if (i.mode === 'raw' && i.expect > 0 && o.responses.length === 0 && o.error === 'no response (timed out)') {
    out.push({ kind: 'hang', detail: 'a complete request got no byte back within the time limit' });
  }
  return out;
}
