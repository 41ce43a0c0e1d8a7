/**
 * Local stand-ins for the upstream identity providers, over real HTTP on 127.0.0.1 (random ports):
 * a second oidc-provider standing in for Google, and a small server speaking GitHub's OAuth and
 * user-API shapes. `followToCallback` plays the browser: it follows redirects with a cookie jar
 * until the provider sends it to the redirect URI, and returns that URL.
 *
 * @example
 * const google = await startOidcStandIn({ redirectUris: [REDIRECT] });
 * google.signInAs({ sub: '1', email: 'ada@example.com', email_verified: true, name: 'Ada' });
 * const { url, transaction } = await login.start('google', REDIRECT);
 * const identity = await login.finish(transaction, await followToCallback(url, REDIRECT));
 */
import { randomBytes, createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

// ---- shared ----------------------------------------------------------------------------------

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Plays a browser without script: requests `url`, follows redirects keeping cookies, and returns
 * the URL it is finally sent to once that URL starts with `redirectUri` (which is not requested).
 */
export async function followToCallback(url: string, redirectUri: string): Promise<URL> {
  const jar = new Map<string, string>();
  let next = url;
  for (let hop = 0; hop < 20; hop++) {
    const res = await fetch(next, { redirect: 'manual', headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair!.indexOf('=');
      const value = pair!.slice(i + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) jar.delete(pair!.slice(0, i));
      else jar.set(pair!.slice(0, i), value);
    }
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) {
      throw new Error(`the provider stopped at ${next} with ${res.status}: ${(await res.text()).slice(0, 300)}`);
    }
    await res.arrayBuffer();
    next = new URL(location, next).href;
    if (next.startsWith(redirectUri)) return new URL(next);
  }
  throw new Error('too many redirects');
}

// ---- the OpenID Connect provider (Google) -----------------------------------------------------

type Stored = Record<string, unknown> & { uid?: string; grantId?: string; consumed?: number };

/** oidc-provider's adapter contract over one Map per stand-in (expiry is not needed in tests). */
function memoryAdapter() {
  const store = new Map<string, Stored>();
  return class MemoryAdapter {
    readonly #model: string;
    constructor(model: string) {
      this.#model = model;
    }
    #key = (id: string) => `${this.#model}:${id}`;
    async upsert(id: string, payload: Stored) { store.set(this.#key(id), payload); }
    async find(id: string) { return store.get(this.#key(id)); }
    async findByUid(uid: string) { return [...store.entries()].find(([k, v]) => k.startsWith(`${this.#model}:`) && v.uid === uid)?.[1]; }
    async findByUserCode() { return undefined; }
    async consume(id: string) { const p = store.get(this.#key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }
    async destroy(id: string) { store.delete(this.#key(id)); }
    async revokeByGrantId(grantId: string) { for (const [k, v] of store) if (v.grantId === grantId) store.delete(k); }
  };
}

/** An account of the OIDC stand-in; its claims are what the provider releases. */
export interface OidcAccount {
  sub: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  preferred_username?: string;
}

export interface OidcStandIn {
  /** `http://127.0.0.1:PORT`; discovery at `${issuer}/.well-known/openid-configuration`. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The account the next sign-in logs in as (non-interactively, consent granted). */
  signInAs(account: OidcAccount): void;
  close(): Promise<void>;
}

export interface OidcStandInOptions {
  /** Redirect URIs registered for the one client. */
  redirectUris: string[];
  /**
   * Put email and profile claims in the ID token, as Google does. Default true; false keeps them
   * at UserInfo only (oidc-provider's default, the spec's for the code flow).
   */
  claimsInIdToken?: boolean;
}

/**
 * A second oidc-provider standing in for Google: one confidential client (client_secret_basic),
 * PKCE required, RS256 ID tokens, scopes `openid email profile`.
 */
export async function startOidcStandIn(options: OidcStandInOptions): Promise<OidcStandIn> {
  const clientId = 'google-client';
  const clientSecret = randomBytes(24).toString('base64url');
  const accounts = new Map<string, OidcAccount>();
  let current: OidcAccount | undefined;

  let provider: Provider | undefined;
  const { server, url: issuer } = await listen((req, res) => {
    if (!provider) return void res.writeHead(503).end();
    if (req.url?.startsWith('/interaction/')) {
      interaction(provider, req, res).catch((e: unknown) => {
        res.writeHead(500).end(String(e));
      });
      return;
    }
    void provider.callback()(req, res);
  });

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signing = { ...(await exportJWK(privateKey)), kid: 'stand-in', alg: 'RS256', use: 'sig' };
  provider = new Provider(issuer, {
    adapter: memoryAdapter(),
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: options.redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [signing as never] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'email', 'profile'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
    conformIdTokenClaims: options.claimsInIdToken === false,
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, IdToken: 600, Interaction: 600, Session: 600 },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    findAccount: async (_ctx, sub) => {
      const account = accounts.get(sub);
      return account && { accountId: sub, claims: async () => ({ ...account }) };
    },
  });

  async function interaction(p: Provider, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const details = await p.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      if (!current) throw new Error('call signInAs() first');
      await p.interactionFinished(req, res, { login: { accountId: current.sub } }, { mergeWithLastSubmission: false });
      return;
    }
    const grant = new p.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
    grant.addOIDCScope(String(details.params.scope));
    await p.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }

  return {
    issuer,
    clientId,
    clientSecret,
    signInAs(account) {
      accounts.set(account.sub, account);
      current = account;
    },
    close: () => close(server),
  };
}

// ---- GitHub ----------------------------------------------------------------------------------

export interface GitHubStandInUser {
  id: number;
  login: string;
  name?: string | null;
  emails: { email: string; primary: boolean; verified: boolean }[];
}

export interface GitHubStandIn {
  /** `http://127.0.0.1:PORT`, serving both the OAuth endpoints and the API (as `apiUrl`). */
  url: string;
  clientId: string;
  clientSecret: string;
  /** The endpoints to put in the provider config. */
  endpoints: { authorizationUrl: string; tokenUrl: string; apiUrl: string };
  /** The user the next authorization signs in. */
  signInAs(user: GitHubStandInUser): void;
  /** Query of every authorization request, in order. */
  authorizations: URLSearchParams[];
  /** Token requests received. */
  tokenRequests: number;
  close(): Promise<void>;
}

interface Grant {
  user: GitHubStandInUser;
  redirectUri: string;
  challenge: string;
  scope: string;
}

/**
 * A small server speaking GitHub's shapes: `GET /login/oauth/authorize` signs in the preset user and
 * redirects back with `code` + `state` (PKCE S256 required here, to prove the client sends it);
 * `POST /login/oauth/access_token` takes a form, answers JSON when asked (`Accept: application/json`,
 * else a form) and, like GitHub, reports errors with status 200; `GET /user` and `GET /user/emails`
 * take `Authorization: Bearer`. Codes are single use.
 */
export async function startGitHubStandIn(): Promise<GitHubStandIn> {
  const clientId = 'Iv1.standin';
  const clientSecret = randomBytes(20).toString('hex');
  const codes = new Map<string, Grant>();
  const tokens = new Map<string, Grant>();
  let user: GitHubStandInUser | undefined;

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
  };
  const equal = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

  const state: GitHubStandIn = {
    url: '',
    clientId,
    clientSecret,
    endpoints: { authorizationUrl: '', tokenUrl: '', apiUrl: '' },
    signInAs: (u) => void (user = u),
    authorizations: [],
    tokenRequests: 0,
    close: async () => close(server),
  };

  const { server, url } = await listen((req, res) => {
    handle(req, res).catch((e: unknown) => json(res, 500, { message: String(e) }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', url);
    if (req.method === 'GET' && u.pathname === '/login/oauth/authorize') {
      const q = u.searchParams;
      state.authorizations.push(q);
      const redirectUri = q.get('redirect_uri');
      if (q.get('client_id') !== clientId || !redirectUri) return json(res, 404, { message: 'unknown application' });
      const challenge = q.get('code_challenge');
      if (q.get('code_challenge_method') !== 'S256' || !challenge) return json(res, 400, { message: 'PKCE S256 required by this stand-in' });
      if (!user) throw new Error('call signInAs() first');
      const code = randomBytes(10).toString('hex');
      codes.set(code, { user, redirectUri, challenge, scope: q.get('scope') ?? '' });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      const s = q.get('state');
      if (s !== null) back.searchParams.set('state', s);
      res.writeHead(302, { location: back.href }).end();
      return;
    }
    if (req.method === 'POST' && u.pathname === '/login/oauth/access_token') {
      state.tokenRequests++;
      const form = new URLSearchParams(await readBody(req));
      const reply = (body: Record<string, string>) => (req.headers.accept ?? '').includes('application/json')
        ? json(res, 200, body)
        : void res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded' }).end(new URLSearchParams(body).toString());
      if (form.get('client_id') !== clientId || !equal(form.get('client_secret') ?? '', clientSecret)) {
        return reply({ error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' });
      }
      const code = form.get('code') ?? '';
      const grant = codes.get(code);
      codes.delete(code);
      if (!grant) return reply({ error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.' });
      if (form.get('redirect_uri') !== grant.redirectUri) return reply({ error: 'redirect_uri_mismatch', error_description: 'The redirect_uri MUST match the registered callback URL for this application.' });
      const verifier = form.get('code_verifier') ?? '';
      if (createHash('sha256').update(verifier).digest('base64url') !== grant.challenge) {
        return reply({ error: 'bad_verification_code', error_description: 'The code_verifier does not match the code_challenge.' });
      }
      const token = `gho_${randomBytes(18).toString('base64url')}`;
      tokens.set(token, grant);
      return reply({ access_token: token, token_type: 'bearer', scope: grant.scope.split(' ').join(',') });
    }
    if (req.method === 'GET' && (u.pathname === '/user' || u.pathname === '/user/emails')) {
      const grant = tokens.get(/^Bearer (\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '');
      if (!grant) return json(res, 401, { message: 'Bad credentials' });
      if (!req.headers['user-agent']) return json(res, 403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header' });
      if (u.pathname === '/user') return json(res, 200, { login: grant.user.login, id: grant.user.id, name: grant.user.name ?? null, email: null, type: 'User' });
      if (!grant.scope.split(' ').includes('user:email')) return json(res, 404, { message: 'Not Found' });
      return json(res, 200, grant.user.emails.map((e) => ({ ...e, visibility: e.primary ? 'private' : null })));
    }
    json(res, 404, { message: 'Not Found' });
  }

  state.url = url;
  state.endpoints = { authorizationUrl: `${url}/login/oauth/authorize`, tokenUrl: `${url}/login/oauth/access_token`, apiUrl: url };
  return state;
}
