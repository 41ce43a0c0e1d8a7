/**
 * @module edge/internal — the internal listener: metrics, health and admin operations for
 * operators, monitoring and other nodes, on its own port, over mutual TLS only. A client without a
 * certificate, or with one from another CA, fails the TLS handshake; the certificate's identity
 * (its CN) and role (a SAN URI `urn:palisade:role:admin|metrics|node`, see `palisade certs client`)
 * decide what it may call; anything else is 403 problem details and a security event.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { PalisadeError } from '@palisade/protocol';
import type { Logger } from 'pino';
import type { KeyView } from '../auth/keys.ts';
import type { NodeMetrics } from '../metrics.ts';
import type { SecurityEvents } from '../siem/events.ts';
import { tlsServerOptions } from '../tls/options.ts';
import { subjectOf } from '../tls/check.ts';

/** The roles a client certificate can carry. */
export const INTERNAL_ROLES = ['admin', 'metrics', 'node'] as const;
export type InternalRole = (typeof INTERNAL_ROLES)[number];
/** A client certificate names its role with this SAN URI prefix: `urn:palisade:role:admin`. */
export const ROLE_URI_PREFIX = 'urn:palisade:role:';

/** Who called: the certificate's CN and its one role (undefined when it names none, or several). */
export interface InternalCaller {
  name: string;
  role: InternalRole | undefined;
  /** Why there is no role, when there is none. */
  roleProblem?: string | undefined;
  serial: string;
}

export interface InternalListenerOptions {
  /** Interface. Default `127.0.0.1`. */
  host?: string | undefined;
  port: number;
  /** The server's own key and certificate chain (PEM); the same as the public listener's. */
  key: string;
  cert: string;
  /** The CA (PEM) that signs client certificates; only its certificates are accepted. */
  ca: string;
  metrics: NodeMetrics;
  events: SecurityEvents;
  log: Logger;
  /** Rotates the token-signing keys (the node's `rotateKeys()`). */
  rotateKeys(): Promise<KeyView[]>;
  /** The signing keys as listed by the admin API. */
  keyView(): KeyView[];
  /** The node's health document. */
  health(): Record<string, unknown> | Promise<Record<string, unknown>>;
}

export interface InternalListener {
  /** `https://host:port`. */
  readonly url: string;
  readonly server: Server;
  /** Installs a reloaded server key and certificate (the client CA stays). */
  setSecureContext(material: { key: string; cert: string }): void;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, caller: InternalCaller, o: InternalListenerOptions) => Promise<{ status: number; type: string; body: string }>;

const json = (value: unknown, status = 200) => ({ status, type: 'application/json', body: JSON.stringify(value) });

/** Every route, who may call it, and what it does. Reading this table tells every rule. */
const ROUTES: ReadonlyArray<{ method: string; path: string; roles: readonly InternalRole[]; handle: Handler }> = [
  {
    method: 'GET', path: '/metrics', roles: ['metrics', 'admin'],
    handle: async (_req, _c, o) => ({ status: 200, type: o.metrics.registry.contentType, body: await o.metrics.registry.metrics() }),
  },
  {
    method: 'GET', path: '/internal/v1/health', roles: ['admin', 'metrics', 'node'],
    handle: async (_req, _c, o) => json(await o.health()),
  },
  {
    method: 'GET', path: '/internal/v1/keys', roles: ['admin'],
    handle: async (_req, _c, o) => json({ keys: o.keyView() }),
  },
  {
    method: 'POST', path: '/internal/v1/keys/rotate', roles: ['admin'],
    handle: async (_req, caller, o) => {
      const keys = await o.rotateKeys();
      o.events.emit({ class: 'account_change', activity: 'keys.rotate', outcome: 'success', message: `signing keys rotated through the internal listener by ${caller.name}`, data: { via: 'internal', certificate: caller.name, serial: caller.serial } });
      return json({ keys });
    },
  },
];

/** The caller named by a verified client certificate. */
export function callerOf(cert: X509Certificate): InternalCaller {
  const name = /^CN=(.*)$/m.exec(cert.subject)?.[1] ?? subjectOf(cert);
  const uris = (cert.subjectAltName ?? '').split(', ').filter((e) => e.startsWith(`URI:${ROLE_URI_PREFIX}`)).map((e) => e.slice(`URI:${ROLE_URI_PREFIX}`.length));
  const roles = [...new Set(uris)];
  const base = { name, serial: cert.serialNumber };
  if (roles.length === 0) return { ...base, role: undefined, roleProblem: `the client certificate names no role (a SAN URI ${ROLE_URI_PREFIX}<role>)` };
  if (roles.length > 1) return { ...base, role: undefined, roleProblem: `the client certificate names several roles (${roles.join(', ')})` };
  const role = roles[0]!;
  if (!(INTERNAL_ROLES as readonly string[]).includes(role)) return { ...base, role: undefined, roleProblem: `unknown role "${role}" in the client certificate` };
  return { ...base, role: role as InternalRole };
}

/** Starts the internal listener; resolves once it listens. */
export async function startInternalListener(o: InternalListenerOptions): Promise<InternalListener> {
  const contextOptions = (m: { key: string; cert: string }) => ({ ...tlsServerOptions(m, '1.3'), ca: o.ca });
  const server = createServer({ ...contextOptions(o), requestCert: true, rejectUnauthorized: true }, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      o.log.error({ err: e }, 'internal listener: request failed');
      if (!res.headersSent) send(res, problem(new PalisadeError('PAL_ERR_INTERNAL', 'internal error')));
      else res.destroy();
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;

  // Refused handshakes: no certificate, a certificate from another CA, an expired one, TLS < 1.3.
  // Node checks the client's chain after the handshake and drops the socket; its verdict stays in
  // `authorizationError` (e.g. UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNSUPPORTED_CERTIFICATE_PURPOSE).
  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    const reason = String(socket.authorizationError ?? err.code ?? err.message);
    o.events.emit({
      class: 'network_activity', activity: 'internal.tls.refused', outcome: 'failure', severity: 'medium', code: 'PAL_ERR_UNAUTHENTICATED',
      message: `internal listener: TLS handshake refused (${reason})`,
      src: { ip: socket.remoteAddress }, data: { reason },
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const socket = req.socket as TLSSocket;
    const cert = socket.getPeerX509Certificate();
    // Unreachable with requestCert + rejectUnauthorized; checked again, never assumed.
    if (!socket.authorized || !cert) {
      send(res, problem(new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'a client certificate from the internal CA is required')));
      return;
    }
    const caller = callerOf(cert);
    const path = (req.url ?? '/').split('?')[0]!;
    const route = ROUTES.find((r) => r.path === path);
    if (!route) {
      send(res, problem(new PalisadeError('PAL_ERR_NOT_FOUND', 'no such route')));
      return;
    }
    if (req.method !== route.method) {
      res.setHeader('allow', route.method);
      send(res, { ...problem(new PalisadeError('PAL_ERR_VALIDATION', `${path} takes ${route.method}, not ${req.method ?? '?'}`)), status: 405 });
      return;
    }
    if (!caller.role || !route.roles.includes(caller.role)) {
      const message = caller.role ? `role "${caller.role}" may not call ${route.method} ${path} (allowed: ${route.roles.join(', ')})` : (caller.roleProblem ?? 'no role');
      o.events.emit({
        class: 'authorization', activity: 'internal.request', outcome: 'failure', code: 'PAL_ERR_FORBIDDEN', message: `internal listener: ${message}`,
        src: { ip: socket.remoteAddress }, data: { certificate: caller.name, role: caller.role, serial: caller.serial, method: route.method, path },
      });
      send(res, problem(new PalisadeError('PAL_ERR_FORBIDDEN', message)));
      return;
    }
    if (hasBody(req)) {
      send(res, problem(new PalisadeError('PAL_ERR_VALIDATION', 'internal routes take no request body')));
      return;
    }
    send(res, await route.handle(req, caller, o));
  }

  server.listen(o.port, o.host ?? '127.0.0.1');
  // Rejects on 'error' (port in use, bad address).
  await once(server, 'listening');
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `https://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`,
    server,
    setSecureContext(material) {
      server.setSecureContext(contextOptions(material));
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function problem(e: PalisadeError): { status: number; type: string; body: string } {
  return { status: e.status, type: 'application/problem+json', body: JSON.stringify(e.toProblem()) };
}

function send(res: ServerResponse, r: { status: number; type: string; body: string }): void {
  res.writeHead(r.status, { 'content-type': r.type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(r.body) });
  res.end(r.body);
}
