/**
 * @module auth/provider — the OAuth 2.1 authorization server, built on oidc-provider and mounted at
 * `/oauth2`. Client credentials for API clients, the device authorization grant (RFC 8628) for the
 * extension and the CLI, refresh tokens that rotate on every use, JWT access tokens (RFC 9068,
 * ES256) for one audience.
 */
import Provider, { errors as oidcErrors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { IncomingMessage } from 'node:http';
import type { JWK } from 'jose';
import type { Logger } from 'pino';
import { PalisadeError } from '@palisade/protocol';
import type { ServerConfig } from '../config.ts';
import type { DurableStore, OidcRepo } from '../store/types.ts';
import type { SecurityEvents } from '../siem/events.ts';
import { createOidcAdapter } from './adapter.ts';
import { installHashedSecrets, reuseApiClients, type ClientDirectory } from './clients.ts';
import { esc, page } from './pages.ts';
import { crossSiteFormRefusal } from '../edge/forms.ts';
import { cookieKeys } from './cookie-keys.ts';

/** The extension's public client. */
export const EXTENSION_CLIENT_ID = 'palisade-extension';
/** The CLI's public client. */
export const CLI_CLIENT_ID = 'palisade-cli';
/** First-party public clients, and the scopes each may receive. */
export const FIRST_PARTY_CLIENTS: Record<string, { name: string; scope: string }> = {
  [EXTENSION_CLIENT_ID]: { name: 'Palisade browser extension', scope: 'openid offline_access agent' },
  [CLI_CLIENT_ID]: { name: 'Palisade CLI', scope: 'openid offline_access tasks admin' },
};
/** Scopes that live on the API resource server. */
export const API_SCOPES = 'tasks agent admin';

/** ID-token lifetime, s: with the access-token lifetime, how long a retired signing key stays published. */
export const ID_TOKEN_TTL_S = 3600;

/** The CLI's loopback redirect (RFC 8252 §7.3): any port is accepted, the rest must match exactly. */
export const CLI_REDIRECT_URI = 'http://127.0.0.1/callback';
/** The redirect `chrome.identity.launchWebAuthFlow` uses for an extension id. */
export const extensionRedirectUri = (extensionId: string): string => `https://${extensionId}.chromiumapp.org/`;

export interface ProviderOptions {
  config: ServerConfig;
  issuer: string;
  store: DurableStore;
  /** Where OAuth records live: the durable store's, or the hot store's (Redis). */
  records: OidcRepo;
  /** API clients (cached; revocations reach every node). */
  clients: ClientDirectory;
  /** Signing keys: oidc-provider signs with the one without `key_ops: ['verify']` (see keys.ts). */
  jwks: JWK[];
  cookieKeys: string[];
  events: SecurityEvents;
  /** Called when oidc-provider revokes a whole grant (code or refresh-token reuse, revocation). */
  onGrantRevoked?: (grantId: string) => void;
  /** Where errors that escape oidc-provider go (instead of Koa's default, `console.error`). */
  log?: Logger;
}

/** Creates the provider. */
export function createProvider({ config, issuer, store, records, clients, jwks, cookieKeys, events, onGrantRevoked, log }: ProviderOptions): Provider {
  // Authorization code + PKCE (S256 only, the one method oidc-provider 9 implements; required for
  // these public clients) beside the device grant: the CLI on a loopback redirect, the extension
  // through launchWebAuthFlow for the extension ids the server is told about.
  const redirects: Record<string, string[]> = {
    [CLI_CLIENT_ID]: [CLI_REDIRECT_URI],
    [EXTENSION_CLIENT_ID]: config.extensionIds.map(extensionRedirectUri),
  };
  const configuration: Configuration = {
    adapter: createOidcAdapter(records, clients),
    clients: Object.entries(FIRST_PARTY_CLIENTS).map(([clientId, c]) => {
      const uris = redirects[clientId] ?? [];
      return {
        client_id: clientId,
        client_name: c.name,
        application_type: clientId === CLI_CLIENT_ID ? 'native' : 'web',
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', ...(uris.length > 0 ? ['authorization_code'] : [])],
        response_types: uris.length > 0 ? ['code'] : [],
        redirect_uris: uris,
        scope: c.scope,
      };
    }),
    responseTypes: ['code'],
    clientDefaults: { id_token_signed_response_alg: 'ES256', grant_types: [], response_types: [] },
    jwks: { keys: jwks as NonNullable<Configuration['jwks']>['keys'] },
    cookies: providerCookies(cookieKeys, !config.insecureHttp),
    scopes: ['openid', 'offline_access', 'tasks', 'agent', 'admin'],
    claims: { openid: ['sub'] },
    findAccount: async (_ctx, sub) => {
      const user = await store.users.byId(sub);
      if (!user) return undefined;
      return { accountId: user.id, claims: async () => ({ sub: user.id, preferred_username: user.username }) };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // A person's access token names its session (grant), so revoking the session refuses it at once.
    extraTokenClaims: async (_ctx, token) => ('grantId' in token && token.grantId ? { gid: token.grantId } : undefined),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // A client may introspect or revoke only its own tokens (the library's default lets any
      // confidential client introspect every token, which would disclose other users' grants).
      introspection: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        userCodeInputSource: async (ctx, form, _out, err) => {
          const msg = err ? '<p class="error" role="alert">That code is not valid or has expired. Try again.</p>' : '<p>Enter the code your device shows.</p>';
          ctx.body = page('Connect a device', `${msg}${form}<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        userCodeConfirmSource: async (ctx, form, client, _info, userCode) => {
          ctx.body = page('Confirm the device', `<p><strong>${esc(client.clientName ?? client.clientId)}</strong> wants to connect.</p>
<p>Check that your device shows this code:</p><p class="code" id="user-code">${esc(userCode)}</p>${form}
<button type="submit" form="op.deviceConfirmForm" id="confirm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" value="yes" name="abort" class="secondary">Cancel</button>`);
        },
        successSource: async (ctx) => {
          ctx.body = page('Device connected', '<p id="device-success">You can close this page and return to your device.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.audience,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== config.audience) throw new oidcErrors.InvalidTarget();
          return {
            scope: API_SCOPES,
            audience: config.audience,
            accessTokenTTL: config.accessTokenTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    clientBasedCORS: (_ctx, origin, client) => client.clientId === EXTENSION_CLIENT_ID && /^chrome-extension:\/\/[a-p]{32}$/.test(origin),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: config.accessTokenTtl,
      ClientCredentials: config.accessTokenTtl,
      DeviceCode: 600,
      Grant: config.refreshTokenTtl,
      Interaction: 600,
      Session: 24 * 3600,
      IdToken: ID_TOKEN_TTL_S,
      RefreshToken: config.refreshTokenTtl,
    },
    enabledJWA: { authorizationSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Something went wrong', `<p class="error" role="alert">${esc(out.error_description ?? out.error)}</p>`);
    },
  };

  const provider = new Provider(issuer, configuration);
  installHashedSecrets(provider.Client);
  reuseApiClients(provider.Client as unknown as { find(id: unknown): Promise<unknown> }, clients, (id) => Object.hasOwn(FIRST_PARTY_CLIENTS, id));
  const issuerOrigin = new URL(issuer).origin;
  // One middleware ahead of oidc-provider's own (each costs the token endpoint a turn of Koa's chain):
  // - the device-code forms (POST /device) carry oidc-provider's own anti-forgery token (`xsrf`,
  //   bound to the session cookie); a POST another site sent is refused before it, as on our forms;
  // - a store that cannot be reached: refused with 503 + Retry-After (see adapter.ts), and an alarm;
  // - no route here (e.g. GET on a POST-only endpoint): problem details, as everywhere else;
  // - oidc-provider answers a request that needs a sign-in session this browser does not have (a
  //   resume URL `/auth/<uid>/` or `/device/<uid>/`, a device-code form posted without its cookie)
  //   by throwing a TypeError ("persist can only be called on previously persisted Sessions")
  //   instead of a 4xx: that is the caller's mistake, answered 400.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/device') {
      const refusal = crossSiteFormRefusal(ctx.headers, [issuerOrigin, `${ctx.protocol}://${ctx.host}`]);
      if (refusal) {
        events.emit({ class: 'api_activity', activity: 'form.refused', outcome: 'failure', severity: 'high', code: 'PAL_ERR_ORIGIN_REFUSED', message: `form refused: ${refusal}`, src: { ip: ip(ctx), origin: ctx.get('origin').slice(0, 200) || undefined }, data: { path: '/oauth2/device' } });
        ctx.status = 403;
        ctx.type = 'html';
        ctx.set('cache-control', 'no-store');
        ctx.body = page('Request refused', '<p class="error" role="alert">This form was not sent from this server’s own page, so nothing was done. Start again from your device.</p>');
        return;
      }
    }
    try {
      await next();
    } catch (e) {
      if (!(e instanceof TypeError) || !/previously persisted Sessions/.test(e.message)) throw e;
      ctx.status = 400;
      ctx.type = 'html';
      ctx.set('cache-control', 'no-store');
      ctx.body = page('Sign-in not in progress', '<p class="error" role="alert">This sign-in is not in progress in this browser: it expired, or it was started somewhere else. Start again from your device or app.</p>');
      return;
    }
    if (ctx.status === 503) {
      ctx.set('retry-after', '1');
      events.emit({ class: 'api_activity', activity: 'store.unavailable', outcome: 'failure', severity: 'high', code: 'PAL_ERR_UNAVAILABLE', message: 'a store is unreachable: OAuth request refused', src: { ip: ip(ctx) } });
    } else if (ctx.status === 404 && ctx.body == null) {
      ctx.status = 404;
      ctx.type = 'application/problem+json';
      ctx.body = new PalisadeError('PAL_ERR_NOT_FOUND', 'no such OAuth endpoint (or not for this method)').toProblem();
    }
  });

  // Every token decision is a security event. (Tokens the direct path issues (client-credentials.ts)
  // never reach oidc-provider, so its `grant.success` does not fire for them: that path emits the
  // same security event itself. Listen to the security events, not to oidc-provider's, to see every token.)

  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    events.emit({
      class: 'authentication', activity: 'oauth.token', outcome: 'success', message: `token issued (${String(ctx.oidc.params?.grant_type ?? '')})`,
      actor: { clientId: ctx.oidc.client?.clientId, userId: ctx.oidc.account?.accountId }, src: { ip: ip(ctx) },
    });
  });
  provider.on('grant.error', (ctx: KoaContextWithOIDC, err: Error & { error?: string; error_detail?: string }) => {
    if (err.error === 'authorization_pending' || err.error === 'slow_down') return;
    // A rotated refresh token presented again means it was copied: oidc-provider revokes the whole
    // grant (every token of that sign-in); this is the alarm for it.
    const reuse = err.error === 'invalid_grant' && /already used/.test(err.error_detail ?? '');
    events.emit({
      class: 'authentication', activity: reuse ? 'oauth.refresh.reuse' : 'oauth.token', outcome: 'failure', severity: reuse ? 'high' : undefined,
      code: err.error ?? 'error', message: reuse ? 'a rotated refresh token was used again: its whole grant is revoked' : err.message,
      actor: { clientId: ctx.oidc?.client?.clientId, userId: ctx.oidc?.entities?.RefreshToken?.accountId }, src: { ip: ip(ctx) },
    });
  });
  provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
    events.emit({
      class: 'authentication', activity: 'oauth.server_error', outcome: 'failure', severity: 'high',
      code: (err as { code?: string }).code ?? 'server_error', message: 'the authorization server failed (is a store unreachable?)', src: { ip: ip(ctx) },
    });
  });
  // An error that reached Koa (a 500 oidc-provider did not handle): to the log and the security
  // events, never to stderr through Koa's default handler.
  (provider as unknown as NodeJS.EventEmitter).on('error', (err: Error, ctx?: KoaContextWithOIDC) => {
    log?.error({ err, path: ctx?.path }, 'the authorization server failed on a request');
    events.emit({
      class: 'authentication', activity: 'oauth.unhandled', outcome: 'failure', severity: 'high',
      code: 'PAL_ERR_INTERNAL', message: 'the authorization server failed on a request', src: { ip: ctx ? ip(ctx) : undefined },
    });
  });
  provider.on('grant.revoked', (_ctx: KoaContextWithOIDC, grantId: string) => {
    events.emit({ class: 'authorization', activity: 'oauth.grant.revoked', outcome: 'success', message: 'grant revoked', data: { grantId } });
    // Its access tokens are JWTs nobody stores: the session's revocation refuses them everywhere.
    onGrantRevoked?.(grantId);
  });
  return provider;
}

/**
 * The client's address as the request guard resolved it (edge/client-ip.ts: trusted proxies, IPv4
 * addresses without their `::ffff:` prefix), so the events of both token paths name it alike; Koa's
 * own when a request did not pass the guard.
 */
function ip(ctx: Pick<KoaContextWithOIDC, 'req' | 'ip'>): string {
  return (ctx.req as IncomingMessage & { clientIp?: string }).clientIp ?? ctx.ip;
}

/**
 * oidc-provider's cookies: signed, `HttpOnly`, `SameSite=Lax`, and over TLS `Secure` with the
 * `__Host-` prefix (no `Domain`, `Path=/`: the browser refuses them from anywhere else). The
 * interaction cookie's path is `/` (oidc-provider would scope it to `/interaction/<uid>`; the
 * `short` options are applied after that default), which also lets the upstream sign-in callback
 * (`/interaction/callback/…`) see it. The resume cookie's path is forced by oidc-provider to
 * `/oauth2/auth/<uid>` (or `/oauth2/device/resume/<uid>`), after these options, so it gets the
 * `__Secure-` prefix instead. Plain HTTP (development only) cannot set `Secure` cookies: no prefixes.
 */
export function providerCookies(keys: string[], secure: boolean): NonNullable<Configuration['cookies']> {
  const options = { signed: true, httpOnly: true, sameSite: 'lax', secure } as const;
  return {
    // Signatures as keygrip makes them, with the keys imported once (see cookie-keys.ts).
    keys: cookieKeys(keys),
    names: secure
      ? { session: '__Host-palisade-session', interaction: '__Host-palisade-interaction', resume: '__Secure-palisade-resume' }
      : { session: 'palisade-session', interaction: 'palisade-interaction', resume: 'palisade-resume' },
    long: { ...options, path: '/' },
    short: { ...options, path: '/' },
  };
}
