/**
 * @module auth/sessions — the session manager. A session is one sign-in of one person on one app
 * (the extension, the CLI): an oidc-provider *grant*. It is created when the person approves the
 * app (device or code flow) and refreshed at the token endpoint (refresh tokens rotate; a replayed
 * one revokes the grant); this module validates, lists and revokes.
 *
 * Access tokens are JWTs checked without a round trip, so a revoked session must be refused some
 * other way: every access token carries its session id (`gid`); on a token's first use on a node
 * the session is looked up (it must still exist), and on every use the id is checked against the
 * revocation list, which the hot store mirrors on every node. Revoking also tells every node, whose
 * gateway closes that session's WebSockets with 4410 at once.
 */
import { PalisadeError } from '@palisade/protocol';
import type { OidcRepo } from '../store/types.ts';
import type { Revocations } from '../hot/types.ts';
import type { SecurityEvents } from '../siem/events.ts';
import { FIRST_PARTY_CLIENTS } from './provider.ts';

/** A session as its owner sees it. */
export interface SessionView {
  id: string;
  clientId: string;
  clientName: string;
  createdAt: string;
  expiresAt?: string | undefined;
}

export interface SessionManager {
  /** Whether the session exists and is not revoked (looked up in the store). */
  validate(sessionId: string): Promise<boolean>;
  /** Whether the session is revoked, from this node's mirror (no round trip). */
  isRevoked(sessionId: string): boolean;
  /**
   * Refuses the session's access tokens on every node, for as long as one may live. For a grant the
   * authorization server has already deleted (code or refresh-token reuse); `revoke` does both.
   */
  markRevoked(sessionId: string): Promise<void>;
  /** The user's live sessions, oldest first. */
  list(userId: string): Promise<SessionView[]>;
  /** Revokes one of the user's sessions; false if the user has no such session. */
  revoke(userId: string, sessionId: string, by?: { ip?: string | undefined }): Promise<boolean>;
  /** Revokes every session of the user; returns how many. */
  revokeAll(userId: string, by?: { ip?: string | undefined }): Promise<number>;
  /** Called on this node for every revoked session, from any node. */
  onRevoke(listener: (sessionId: string) => void): () => void;
}

export interface SessionManagerOptions {
  records: OidcRepo;
  revocations: Revocations;
  events: SecurityEvents;
  /** Longest access-token lifetime, s: a revocation is remembered this long (plus a minute). */
  accessTokenTtl: number;
}

const GRANT = 'Grant';
const iso = (epochS: unknown) => (typeof epochS === 'number' ? new Date(epochS * 1000).toISOString() : undefined);

export function createSessionManager({ records, revocations, events, accessTokenTtl }: SessionManagerOptions): SessionManager {
  const markRevoked = (sessionId: string) => revocations.revoke(sessionId, (accessTokenTtl + 60) * 1000);
  const drop = async (userId: string, sessionId: string, ip: string | undefined): Promise<void> => {
    // Mark revoked first: from here no access token of the session is accepted anywhere.
    await markRevoked(sessionId);
    await records.revokeByGrantId(sessionId);
    await records.destroy(GRANT, sessionId);
    events.emit({ class: 'authentication', activity: 'session.revoke', outcome: 'success', message: 'session revoked', actor: { userId }, src: { ip }, data: { sessionId } });
  };
  const owned = async (userId: string, sessionId: string): Promise<boolean> => {
    if (typeof sessionId !== 'string' || sessionId.length === 0 || sessionId.length > 128) return false;
    const r = await records.find(GRANT, sessionId);
    return r !== undefined && r.payload.accountId === userId;
  };
  const self: SessionManager = {
    async validate(sessionId) {
      if (revocations.has(sessionId)) return false;
      return (await records.find(GRANT, sessionId)) !== undefined;
    },
    isRevoked: (sessionId) => revocations.has(sessionId),
    markRevoked,
    async list(userId) {
      const grants = await records.listByAccount(GRANT, userId);
      return grants
        .filter(({ id }) => !revocations.has(id))
        .map(({ id, record }) => {
          const clientId = String(record.payload.clientId ?? '');
          return { id, clientId, clientName: FIRST_PARTY_CLIENTS[clientId]?.name ?? clientId, createdAt: iso(record.payload.iat) ?? '', expiresAt: iso(record.expiresAt) };
        })
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
    },
    async revoke(userId, sessionId, by) {
      if (!(await owned(userId, sessionId))) return false;
      await drop(userId, sessionId, by?.ip);
      return true;
    },
    async revokeAll(userId, by) {
      const all = await records.listByAccount(GRANT, userId);
      for (const { id } of all) await drop(userId, id, by?.ip);
      return all.length;
    },
    onRevoke: (listener) => revocations.onRevoke(listener),
  };
  return self;
}

/** Throws PAL_ERR_SESSION_REVOKED if the session is revoked. */
export function assertSessionLive(sessions: SessionManager, sessionId: string | undefined): void {
  if (sessionId !== undefined && sessions.isRevoked(sessionId)) throw new PalisadeError('PAL_ERR_SESSION_REVOKED', 'this session was revoked; sign in again');
}
