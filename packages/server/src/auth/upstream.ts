/**
 * @module auth/upstream — sign-in with an upstream identity provider: any OpenID Connect provider
 * (Google, a corporate IdP) or GitHub (OAuth 2.0 and its user API), through openid-client. Every
 * flow carries `state` and PKCE S256, and for OpenID Connect a `nonce`; `finish` runs the callback
 * through a short pipeline of named checks and returns who signed in. Account linking is the caller's.
 */
import { Type, type Static } from '@sinclair/typebox';
import * as oidc from 'openid-client';
import { PalisadeError, parse, validator, type Issue } from '@palisade/protocol';

const ProviderId = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,31}$' });
const HttpUrl = Type.String({ minLength: 1, maxLength: 2048 });
const Secret = Type.String({ minLength: 1, maxLength: 1024 });
const Domain = Type.String({ pattern: '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$', maxLength: 253 });

/**
 * One upstream provider. `id` appears in URLs (`/interaction/callback/<id>`); `name` on the button.
 * - kind `oidc`: `issuer` is required; metadata comes from `${issuer}/.well-known/openid-configuration`.
 *   Default scopes `openid email profile`.
 * - kind `github`: endpoints default to github.com (`authorizationUrl`
 *   `https://github.com/login/oauth/authorize`, `tokenUrl` `https://github.com/login/oauth/access_token`,
 *   `apiUrl` `https://api.github.com`); set them for GitHub Enterprise. Default scopes `read:user user:email`.
 *
 * `allowedEmailDomains`, if set, admits only verified emails in those domains (exact match, no subdomains).
 */
export const UpstreamProviderConfig = Type.Object(
  {
    id: ProviderId,
    kind: Type.Union([Type.Literal('oidc'), Type.Literal('github')]),
    name: Type.String({ minLength: 1, maxLength: 64 }),
    clientId: Secret,
    clientSecret: Secret,
    issuer: Type.Optional(HttpUrl),
    scopes: Type.Optional(Type.Array(Type.String({ pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]{1,128}$' }), { minItems: 1, maxItems: 32 })),
    authorizationUrl: Type.Optional(HttpUrl),
    tokenUrl: Type.Optional(HttpUrl),
    apiUrl: Type.Optional(HttpUrl),
    allowedEmailDomains: Type.Optional(Type.Array(Domain, { minItems: 1, maxItems: 256 })),
    /**
     * Whether a first sign-in creates an account (role `user`). Default: only when
     * `allowedEmailDomains` is set; `true` lets any verified identity in; `false` only admits
     * identities already linked.
     */
    allowSignUp: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type UpstreamProviderConfig = Static<typeof UpstreamProviderConfig>;

/** The config file: `{ "providers": [ … ] }`. */
export const UpstreamConfigFile = Type.Object(
  { providers: Type.Array(UpstreamProviderConfig, { maxItems: 32 }) },
  { additionalProperties: false },
);
const configFile = validator(UpstreamConfigFile);

/** Who signed in upstream. `subject` is stable per provider (OIDC `sub`; GitHub's numeric user id). */
export interface UpstreamIdentity {
  provider: string;
  subject: string;
  email?: string;
  emailVerified: boolean;
  name?: string;
  /** OIDC `preferred_username`; GitHub `login`. */
  username?: string;
}

/**
 * A started sign-in. Holds the PKCE verifier: keep it server-side only (keyed by `state`), and
 * give it to `finish` once.
 */
export interface UpstreamTransaction {
  provider: string;
  state: string;
  /** OIDC only. */
  nonce?: string;
  codeVerifier: string;
  redirectUri: string;
  /** Epoch ms. */
  createdAt: number;
}

export interface UpstreamLogin {
  /** The configured providers, in config order, for the sign-in buttons. */
  providers(): { id: string; name: string }[];
  /**
   * Builds the authorization URL with fresh `state`, `nonce` (OIDC) and PKCE S256. The caller keeps
   * the transaction server-side, keyed by its state. Throws `PAL_ERR_NOT_FOUND` for an unknown
   * provider, `PAL_ERR_VALIDATION` for a bad redirect URI, `PAL_ERR_UNAVAILABLE` if discovery fails.
   */
  start(providerId: string, redirectUri: string): Promise<{ url: string; transaction: UpstreamTransaction }>;
  /**
   * Checks the callback and returns who signed in: provider known → transaction complete and not
   * expired → callback at this provider's redirect URI → state → code exchanged with the PKCE
   * verifier (and, for OIDC, the ID token's signature, issuer, audience, expiry and nonce checked)
   * → identity read (ID token and UserInfo; GitHub's `/user` and `/user/emails`) → verified email
   * in `allowedEmailDomains`. The token request uses
   * `transaction.redirectUri`; only the query of `callbackUrl` and its path are read, so a proxy
   * rewriting scheme or host does not matter. Throws `PAL_ERR_UNAUTHENTICATED` when the response
   * cannot be trusted, `PAL_ERR_FORBIDDEN` when policy refuses the identity (no verified email, a
   * domain outside `allowedEmailDomains`), `PAL_ERR_UNAVAILABLE` when the provider does not answer.
   */
  finish(transaction: UpstreamTransaction, callbackUrl: URL): Promise<UpstreamIdentity>;
}

export interface UpstreamLoginOptions {
  /** Allow `http://` upstream URLs (the tests' local stand-ins only). Default false: HTTPS only. */
  allowInsecureHttp?: boolean;
  /** Time limit of each upstream HTTP call, ms. Default 10,000. */
  timeoutMs?: number;
  /** How long a started sign-in may take before `finish` refuses it, ms. Default 600,000 (10 minutes). */
  transactionTtlMs?: number;
  /** The fetch used for every upstream call. Default the global `fetch`. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  now?: () => number;
}

export const DEFAULT_SCOPES = { oidc: ['openid', 'email', 'profile'], github: ['read:user', 'user:email'] } as const;
export const GITHUB_DEFAULTS = {
  authorizationUrl: 'https://github.com/login/oauth/authorize',
  tokenUrl: 'https://github.com/login/oauth/access_token',
  apiUrl: 'https://api.github.com',
} as const;

/**
 * Parses and checks the provider config: a JSON string or an already-parsed value of the form
 * `{ "providers": [ … ] }`. Throws `PAL_ERR_VALIDATION` whose issues name each bad field by JSON
 * pointer (e.g. `/providers/0/issuer`).
 *
 * @example parseUpstreamConfig(readFileSync('sign-in.json', 'utf8'))
 */
export function parseUpstreamConfig(json: unknown): UpstreamProviderConfig[] {
  let value = json;
  if (typeof json === 'string') {
    try {
      value = JSON.parse(json);
    } catch (e) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'invalid upstream sign-in config: not valid JSON', { internal: e });
    }
  }
  const { providers } = parse(configFile, value, 'upstream sign-in config');
  const issues = providerIssues(providers, true);
  if (issues.length > 0) throw invalid(issues);
  return providers;
}

/**
 * The upstream sign-in of the configured providers. OIDC discovery happens on first use of a
 * provider and is kept; a failed discovery is retried on the next use.
 */
export function createUpstreamLogin(configs: UpstreamProviderConfig[], options: UpstreamLoginOptions = {}): UpstreamLogin {
  const insecure = options.allowInsecureHttp ?? false;
  const issues = providerIssues(configs, insecure);
  if (issues.length > 0) throw invalid(issues);
  const timeoutSeconds = (options.timeoutMs ?? 10_000) / 1000;
  const ttl = options.transactionTtlMs ?? 600_000;
  const now = options.now ?? Date.now;
  const given = options.fetch;
  // openid-client types its request body more widely than RequestInit does (Uint8Array of any buffer).
  const customFetch: oidc.CustomFetch | undefined = given && ((url, init) => given(url, init as RequestInit));
  const tune = (config: oidc.Configuration) => {
    config.timeout = timeoutSeconds;
    if (customFetch) config[oidc.customFetch] = customFetch;
    if (insecure) oidc.allowInsecureRequests(config);
  };
  const upstreams = new Map(configs.map((c) => [c.id, upstream(c, tune, timeoutSeconds, customFetch, insecure)]));

  const known = (id: string): Upstream => {
    const u = upstreams.get(id);
    if (!u) throw new PalisadeError('PAL_ERR_NOT_FOUND', 'no sign-in provider has that id');
    return u;
  };

  return {
    providers: () => configs.map((c) => ({ id: c.id, name: c.name })),

    async start(providerId, redirectUri) {
      const u = known(providerId);
      checkRedirectUri(redirectUri);
      const config = await u.configuration();
      const state = oidc.randomState();
      const codeVerifier = oidc.randomPKCECodeVerifier();
      const params: Record<string, string> = {
        redirect_uri: redirectUri,
        scope: u.scopes.join(' '),
        state,
        code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
      };
      const transaction: UpstreamTransaction = { provider: u.config.id, state, codeVerifier, redirectUri, createdAt: now() };
      if (u.config.kind === 'oidc') params.nonce = transaction.nonce = oidc.randomNonce();
      return { url: oidc.buildAuthorizationUrl(config, params).href, transaction };
    },

    // The pipeline: each step throws its refusal.
    async finish(transaction, callbackUrl) {
      const u = known(transaction.provider);
      checkTransaction(u, transaction, now(), ttl);
      checkCallbackPath(transaction, callbackUrl);
      checkState(transaction, callbackUrl);
      const config = await u.configuration();
      const tokens = await exchangeCode(u, config, transaction, callbackUrl);
      const identity = u.config.kind === 'oidc' ? await oidcIdentity(u, config, tokens) : await githubIdentity(u, config, tokens.access_token);
      checkEmail(u, identity);
      return identity;
    },
  };
}

// ---- providers -------------------------------------------------------------------------------

interface Upstream {
  config: UpstreamProviderConfig;
  scopes: readonly string[];
  /** `allowedEmailDomains`, lower-cased. */
  domains: string[] | undefined;
  configuration(): Promise<oidc.Configuration>;
}

function upstream(
  c: UpstreamProviderConfig,
  tune: (config: oidc.Configuration) => void,
  timeout: number,
  customFetch: oidc.CustomFetch | undefined,
  insecure: boolean,
): Upstream {
  const scopes = c.scopes ?? DEFAULT_SCOPES[c.kind];
  const domains = c.allowedEmailDomains?.map((d) => d.toLowerCase());
  if (c.kind === 'github') {
    const authorization = c.authorizationUrl ?? GITHUB_DEFAULTS.authorizationUrl;
    // GitHub publishes no metadata and issues no ID token: explicit OAuth 2.0 metadata, client
    // secret in the form body (as GitHub documents). The issuer is only a label here.
    const config = new oidc.Configuration(
      { issuer: new URL(authorization).origin, authorization_endpoint: authorization, token_endpoint: c.tokenUrl ?? GITHUB_DEFAULTS.tokenUrl },
      c.clientId,
      undefined,
      oidc.ClientSecretPost(c.clientSecret),
    );
    tune(config);
    return { config: c, scopes, domains, configuration: async () => config };
  }
  let pending: Promise<oidc.Configuration> | undefined;
  const discover = async (): Promise<oidc.Configuration> => {
    try {
      const config = await oidc.discovery(new URL(c.issuer!), c.clientId, undefined, oidc.ClientSecretBasic(c.clientSecret), {
        timeout,
        execute: insecure ? [oidc.allowInsecureRequests] : [],
        ...(customFetch ? { [oidc.customFetch]: customFetch } : {}),
      });
      tune(config);
      return config;
    } catch (e) {
      throw new PalisadeError('PAL_ERR_UNAVAILABLE', `sign-in with ${c.name} is unavailable right now; try again later`, { internal: e });
    }
  };
  return {
    config: c,
    scopes,
    domains,
    configuration: () => {
      pending ??= discover().catch((e: unknown) => {
        pending = undefined;
        throw e;
      });
      return pending;
    },
  };
}

// ---- the steps of finish -----------------------------------------------------------------------

const unauthenticated = (message: string, e?: unknown) => new PalisadeError('PAL_ERR_UNAUTHENTICATED', message, e === undefined ? {} : { internal: e });

function checkTransaction(u: Upstream, t: UpstreamTransaction, at: number, ttl: number): void {
  const complete = typeof t.state === 'string' && typeof t.codeVerifier === 'string' && typeof t.redirectUri === 'string'
    && typeof t.createdAt === 'number' && (u.config.kind !== 'oidc' || typeof t.nonce === 'string');
  if (!complete) throw unauthenticated('this sign-in is incomplete; start again');
  // Started at most `ttl` ago; a minute of clock difference between server nodes is tolerated.
  if (at - t.createdAt > ttl || t.createdAt - at > 60_000) throw unauthenticated('this sign-in took too long; start again');
}

/** Each provider has its own redirect URI, so a response delivered to another provider's endpoint is refused (mix-up defence). */
function checkCallbackPath(t: UpstreamTransaction, callbackUrl: URL): void {
  if (callbackUrl.pathname !== URL.parse(t.redirectUri)?.pathname) throw unauthenticated('this sign-in response arrived for another provider; start again');
}

function checkState(t: UpstreamTransaction, callbackUrl: URL): void {
  if (callbackUrl.searchParams.get('state') !== t.state) throw unauthenticated('this sign-in response does not belong to the sign-in that was started; start again');
}

type Tokens = Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;

async function exchangeCode(u: Upstream, config: oidc.Configuration, t: UpstreamTransaction, callbackUrl: URL): Promise<Tokens> {
  const current = new URL(t.redirectUri);
  current.search = callbackUrl.search;
  const checks: oidc.AuthorizationCodeGrantChecks = { expectedState: t.state, pkceCodeVerifier: t.codeVerifier };
  if (u.config.kind === 'oidc') {
    checks.expectedNonce = t.nonce!;
    checks.idTokenExpected = true;
  }
  try {
    return await oidc.authorizationCodeGrant(config, current, checks);
  } catch (e) {
    throw upstreamError(u, e);
  }
}

async function oidcIdentity(u: Upstream, config: oidc.Configuration, tokens: Tokens): Promise<UpstreamIdentity> {
  const idToken = tokens.claims()!;
  let claims: Record<string, unknown> = idToken;
  // Providers that keep profile claims out of the ID token (the spec's default for the code flow)
  // serve them at UserInfo; ID token claims win where both have one.
  if (idToken.email === undefined && config.serverMetadata().userinfo_endpoint) {
    try {
      claims = { ...(await oidc.fetchUserInfo(config, tokens.access_token, idToken.sub)), ...idToken };
    } catch (e) {
      throw upstreamError(u, e);
    }
  }
  return identity(u, idToken.sub, {
    email: claims.email,
    emailVerified: claims.email_verified === true || claims.email_verified === 'true',
    name: claims.name,
    username: claims.preferred_username,
  });
}

interface GitHubEmail { email: string; primary: boolean; verified: boolean }

async function githubIdentity(u: Upstream, config: oidc.Configuration, accessToken: string): Promise<UpstreamIdentity> {
  const user = await githubGet(u, config, accessToken, '/user');
  const emails = await githubGet(u, config, accessToken, '/user/emails');
  const isUser = (v: unknown): v is { id: number; login: string; name?: unknown } =>
    typeof v === 'object' && v !== null && Number.isSafeInteger((v as { id?: unknown }).id) && typeof (v as { login?: unknown }).login === 'string';
  const isEmails = (v: unknown): v is GitHubEmail[] => Array.isArray(v) && v.every((e: Partial<GitHubEmail> | null) =>
    typeof e === 'object' && e !== null && typeof e.email === 'string' && typeof e.primary === 'boolean' && typeof e.verified === 'boolean');
  if (!isUser(user) || !isEmails(emails)) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `${u.config.name} answered in an unexpected way; try again later`, { internal: { user, emails } });
  }
  const chosen = githubEmail(emails, u.domains);
  return identity(u, String(user.id), { email: chosen?.email, emailVerified: chosen?.verified ?? false, name: user.name, username: user.login });
}

/**
 * The primary email if verified (and allowed); else, with `allowedEmailDomains`, the first verified
 * email in an allowed domain (people often sign in to GitHub with a personal primary address);
 * else the primary one, which `checkEmail` then refuses.
 */
function githubEmail(emails: GitHubEmail[], domains: string[] | undefined): GitHubEmail | undefined {
  const allowed = (e: GitHubEmail) => !domains || domains.includes(domainOf(e.email));
  return emails.find((e) => e.primary && e.verified && allowed(e)) ?? emails.find((e) => e.verified && allowed(e)) ?? emails.find((e) => e.primary);
}

async function githubGet(u: Upstream, config: oidc.Configuration, accessToken: string, path: string): Promise<unknown> {
  const url = new URL(`${(u.config.apiUrl ?? GITHUB_DEFAULTS.apiUrl).replace(/\/+$/, '')}${path}`);
  const headers = new Headers({ accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28' });
  let res: Response;
  try {
    res = await oidc.fetchProtectedResource(config, accessToken, url, 'GET', undefined, headers);
  } catch (e) {
    throw upstreamError(u, e);
  }
  if (res.status === 401) throw unauthenticated(`${u.config.name} did not accept the sign-in; start again`, { status: res.status, path });
  if (!res.ok) throw new PalisadeError('PAL_ERR_UNAVAILABLE', `${u.config.name} answered in an unexpected way; try again later`, { internal: { status: res.status, path } });
  try {
    return await res.json();
  } catch (e) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `${u.config.name} answered in an unexpected way; try again later`, { internal: e });
  }
}

function checkEmail(u: Upstream, id: UpstreamIdentity): void {
  if (!id.email || !id.emailVerified) {
    throw new PalisadeError('PAL_ERR_FORBIDDEN', `your ${u.config.name} account has no verified email address`, { internal: { provider: id.provider, subject: id.subject } });
  }
  if (u.domains && !u.domains.includes(domainOf(id.email))) {
    throw new PalisadeError('PAL_ERR_FORBIDDEN', `accounts of ${domainOf(id.email)} may not sign in here`, { internal: { provider: id.provider, subject: id.subject } });
  }
}

// ---- helpers -----------------------------------------------------------------------------------

function identity(u: Upstream, subject: string, c: { email: unknown; emailVerified: boolean; name: unknown; username: unknown }): UpstreamIdentity {
  const out: UpstreamIdentity = { provider: u.config.id, subject, emailVerified: c.emailVerified };
  if (typeof c.email === 'string' && c.email.length > 0) out.email = c.email;
  else out.emailVerified = false;
  if (typeof c.name === 'string' && c.name.length > 0) out.name = c.name;
  if (typeof c.username === 'string' && c.username.length > 0) out.username = c.username;
  return out;
}

const domainOf = (email: string) => email.slice(email.lastIndexOf('@') + 1).toLowerCase();

/**
 * Maps an openid-client (or fetch) failure to a PalisadeError. The public message never carries
 * the upstream's words (error descriptions, bodies); those stay in `internal`.
 */
function upstreamError(u: Upstream, e: unknown): PalisadeError {
  const name = u.config.name;
  if (e instanceof PalisadeError) return e;
  if (unreachable(e)) return new PalisadeError('PAL_ERR_UNAVAILABLE', `${name} does not answer; try again later`, { internal: e });
  if (e instanceof oidc.AuthorizationResponseError) {
    return unauthenticated(e.error === 'access_denied' ? `sign-in with ${name} was cancelled` : `${name} did not complete the sign-in; start again`, e);
  }
  if (e instanceof oidc.ResponseBodyError || e instanceof oidc.WWWAuthenticateChallengeError || errorWithStatus200(e)) {
    return unauthenticated(`${name} did not accept the sign-in; start again`, e);
  }
  return unauthenticated(`the sign-in with ${name} could not be verified; start again`, e);
}

/** GitHub answers a refused token request with status 200 and an OAuth error body. */
function errorWithStatus200(e: unknown): boolean {
  if (!(e instanceof oidc.ClientError) || e.code !== 'OAUTH_INVALID_RESPONSE') return false;
  const body = ((e.cause as { cause?: { body?: { error?: unknown } } } | undefined)?.cause?.body);
  return typeof body?.error === 'string';
}

/** Network failure, timeout, or a 5xx / non-JSON answer (an outage page). */
function unreachable(e: unknown): boolean {
  if (e instanceof TypeError && e.message === 'fetch failed') return true;
  if (e instanceof DOMException && (e.name === 'TimeoutError' || e.name === 'AbortError')) return true;
  if (e instanceof oidc.ResponseBodyError) return e.status >= 500;
  if (e instanceof oidc.ClientError) {
    if (e.code === 'OAUTH_TIMEOUT' || e.code === 'OAUTH_ABORT' || e.code === 'OAUTH_RESPONSE_IS_NOT_JSON') return true;
    if (e.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM') return e.cause instanceof Response && e.cause.status >= 500;
  }
  return false;
}

function checkRedirectUri(redirectUri: string): void {
  const url = URL.parse(redirectUri);
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash || url.username || url.password) {
    throw new PalisadeError('PAL_ERR_VALIDATION', 'the redirect URI must be an absolute http(s) URL without query or fragment');
  }
}

function invalid(issues: Issue[]): PalisadeError {
  return new PalisadeError('PAL_ERR_VALIDATION', `invalid upstream sign-in config: ${issues[0]!.path} ${issues[0]!.message}`, { errors: issues });
}

/** Checks what the schema cannot: per-kind fields, URLs, unique ids. */
function providerIssues(configs: UpstreamProviderConfig[], allowHttp: boolean): Issue[] {
  const issues: Issue[] = [];
  const seen = new Set<string>();
  configs.forEach((c, i) => {
    const at = (field: string, message: string) => issues.push({ path: `/providers/${i}/${field}`, message });
    if (seen.has(c.id)) at('id', `duplicate provider id "${c.id}"`);
    seen.add(c.id);
    if (c.kind === 'oidc' && c.issuer === undefined) at('issuer', 'required for kind "oidc"');
    for (const field of ['issuer', 'authorizationUrl', 'tokenUrl', 'apiUrl'] as const) {
      const value = c[field];
      if (value === undefined) continue;
      if (c.kind === 'oidc' && field !== 'issuer') at(field, 'only for kind "github" (kind "oidc" discovers its endpoints from the issuer)');
      if (c.kind === 'github' && field === 'issuer') at(field, 'only for kind "oidc"');
      const url = URL.parse(value);
      if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.hash || url.username || url.password || (field === 'issuer' && url.search)) {
        at(field, 'must be an absolute http(s) URL without credentials or fragment');
      } else if (url.protocol === 'http:' && !allowHttp) {
        at(field, 'must use https');
      }
    }
  });
  return issues;
}
