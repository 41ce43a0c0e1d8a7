/**
 * @module auth/interactions — the pages a person uses: the one-time admin setup, and sign-in +
 * consent inside an OAuth interaction (reached from the device-code page). Every form POST must come
 * from one of this server's pages (Fetch Metadata and `Origin`), and the interaction's forms — whose
 * session is a cookie — carry an anti-forgery token bound to the interaction (edge/forms.ts).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type Provider from 'oidc-provider';
import { PalisadeError } from '@palisade/protocol';
import type { DurableStore } from '../store/types.ts';
import type { SecurityEvents } from '../siem/events.ts';
import { checkPasswordRules, hashPassword, verifyPassword } from './passwords.ts';
import type { LoginGuard } from './login-guard.ts';
import type { UpstreamIdentity, UpstreamLogin, UpstreamProviderConfig, UpstreamTransaction } from './upstream.ts';
import type { Transient } from '../hot/types.ts';
import { consentPage, loginPage, messagePage, setupPage, STYLESHEET } from './pages.ts';
import { FIRST_PARTY_CLIENTS } from './provider.ts';
import { newNonce, pageCsp } from '../edge/headers.ts';
import { crossSiteFormRefusal, FORM_TOKEN_FIELD, formToken, formTokenValid } from '../edge/forms.ts';

const SETUP_KEY = 'setup_token';
const SETUP_TTL_MS = 24 * 3600 * 1000;
/** A username: 3–64 letters, digits, dots, dashes or underscores (the setup page and `POST /api/v1/users`). */
export const USERNAME = /^[A-Za-z0-9._-]{3,64}$/;

/** A new user's id. */
export function newUserId(): string {
  return `u_${randomBytes(12).toString('base64url')}`;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

/** If there is no user yet, creates a one-time setup token (stored hashed) and returns it. */
export async function createSetupToken(store: DurableStore): Promise<string | undefined> {
  if ((await store.users.count()) > 0) return undefined;
  const token = randomBytes(24).toString('base64url');
  await store.meta.set(SETUP_KEY, JSON.stringify({ hash: sha256(token), expires: Date.now() + SETUP_TTL_MS }));
  return token;
}

async function setupTokenValid(store: DurableStore, token: unknown): Promise<boolean> {
  if (typeof token !== 'string' || token.length > 100) return false;
  const raw = await store.meta.get(SETUP_KEY);
  if (!raw) return false;
  const { hash, expires } = JSON.parse(raw) as { hash: string; expires: number };
  const a = Buffer.from(hash);
  const b = Buffer.from(sha256(token));
  return expires > Date.now() && a.length === b.length && timingSafeEqual(a, b);
}

type Form = Record<string, string | undefined>;
/** An HTML page, with the page policy (a fresh nonce; `formAction` as `pageCsp` takes it) and no caching. */
const html = (reply: FastifyReply, code: number, body: string, formAction: string | null = "'self'") =>
  reply.code(code).type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', pageCsp(newNonce(), formAction)).send(body);

export interface InteractionOptions {
  provider: Provider;
  store: DurableStore;
  events: SecurityEvents;
  /** Password-guessing limits (hot-store counters). */
  loginGuard: LoginGuard;
  /** Upstream sign-in (Google, GitHub…), with the providers' configuration; absent = passwords only. */
  upstream?: { login: UpstreamLogin; configs: readonly UpstreamProviderConfig[]; transient: Transient; baseUrl: () => string } | undefined;
  /** The server's public URL (known after `listen()`): its origin is the one our forms are posted from. */
  baseUrl: () => string;
  /** Secret shared by every node that keys the forms' anti-forgery tokens (HMAC of the interaction id). */
  formKey: string;
}

/** How long an upstream sign-in may take, from the button to the callback. */
const UPSTREAM_TTL_MS = 10 * 60_000;

/** Registers `/setup`, `/interaction/:uid…` and the stylesheet. */
export async function interactionRoutes(app: FastifyInstance, { provider, store, events, loginGuard, upstream, baseUrl, formKey }: InteractionOptions): Promise<void> {
  const providers = upstream?.login.providers() ?? [];
  /** The sign-in page of `d`, with its anti-forgery token and where its forms may lead. */
  const signIn = (reply: FastifyReply, d: Details, error?: string) =>
    html(reply, 200, loginPage(d.uid, clientName(String(d.params.client_id)), formToken(formKey, d.uid), error, providers), formAction(d));

  /**
   * The `form-action` of an interaction's pages: `'self'`, plus the client's redirect when the
   * interaction ends in one (Chromium checks form-action on each redirect after a form POST too, and
   * an authorization-code flow's last redirect goes to the client). `null` (no directive) where a
   * form can lead somewhere only known at run time or only expressible as an `http:` source: the
   * upstream sign-in buttons (an OpenID Connect provider's authorization endpoint comes from its
   * discovery document) and the CLI's loopback `http://127.0.0.1:<port>` redirect (an `http:`
   * source costs the page its Mozilla Observatory grade). docs/SECURITY-HEADERS.md has the details.
   */
  function formAction(d: Details): string | null {
    if (d.prompt.name === 'login' && providers.length > 0) return null;
    const redirect = d.params.redirect_uri;
    if (typeof redirect !== 'string') return "'self'";
    const url = URL.parse(redirect);
    return url?.protocol === 'https:' ? `'self' ${url.origin}` : null;
  }

  /** A form POST refused as forged: a security event and a page that says so; nothing else happens. */
  function refuseForm(req: FastifyRequest, reply: FastifyReply, code: 'PAL_ERR_ORIGIN_REFUSED' | 'PAL_ERR_FORBIDDEN', reason: string): FastifyReply {
    events.emit({ class: 'api_activity', activity: 'form.refused', outcome: 'failure', severity: 'high', code, message: `form refused: ${reason}`, src: { ip: req.ip, origin: req.headers.origin?.slice(0, 200) }, data: { path: req.url.slice(0, 200) } });
    return html(reply, 403, messagePage('Request refused', 'This form was not sent from this server’s own page, so nothing was done. Start again from your device.'));
  }

  /** Whether a form POST came from one of this server's pages (edge/forms.ts); if not, it has been refused. */
  function sentFromOurPage(req: FastifyRequest, reply: FastifyReply): boolean {
    const refusal = crossSiteFormRefusal(req.headers, [new URL(baseUrl()).origin, `${req.protocol}://${req.host}`]);
    if (refusal) refuseForm(req, reply, 'PAL_ERR_ORIGIN_REFUSED', refusal);
    return refusal === undefined;
  }

  /**
   * The interaction a form POST acts on: sent from our page, for the interaction this browser's
   * cookie names, with that interaction's anti-forgery token. Otherwise undefined, and answered.
   */
  async function formInteraction(req: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply): Promise<Details | undefined> {
    if (!sentFromOurPage(req, reply)) return undefined;
    const d = await interactionOf(provider, req, reply);
    if (!d) return undefined;
    if (!formTokenValid(formKey, d.uid, (req.body as Form | undefined)?.[FORM_TOKEN_FIELD])) {
      refuseForm(req, reply, 'PAL_ERR_FORBIDDEN', 'the anti-forgery token is missing or wrong');
      return undefined;
    }
    return d;
  }

  app.get('/assets/palisade.css', async (_req, reply) => reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=3600').send(STYLESHEET));

  app.get<{ Querystring: { token?: string } }>('/setup', async (req, reply) => {
    if (!(await setupTokenValid(store, req.query.token))) return html(reply, 404, messagePage('Setup link not valid', 'This setup link is used, expired or wrong. Restart the server with no account to get a new one.'));
    return html(reply, 200, setupPage(req.query.token!));
  });

  // The one-time token in the form is what authorizes it (no cookie); the origin is checked as well.
  app.post<{ Body: Form }>('/setup', async (req, reply) => {
    if (!sentFromOurPage(req, reply)) return reply;
    const { token, username, password } = req.body ?? {};
    if (!(await setupTokenValid(store, token))) {
      events.emit({ class: 'account_change', activity: 'setup', outcome: 'failure', code: 'PAL_ERR_FORBIDDEN', message: 'setup with an invalid token', src: { ip: req.ip } });
      return html(reply, 403, messagePage('Setup link not valid', 'This setup link is used, expired or wrong.'));
    }
    try {
      if (!username || !USERNAME.test(username)) throw new PalisadeError('PAL_ERR_VALIDATION', 'the username must be 3–64 letters, digits, dots, dashes or underscores');
      checkPasswordRules(password ?? '');
    } catch (e) {
      return html(reply, 400, setupPage(token!, (e as Error).message));
    }
    // Consume the link atomically: of two concurrent submissions, one creates the account.
    const raw = await store.meta.get(SETUP_KEY);
    if (!raw || !(await store.meta.deleteIf(SETUP_KEY, raw))) return html(reply, 403, messagePage('Setup link not valid', 'This setup link was just used.'));
    const id = newUserId();
    await store.users.create({ id, username: username!, passwordHash: await hashPassword(password!), role: 'admin', createdAt: new Date().toISOString() });
    events.emit({ class: 'account_change', activity: 'admin.create', outcome: 'success', message: `admin account ${username} created`, actor: { userId: id }, src: { ip: req.ip } });
    return html(reply, 201, messagePage('Admin account created', `Signed up as ${username}. You can now approve devices and create API clients (palisade login, then palisade clients create).`));
  });

  app.get<{ Params: { uid: string } }>('/interaction/:uid', async (req, reply) => {
    const d = await interactionOf(provider, req, reply);
    if (!d) return reply;
    if (d.prompt.name === 'login') return signIn(reply, d);
    const accountId = d.session?.accountId;
    const user = accountId ? await store.users.byId(accountId) : undefined;
    return html(reply, 200, consentPage(d.uid, clientName(String(d.params.client_id)), user?.username ?? 'unknown', requestedScopes(d), formToken(formKey, d.uid)), formAction(d));
  });

  app.post<{ Params: { uid: string }; Body: Form }>('/interaction/:uid/login', async (req, reply) => {
    const d = await formInteraction(req, reply);
    if (!d) return reply;
    const { username = '', password = '' } = req.body ?? {};
    const attempt = await loginGuard.begin(username, req.ip);
    if (!attempt.allowed) {
      events.emit({ class: 'authentication', activity: 'password.login', outcome: 'failure', code: 'PAL_ERR_RATE_LIMITED', message: 'sign-in refused while locked', src: { ip: req.ip } });
      reply.header('retry-after', String(Math.ceil(attempt.retryAfterMs / 1000)));
      // 200, not 429: the form is shown again with the reason (see the note on wrong passwords).
      return signIn(reply, d, `Too many failed sign-ins. Try again in ${waitText(attempt.retryAfterMs)}.`);
    }
    if (attempt.delayMs > 0) await sleep(attempt.delayMs);
    const user = username.length <= 64 ? await store.users.byUsername(username) : undefined;
    let ok: boolean;
    try {
      ok = await verifyPassword(user?.passwordHash, password.slice(0, 256));
    } catch (e) {
      if (!(e instanceof PalisadeError) || e.code !== 'PAL_ERR_UNAVAILABLE') throw e;
      // Too many passwords being checked on this server: this attempt does not count, and says so
      // (200 with the form again, as for a lock: see the note on wrong passwords).
      await attempt.abandon();
      events.emit({ class: 'authentication', activity: 'password.login', outcome: 'failure', code: e.code, message: 'sign-in not checked: too many at once', src: { ip: req.ip } });
      reply.header('retry-after', '1');
      return signIn(reply, d, 'The server is busy checking other sign-ins. Try again in a moment.');
    }
    if (!ok || !user) {
      const locked = await attempt.fail();
      events.emit({ class: 'authentication', activity: 'password.login', outcome: 'failure', code: 'PAL_ERR_UNAUTHENTICATED', message: 'wrong username or password', src: { ip: req.ip } });
      if (locked) events.emit({ class: 'authentication', activity: 'password.lock', outcome: 'failure', severity: 'high', code: 'PAL_ERR_RATE_LIMITED', message: 'too many failed sign-ins: locked for a while', src: { ip: req.ip } });
      // The form again, with 200: launchWebAuthFlow's window closes on an error status before the
      // person can read why. The outcome is in the page and in the security event.
      return signIn(reply, d, 'Wrong username or password.');
    }
    await attempt.succeed();
    events.emit({ class: 'authentication', activity: 'password.login', outcome: 'success', message: `${user.username} signed in`, actor: { userId: user.id }, src: { ip: req.ip } });
    reply.hijack();
    await provider.interactionFinished(req.raw, reply.raw, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
    return reply;
  });

  if (upstream) {
    // Upstream sign-in: the button starts the flow (fresh state, nonce, PKCE kept server-side under the
    // state, bound to this interaction); the provider sends the person back to the callback.
    app.post<{ Params: { uid: string; provider: string } }>('/interaction/:uid/upstream/:provider', async (req, reply) => {
      const d = await formInteraction(req, reply);
      if (!d) return reply;
      if (d.prompt.name !== 'login') throw new PalisadeError('PAL_ERR_VALIDATION', 'this sign-in request is past the sign-in step');
      const redirectUri = `${upstream.baseUrl()}/interaction/callback/${encodeURIComponent(req.params.provider)}`;
      let started;
      try {
        started = await upstream.login.start(req.params.provider, redirectUri);
      } catch (e) {
        return upstreamRefused(reply, e, req.ip);
      }
      await upstream.transient.put(`upstream:${started.transaction.state}`, JSON.stringify({ uid: d.uid, transaction: started.transaction }), UPSTREAM_TTL_MS);
      return reply.code(303).header('location', started.url).header('cache-control', 'no-store').send();
    });

    app.get<{ Params: { provider: string }; Querystring: { state?: string } }>('/interaction/callback/:provider', async (req, reply) => {
      const state = typeof req.query.state === 'string' && req.query.state.length <= 256 ? req.query.state : undefined;
      const saved = state ? await upstream.transient.take(`upstream:${state}`) : undefined;
      if (!saved) return upstreamRefused(reply, new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'this sign-in response matches no sign-in in progress (expired, used or forged)'), req.ip);
      const { uid, transaction } = JSON.parse(saved) as { uid: string; transaction: UpstreamTransaction };
      let d: Details;
      try {
        d = await provider.interactionDetails(req.raw, reply.raw);
        if (d.uid !== uid) throw new Error('interaction mismatch');
      } catch (e) {
        throwIfUnavailable(e);
        // The response must come back to the browser that started it (the interaction cookie).
        return upstreamRefused(reply, new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'this sign-in response belongs to another browser or an expired sign-in'), req.ip);
      }
      let user;
      try {
        const identity = await upstream.login.finish(transaction, new URL(req.url, upstream.baseUrl()));
        user = await linkedUser(store, upstream.configs, identity);
        events.emit({ class: 'authentication', activity: 'upstream.login', outcome: 'success', message: `${user.username} signed in with ${identity.provider}`, actor: { userId: user.id }, src: { ip: req.ip }, data: { provider: identity.provider } });
      } catch (e) {
        return upstreamRefused(reply, e, req.ip, transaction.provider);
      }
      reply.hijack();
      await provider.interactionFinished(req.raw, reply.raw, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
      return reply;
    });
  }

  /** An upstream sign-in that did not work: a security event and a page that says why, and nothing else. */
  function upstreamRefused(reply: FastifyReply, e: unknown, ip: string, via?: string): FastifyReply {
    const err = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: e });
    events.emit({ class: 'authentication', activity: 'upstream.login', outcome: 'failure', severity: err.code === 'PAL_ERR_UNAUTHENTICATED' ? 'high' : undefined, code: err.code, message: err.message, src: { ip }, data: via ? { provider: via } : undefined });
    const message = err.code === 'PAL_ERR_INTERNAL' ? 'Something went wrong; start again from your device.' : err.message;
    return html(reply, err.status, messagePage('Sign-in did not work', message));
  }

  app.post<{ Params: { uid: string } }>('/interaction/:uid/confirm', async (req, reply) => {
    const d = await formInteraction(req, reply);
    if (!d) return reply;
    if (d.prompt.name !== 'consent' || !d.session?.accountId) throw new PalisadeError('PAL_ERR_VALIDATION', 'nothing to approve');
    const clientId = String(d.params.client_id);
    const grant = d.grantId ? await provider.Grant.find(d.grantId) : new provider.Grant({ accountId: d.session.accountId, clientId });
    if (!grant) throw new PalisadeError('PAL_ERR_NOT_FOUND', 'the grant no longer exists');
    const missing = d.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(resource, scopes.join(' '));
    const grantId = await grant.save();
    events.emit({ class: 'authorization', activity: 'oauth.consent', outcome: 'success', message: `${clientId} approved`, actor: { userId: d.session.accountId, clientId }, src: { ip: req.ip } });
    reply.hijack();
    await provider.interactionFinished(req.raw, reply.raw, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return reply;
  });

  app.post<{ Params: { uid: string } }>('/interaction/:uid/abort', async (req, reply) => {
    const d = await formInteraction(req, reply);
    if (!d) return reply;
    events.emit({ class: 'authorization', activity: 'oauth.consent', outcome: 'failure', code: 'access_denied', message: 'the user denied access', src: { ip: req.ip } });
    reply.hijack();
    await provider.interactionFinished(req.raw, reply.raw, { error: 'access_denied', error_description: 'the user denied access' }, { mergeWithLastSubmission: false });
    return reply;
  });
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/** "1 minute", "12 minutes", "40 seconds". */
function waitText(ms: number): string {
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s} second${s === 1 ? '' : 's'}`;
  const m = Math.ceil(s / 60);
  return `${m} minute${m === 1 ? '' : 's'}`;
}

/** Rethrows as PAL_ERR_UNAVAILABLE if a store could not be reached (ours, or oidc-provider's wrapping of it in adapter.ts). */
function throwIfUnavailable(e: unknown): void {
  if ((e as { code?: unknown } | null)?.code === 'PAL_ERR_UNAVAILABLE') throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'a store is unreachable; try again shortly', { internal: e });
}

/**
 * The account linked to an upstream identity; on a first sign-in, a new `user` account if the
 * provider's policy allows sign-up (see `UpstreamProviderConfig.allowSignUp`). Never an admin.
 */
async function linkedUser(store: DurableStore, configs: readonly UpstreamProviderConfig[], identity: UpstreamIdentity) {
  const existing = await store.users.byIdentity(identity.provider, identity.subject);
  if (existing) return existing;
  const config = configs.find((c) => c.id === identity.provider);
  const signUp = config?.allowSignUp ?? (config?.allowedEmailDomains !== undefined);
  if (!signUp) throw new PalisadeError('PAL_ERR_FORBIDDEN', `no Palisade account is linked to this ${config?.name ?? identity.provider} account; ask an administrator`);
  const createdAt = new Date().toISOString();
  const base = { id: newUserId(), passwordHash: '', role: 'user' as const, createdAt };
  const link = { provider: identity.provider, subject: identity.subject, email: identity.email };
  // A readable name when it is free (`github:ada@example.com`); the subject otherwise.
  const readable = `${identity.provider}:${identity.email ?? identity.username ?? identity.subject}`.slice(0, 200);
  if (!(await store.users.byUsername(readable))) {
    try {
      return (await store.users.createLinked({ ...base, username: readable }, link)).user;
    } catch {
      // The readable name was taken meanwhile: fall through to the subject.
    }
  }
  return (await store.users.createLinked({ ...base, username: `${identity.provider}:${identity.subject}` }, link)).user;
}

async function interactionOf(provider: Provider, req: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply): Promise<Details | undefined> {
  try {
    const d = await provider.interactionDetails(req.raw, reply.raw);
    if (d.uid !== req.params.uid) throw new Error('uid mismatch');
    return d;
  } catch (e) {
    // A store that cannot be reached is not an expired sign-in: 503 (retry), not "start again".
    throwIfUnavailable(e);
    html(reply, 400, messagePage('Sign-in expired', 'This sign-in request is no longer valid. Start again from your device.'));
    return undefined;
  }
}

function clientName(clientId: string): string {
  return FIRST_PARTY_CLIENTS[clientId]?.name ?? clientId;
}

function requestedScopes(d: Details): string[] {
  return String(d.params.scope ?? '').split(' ').filter(Boolean);
}
