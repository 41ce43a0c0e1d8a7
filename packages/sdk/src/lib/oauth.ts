/**
 * @module lib/oauth — the OAuth 2.1 pieces the SDK needs: the discovery document (fetched once),
 * form posts to the token endpoint, token responses, and the client-credentials token cache.
 */
import { PalisadeError } from '@palisade/protocol';
import { errorFromBody } from './errors.ts';
import { normaliseServer, type Transport } from './http.ts';

/** The fields of the discovery document (`/oauth2/.well-known/openid-configuration`) the SDK reads. */
export interface DiscoveryDocument {
  issuer: string;
  token_endpoint: string;
  /** Where a browser starts the authorization code flow. */
  authorization_endpoint?: string;
  /** Whether the authorization response carries `iss` (RFC 9207). */
  authorization_response_iss_parameter_supported?: boolean;
  device_authorization_endpoint?: string;
  revocation_endpoint?: string;
}

/** Tokens from the token endpoint. `expiresAt` is in epoch milliseconds. */
export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  /** When the access token expires (epoch ms). */
  expiresAt: number;
  scope?: string;
  idToken?: string;
}

/** A cached token is replaced this long before it expires. */
export const TOKEN_REFRESH_MARGIN_MS = 60_000;

/** Path of the discovery document below the server's base URL. */
export const DISCOVERY_PATH = '/oauth2/.well-known/openid-configuration';

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function endpoint(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the discovery document has no ${name}`);
  try {
    return normaliseServer(value);
  } catch {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the discovery document's ${name} "${value}" is not an https URL`);
  }
}

/** Fetches the discovery document once per transport and keeps it (a failure is not kept). */
export class Discovery {
  readonly #transport: Transport;
  #doc: Promise<DiscoveryDocument> | undefined;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  get(): Promise<DiscoveryDocument> {
    this.#doc ??= this.#load().catch((err: unknown) => {
      this.#doc = undefined;
      throw err;
    });
    return this.#doc;
  }

  async #load(): Promise<DiscoveryDocument> {
    const url = `${this.#transport.server}${DISCOVERY_PATH}`;
    const res = await this.#transport.send(url, { headers: { accept: 'application/json' } }, { what: 'discovery' });
    const body = await readJson(res);
    if (!res.ok) throw errorFromBody(res.status, body);
    if (!isRecord(body)) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the discovery document is not a JSON object');
    const doc: DiscoveryDocument = {
      issuer: typeof body.issuer === 'string' ? body.issuer : '',
      token_endpoint: endpoint(body.token_endpoint, 'token_endpoint'),
    };
    if (body.authorization_endpoint !== undefined) doc.authorization_endpoint = endpoint(body.authorization_endpoint, 'authorization_endpoint');
    if (body.authorization_response_iss_parameter_supported === true) doc.authorization_response_iss_parameter_supported = true;
    if (body.device_authorization_endpoint !== undefined) {
      doc.device_authorization_endpoint = endpoint(body.device_authorization_endpoint, 'device_authorization_endpoint');
    }
    if (body.revocation_endpoint !== undefined) doc.revocation_endpoint = endpoint(body.revocation_endpoint, 'revocation_endpoint');
    return doc;
  }
}

/** Reads a body as JSON; `undefined` if empty, the raw text if it is not JSON. */
export async function readJson(res: Response): Promise<unknown> {
  const text = await res.text();
  if (text.length === 0) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text.slice(0, 1024);
  }
}

/** `client_secret_basic`: both parts form-urlencoded, then base64 (RFC 6749 §2.3.1). */
export function basicAuth(clientId: string, clientSecret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  const raw = `${enc(clientId)}:${enc(clientSecret)}`;
  return `Basic ${btoa(raw)}`;
}

/** POSTs a form to an OAuth endpoint; resolves with the status and the parsed body, whatever the status. */
export async function postForm(
  transport: Transport,
  url: string,
  form: Record<string, string>,
  options: { authorization?: string; signal?: AbortSignal | undefined; what: string },
): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
  };
  if (options.authorization) headers.authorization = options.authorization;
  const res = await transport.send(
    url,
    { method: 'POST', headers, body: new URLSearchParams(form).toString() },
    { signal: options.signal, what: options.what },
  );
  return { status: res.status, body: await readJson(res) };
}

/** Checks a successful token response and turns it into a `TokenSet`. */
export function toTokenSet(body: unknown, now = Date.now()): TokenSet {
  if (!isRecord(body) || typeof body.access_token !== 'string' || body.access_token.length === 0) {
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the token endpoint answered without an access_token');
  }
  const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 300;
  const tokens: TokenSet = { accessToken: body.access_token, expiresAt: now + expiresIn * 1000 };
  if (typeof body.refresh_token === 'string') tokens.refreshToken = body.refresh_token;
  if (typeof body.scope === 'string') tokens.scope = body.scope;
  if (typeof body.id_token === 'string') tokens.idToken = body.id_token;
  return tokens;
}

/** A request for a token. `rejected` is the token the server just refused (on a 401). */
export interface TokenRequest {
  forceRefresh: boolean;
  rejected?: string | undefined;
}

/**
 * Access tokens by client credentials (`client_secret_basic`): cached until
 * {@link TOKEN_REFRESH_MARGIN_MS} before expiry; concurrent callers share one in-flight request;
 * a forced refresh after a 401 is skipped if another caller already replaced the refused token.
 */
export class ClientCredentials {
  readonly #transport: Transport;
  readonly #discovery: Discovery;
  readonly #authorization: string;
  readonly #scope: string;
  readonly #now: () => number;
  #cached: { token: string; refreshAt: number } | undefined;
  #inflight: Promise<string> | undefined;

  constructor(options: {
    transport: Transport;
    discovery: Discovery;
    clientId: string;
    clientSecret: string;
    scope?: string;
    now?: () => number;
  }) {
    this.#transport = options.transport;
    this.#discovery = options.discovery;
    this.#authorization = basicAuth(options.clientId, options.clientSecret);
    this.#scope = options.scope ?? 'tasks';
    this.#now = options.now ?? Date.now;
  }

  async token(request: TokenRequest): Promise<string> {
    const cached = this.#cached;
    if (cached) {
      const fresh = this.#now() < cached.refreshAt;
      if (!request.forceRefresh && fresh) return cached.token;
      if (request.forceRefresh && request.rejected !== undefined && request.rejected !== cached.token && fresh) return cached.token;
    }
    if (request.forceRefresh) this.#cached = undefined;
    this.#inflight ??= this.#fetch().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #fetch(): Promise<string> {
    const doc = await this.#discovery.get();
    const { status, body } = await postForm(
      this.#transport,
      doc.token_endpoint,
      { grant_type: 'client_credentials', scope: this.#scope },
      { authorization: this.#authorization, what: 'token request' },
    );
    if (status < 200 || status > 299) throw errorFromBody(status, body);
    const tokens = toTokenSet(body, this.#now());
    this.#cached = { token: tokens.accessToken, refreshAt: tokens.expiresAt - TOKEN_REFRESH_MARGIN_MS };
    return tokens.accessToken;
  }
}
