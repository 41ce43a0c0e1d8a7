/**
 * @module auth/interactions — the pages a person uses: the one-time admin setup, and sign-in +
 * consent inside an OAuth interaction (reached from the device-code page).
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
import { consentPage, loginPage, messagePage, setupPage, STYLESHEET } from './pages.ts';
import { FIRST_PARTY_CLIENTS } from './provider.ts';

const SETUP_KEY = 'setup_token';
const SETUP_TTL_MS = 24 * 3600 * 1000;
const USERNAME = /^[A-Za-z0-9._-]{3,64}$/;

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
const html = (reply: FastifyReply, code: number, body: string) => reply.code(code).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body);

export interface InteractionOptions {
  provider: Provider;
  store: DurableStore;
  events: SecurityEvents;
  /** Password-guessing limits (hot-store counters). */
  loginGuard: LoginGuard;
}

/** Registers `/setup`, `/interaction/:uid…` and the stylesheet. */
export async function interactionRoutes(app: FastifyInstance, { provider, store, events, loginGuard }: InteractionOptions): Promise<void> {
  app.get('/assets/palisade.css', async (_req, reply) => reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=3600').send(STYLESHEET));

  app.get<{ Querystring: { token?: string } }>('/setup', async (req, reply) => {
    if (!(await setupTokenValid(store, req.query.token))) return html(reply, 404, messagePage('Setup link not valid', 'This setup link is used, expired or wrong. Restart the server with no account to get a new one.'));
    return html(reply, 200, setupPage(req.query.token!));
  });

  app.post<{ Body: Form }>('/setup', async (req, reply) => {
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
    const id = `u_${randomBytes(12).toString('base64url')}`;
    await store.users.create({ id, username: username!, passwordHash: await hashPassword(password!), role: 'admin', createdAt: new Date().toISOString() });
    events.emit({ class: 'account_change', activity: 'admin.create', outcome: 'success', message: `admin account ${username} created`, actor: { userId: id }, src: { ip: req.ip } });
    return html(reply, 201, messagePage('Admin account created', `Signed up as ${username}. You can now approve devices and create API clients (palisade login, then palisade clients create).`));
  });

  app.get<{ Params: { uid: string } }>('/interaction/:uid', async (req, reply) => {
    const d = await interactionOf(provider, req, reply);
    if (!d) return reply;
    const client = clientName(String(d.params.client_id));
    if (d.prompt.name === 'login') return html(reply, 200, loginPage(d.uid, client));
    const accountId = d.session?.accountId;
    const user = accountId ? await store.users.byId(accountId) : undefined;
    return html(reply, 200, consentPage(d.uid, client, user?.username ?? 'unknown', requestedScopes(d)));
  });

  app.post<{ Params: { uid: string }; Body: Form }>('/interaction/:uid/login', async (req, reply) => {
    const d = await interactionOf(provider, req, reply);
    if (!d) return reply;
    const { username = '', password = '' } = req.body ?? {};
    const client = clientName(String(d.params.client_id));
    const attempt = await loginGuard.begin(username, req.ip);
    if (!attempt.allowed) {
      events.emit({ class: 'authentication', activity: 'password.login', outcome: 'failure', code: 'PAL_ERR_RATE_LIMITED', message: 'sign-in refused while locked', src: { ip: req.ip } });
      reply.header('retry-after', String(Math.ceil(attempt.retryAfterMs / 1000)));
      return html(reply, 429, loginPage(d.uid, client, `Too many failed sign-ins. Try again in ${Math.ceil(attempt.retryAfterMs / 60_000)} minutes.`));
    }
    if (attempt.delayMs > 0) await sleep(attempt.delayMs);
    const user = username.length <= 64 ? await store.users.byUsername(username) : undefined;
    const ok = await verifyPassword(user?.passwordHash, password.slice(0, 256));
    if (!ok || !user) {
      const locked = await attempt.fail();
      events.emit({ class: 'authentication', activity: 'password.login', outcome: 'failure', code: 'PAL_ERR_UNAUTHENTICATED', message: 'wrong username or password', src: { ip: req.ip } });
      if (locked) events.emit({ class: 'authentication', activity: 'password.lock', outcome: 'failure', severity: 'high', code: 'PAL_ERR_RATE_LIMITED', message: 'too many failed sign-ins: locked for a while', src: { ip: req.ip } });
      return html(reply, 401, loginPage(d.uid, client, 'Wrong username or password.'));
    }
    await attempt.succeed();
    events.emit({ class: 'authentication', activity: 'password.login', outcome: 'success', message: `${user.username} signed in`, actor: { userId: user.id }, src: { ip: req.ip } });
    reply.hijack();
    await provider.interactionFinished(req.raw, reply.raw, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
    return reply;
  });

  app.post<{ Params: { uid: string } }>('/interaction/:uid/confirm', async (req, reply) => {
    const d = await interactionOf(provider, req, reply);
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
    const d = await interactionOf(provider, req, reply);
    if (!d) return reply;
    events.emit({ class: 'authorization', activity: 'oauth.consent', outcome: 'failure', code: 'access_denied', message: 'the user denied access', src: { ip: req.ip } });
    reply.hijack();
    await provider.interactionFinished(req.raw, reply.raw, { error: 'access_denied', error_description: 'the user denied access' }, { mergeWithLastSubmission: false });
    return reply;
  });
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

async function interactionOf(provider: Provider, req: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply): Promise<Details | undefined> {
  try {
    const d = await provider.interactionDetails(req.raw, reply.raw);
    if (d.uid !== req.params.uid) throw new Error('uid mismatch');
    return d;
  } catch {
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
