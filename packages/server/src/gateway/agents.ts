/**
 * @module gateway/agents — the agent WebSocket endpoint (`/ws/agent`).
 *
 * Upgrade pipeline, in order (each a named step below):
 *   checkPath → checkDraining (503 while the node shuts down) → checkMemory (503 while the node sheds)
 *   → checkOrigin → checkSubprotocol → rateLimitIp
 *   → reserveConnection (node, IP caps)
 *   → authenticate (bearer subprotocol, verified before the upgrade) → authorize (scope `agent`)
 *   → rateLimitPrincipal → reserveUser (per-user cap) → upgrade (`maxPayload` bounded)
 * then on the socket: auth frame if no bearer was offered (within `authTimeoutMs`; the per-user cap
 * is then checked) → `hello` (within `authTimeoutMs`; closed 1013 while the node sheds) → frames,
 * each within the connection's rate (token bucket), parsed and validated → heartbeat (a missed pong
 * drops the peer) → closed when the token expires unless a fresh one came in an `auth` frame; a
 * peer whose unsent data passes `maxSendBufferBytes` is closed as a slow consumer.
 *
 * Shutting down: `drain()` refuses new upgrades (503 `PAL_ERR_UNAVAILABLE`, `Retry-After`) and
 * closes with 1012 a connection that says `hello` now, while open agents go on (their results are
 * still taken); `close()` then closes every connection with 1012 ("service restart": reconnect, to
 * another node or to this one restarted) and resolves once each is closed and released.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import {
  ERROR_CODES, PalisadeError, clip, PROTOCOL_VERSION, WS_BEARER_PREFIX, WS_SUBPROTOCOL, parse, parseOrigin,
  type AgentFrame, type ErrorCode, type ServerFrame,
} from '@palisade/protocol';
import type { ServerConfig } from '../config.ts';
import { originAllowed } from '../config.ts';
import type { Principal, TokenVerifier } from '../auth/tokens.ts';
import type { DurableStore } from '../store/types.ts';
import type { SessionManager } from '../auth/sessions.ts';
import { TALLY_SHARES_TTL_MS, type Presence, type Tallies, type TallyResult } from '../hot/types.ts';
import type { SecurityEvents } from '../siem/events.ts';
import type { TaskService } from '../tasks/service.ts';
import { agentFrame } from '../edge/validators.ts';
import type { AgentHandle, AgentRegistry } from './registry.ts';
import type { ClientIpResolver } from '../edge/client-ip.ts';
import { rateLimitError, type RateLimiter } from '../edge/rate-limit.ts';
import { jsonDepthExceeds } from '../edge/request-guard.ts';
import { wholeSeconds } from '../timers.ts';
import { bump } from '../counts.ts';
import { OVERLOAD_RETRY_AFTER_S, type MemoryGuard } from '../edge/memory-guard.ts';

export const AGENT_PATH = '/ws/agent';
/** WebSocket close code of a node shutting down (RFC 6455 registry: "Service Restart"): the agent reconnects with backoff. */
export const SERVICE_RESTART_CLOSE = 1012;
/** `Retry-After` (seconds) of an upgrade refused while the node drains: soon, and the balancer sends it to another node. */
export const DRAINING_RETRY_AFTER_S = 1;
/** How long `close()` waits for peers to answer the close frame before it cuts them, ms (ws itself would wait 30 s). */
export const CLOSE_WAIT_MS = 2000;
/** Frames of one connection waiting to be handled; past this the agent is flooding and is closed. */
export const MAX_PENDING_FRAMES = 256;

export interface GatewayOptions {
  config: ServerConfig;
  verifier: TokenVerifier;
  sessions: SessionManager;
  /** Where agents are connected, for every node to see (hot store). */
  presence: Presence;
  /** This node's name in presence records and connection tallies. */
  nodeId: string;
  /** Connections per user and per IP across the cluster (hot store). */
  tallies: Tallies;
  store: DurableStore;
  tasks: TaskService;
  agents: AgentRegistry;
  events: SecurityEvents;
  log: Logger;
  /** Upgrade rates per IP and per principal (class `ws`). */
  limiter: RateLimiter;
  /** The client address, behind trusted proxies too. */
  ips: ClientIpResolver;
  /** Whether the node sheds new work for memory (edge/memory-guard.ts): new agents are refused. */
  memory: Pick<MemoryGuard, 'shedding' | 'refuse'>;
}

interface UpgradeContext {
  req: IncomingMessage;
  ip: string;
  origin?: string | undefined;
  token?: string | undefined;
  principal?: Principal;
  /** The caps this upgrade holds (released on refusal or when the connection closes). */
  slot?: ConnectionSlot;
  retryAfter?: [string, string][];
}

type UpgradeStep = (ctx: UpgradeContext, o: GatewayOptions) => void | Promise<void>;

/** What one gateway's connections share: whether the node drains, and cleanups still under way (awaited by `close()`). */
interface GatewayState {
  draining: boolean;
  cleanups: Set<Promise<unknown>>;
}

/** The agent endpoint attached to a server. */
export interface AgentGateway {
  wss: WebSocketServer;
  caps: ConnectionCaps;
  /**
   * The node is shutting down: new upgrades get 503 `PAL_ERR_UNAVAILABLE` with `Retry-After`, and a
   * connection that says `hello` from now on is closed with 1012. Open agents go on. Idempotent.
   */
  drain(): void;
  /**
   * Refuses new upgrades, closes every connection with 1012 (cut after {@link CLOSE_WAIT_MS} if the
   * peer does not answer) and resolves once all are closed and their cleanup (caps, presence, the
   * task service's `agentGone`) has run.
   */
  close(): Promise<void>;
}

/** How often a node writes its connection shares whole to the hot store (renewing them, mending what a failover or restart lost), ms. */
export const TALLY_SYNC_MS = TALLY_SHARES_TTL_MS / 5;
/** How soon the shares are written whole again after a write whose outcome is unknown (the store unreachable, a reply lost), ms. */
export const TALLY_RESYNC_MS = 1000;

/**
 * Open connections: on this node in all (`maxConnections`, a bound of this process), and per client
 * IP and per user across the cluster (the hot store's tallies: with Redis every node counts the same
 * connections; a node that died stops counting once its beat lapses). A connection reserves its
 * place before the upgrade (so parallel upgrades, on any node, cannot pass a cap) and gives it back
 * when it closes.
 *
 * This node's bookkeeping (`#held`) is the truth of its share: it is written whole to the store every
 * {@link TALLY_SYNC_MS}, and within {@link TALLY_RESYNC_MS} of any write whose outcome is unknown
 * (an acquire that timed out may have been applied; a give-back the store refused was not), so a
 * lost reply, a failover that lost the latest writes or a store restarted empty is mended, not kept.
 */
export class ConnectionCaps {
  /** Places this node holds, per tally key (`ip:…`, `user:…`). */
  readonly #held = new Map<string, number>();
  /** Acquires sent and not yet answered, per tally key. */
  readonly #pending = new Map<string, number>();
  #total = 0;
  /** Bumped by every write whose outcome is unknown; a whole write made since the last bump mends them. */
  #doubts = 0;
  #synced = true;
  #syncing = false;
  #timer: NodeJS.Timeout | undefined;
  #due = Infinity;
  #stopped = false;
  readonly #o: { maxConnections: number; maxConnectionsPerIp: number; maxConnectionsPerUser: number };
  readonly #tallies: Tallies;
  readonly #nodeId: string;
  readonly #syncMs: number;
  readonly #resyncMs: number;
  constructor(
    o: { maxConnections: number; maxConnectionsPerIp: number; maxConnectionsPerUser: number },
    tallies: Tallies, nodeId: string, timing: { syncMs?: number; resyncMs?: number } = {},
  ) {
    this.#o = o;
    this.#tallies = tallies;
    this.#nodeId = nodeId;
    this.#syncMs = timing.syncMs ?? TALLY_SYNC_MS;
    this.#resyncMs = timing.resyncMs ?? TALLY_RESYNC_MS;
    // At once: a node started again under the same id drops what its previous run left.
    this.#arm(0);
  }
  get total(): number {
    return this.#total;
  }
  /** Keys this node holds a place under, by IP and by user, and whether the store has its share as written (for tests and metrics). */
  get tracked(): { ips: number; users: number; synced: boolean } {
    let ips = 0;
    for (const key of this.#held.keys()) if (key.startsWith('ip:')) ips++;
    return { ips, users: this.#held.size - ips, synced: this.#synced };
  }
  async reserve(ip: string): Promise<ConnectionSlot> {
    if (this.#total >= this.#o.maxConnections) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'this node holds as many connections as it may; try again or another node');
    this.#total++;
    try {
      await this.#take(`ip:${ip}`, this.#o.maxConnectionsPerIp, 'from one address');
    } catch (e) {
      this.#total--;
      throw e;
    }
    // Scalars, not an array of keys: this closure lives as long as the connection (bench/connections.bench.ts).
    let userId: string | undefined;
    let adding = false;
    let released = false;
    return {
      addUser: async (id: string) => {
        if (userId !== undefined || adding || released) return;
        adding = true;
        try {
          await this.#take(`user:${id}`, this.#o.maxConnectionsPerUser, 'of one user');
        } finally {
          adding = false;
        }
        // Closed while the store answered: the place just taken goes back at once.
        if (released) this.#giveBack([`user:${id}`]);
        else userId = id;
      },
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        this.#giveBack(userId === undefined ? [`ip:${ip}`] : [`ip:${ip}`, `user:${userId}`]);
      },
    };
  }
  /** Stops the writes (the node is closing; what it held lapses with its beat). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #take(key: string, limit: number, what: string): Promise<void> {
    bump(this.#pending, key, 1);
    let r: TallyResult;
    try {
      r = await this.#tallies.acquire(this.#nodeId, [{ key, limit }]);
    } catch (e) {
      this.#doubt();
      throw e;
    } finally {
      bump(this.#pending, key, -1);
    }
    if (!r.allowed) throw new PalisadeError('PAL_ERR_TOO_MANY_CONNECTIONS', `more than ${limit} connections ${what}`);
    bump(this.#held, key, 1);
  }

  #giveBack(keys: readonly string[]): void {
    for (const key of keys) bump(this.#held, key, -1);
    this.#tallies.release(this.#nodeId, keys).catch(() => this.#doubt());
  }

  #doubt(): void {
    this.#doubts++;
    this.#synced = false;
    this.#arm(this.#resyncMs);
  }

  /** The next whole write in `ms`, unless one is due sooner. */
  #arm(ms: number): void {
    if (this.#stopped || Date.now() + ms >= this.#due) return;
    clearTimeout(this.#timer);
    this.#due = Date.now() + ms;
    this.#timer = setTimeout(() => void this.#sync(), ms).unref();
  }

  async #sync(): Promise<void> {
    this.#due = Infinity;
    if (this.#syncing) return this.#arm(this.#resyncMs);
    this.#syncing = true;
    const doubts = this.#doubts;
    // Acquires in flight were sent before this write: those the store allows are in its share
    // already, so they are counted here too; one refused makes this write one high (written again soon).
    const shares = new Map(this.#held);
    for (const [key, n] of this.#pending) bump(shares, key, n);
    let ok = false;
    try {
      await this.#tallies.replace(this.#nodeId, shares);
      ok = true;
    } catch {
      // unreachable: written again soon
    } finally {
      this.#syncing = false;
    }
    const exact = ok && this.#pending.size === 0 && doubts === this.#doubts;
    if (ok && doubts === this.#doubts) this.#synced = true;
    this.#arm(exact ? this.#syncMs : this.#resyncMs);
  }
}

export interface ConnectionSlot {
  /** Counts the connection against a user's cap (once); rejects past it. */
  addUser(userId: string): Promise<void>;
  /** Gives every place back (idempotent). */
  release(): void;
}

const principalKey = (p: Principal) => (p.kind === 'client' ? `client:${p.clientId}` : `user:${p.userId}`);

// ── upgrade pipeline steps ─────────────────────────────────────────────────────────────────
const checkPath: UpgradeStep = ({ req }) => {
  const path = (req.url ?? '').split('?')[0];
  if (path !== AGENT_PATH) throw new PalisadeError('PAL_ERR_NOT_FOUND', 'no WebSocket endpoint here');
  if ((req.url ?? '').includes('?')) throw new PalisadeError('PAL_ERR_VALIDATION', 'the WebSocket URL takes no query string; present the token in Sec-WebSocket-Protocol');
};

const checkMemory: UpgradeStep = (ctx, { memory }) => {
  if (!memory.shedding) return;
  ctx.retryAfter = [['retry-after', String(OVERLOAD_RETRY_AFTER_S)]];
  throw memory.refuse('agent');
};

const checkOrigin: UpgradeStep = (ctx, { config }) => {
  const origin = ctx.req.headers.origin;
  ctx.origin = origin;
  // Non-browser agents send no Origin; a browser always does, and it must be on the allow-list.
  if (origin !== undefined && !originAllowed(origin, config.wsOrigins)) {
    throw new PalisadeError('PAL_ERR_ORIGIN_REFUSED', `Origin ${clip(origin)} may not open agent connections`);
  }
};

const checkSubprotocol: UpgradeStep = (ctx) => {
  const offered = (ctx.req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (!offered.includes(WS_SUBPROTOCOL)) throw new PalisadeError('PAL_ERR_PROTOCOL_VERSION', `offer the "${WS_SUBPROTOCOL}" subprotocol`);
  const bearer = offered.find((p) => p.startsWith(WS_BEARER_PREFIX));
  if (bearer) ctx.token = bearer.slice(WS_BEARER_PREFIX.length);
};

const rateLimitIp: UpgradeStep = async (ctx, { limiter }) => {
  const v = await limiter.check('ws', { ip: ctx.ip });
  if (!v.allowed) {
    ctx.retryAfter = v.headers;
    throw rateLimitError(v);
  }
};

const rateLimitPrincipal: UpgradeStep = async (ctx, { limiter }) => {
  if (!ctx.principal) return;
  const v = await limiter.check('ws', { ip: ctx.ip, principal: principalKey(ctx.principal), principalOnly: true });
  if (!v.allowed) {
    ctx.retryAfter = v.headers;
    throw rateLimitError(v);
  }
};

const authenticate: UpgradeStep = async (ctx, { verifier }) => {
  if (ctx.token !== undefined) ctx.principal = await verifier.verify(ctx.token);
};

const authorize: UpgradeStep = (ctx) => {
  if (ctx.principal && !ctx.principal.scopes.has('agent')) throw new PalisadeError('PAL_ERR_FORBIDDEN', 'agent connections need the "agent" scope');
};

type BoundStep = 'checkDraining' | 'reserveConnection' | 'reserveUser';

/** The visible pipeline every agent upgrade passes (`checkDraining` and the reservations need the gateway's state, so they are bound per gateway). */
export const UPGRADE_PIPELINE: readonly (readonly [string, UpgradeStep | BoundStep])[] = [
  ['checkPath', checkPath],
  ['checkDraining', 'checkDraining'],
  ['checkMemory', checkMemory],
  ['checkOrigin', checkOrigin],
  ['checkSubprotocol', checkSubprotocol],
  ['rateLimitIp', rateLimitIp],
  ['reserveConnection', 'reserveConnection'],
  ['authenticate', authenticate],
  ['authorize', authorize],
  ['rateLimitPrincipal', rateLimitPrincipal],
  ['reserveUser', 'reserveUser'],
];

/** Attaches the agent endpoint to `server`. */
export function attachAgentGateway(server: HttpServer, o: GatewayOptions): AgentGateway {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.config.maxFrameBytes,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  });

  // Connections by session, so revoking a session (on any node) closes its connections here at once.
  const bySession = new SessionIndex();
  const caps = new ConnectionCaps(o.config, o.tallies, o.nodeId);
  const state: GatewayState = { draining: false, cleanups: new Set() };
  const refuseWhileDraining = (ctx: UpgradeContext) => {
    ctx.retryAfter = [['retry-after', String(DRAINING_RETRY_AFTER_S)]];
    return new PalisadeError('PAL_ERR_UNAVAILABLE', 'this node is shutting down; connect again (another node will answer)');
  };
  const steps: Record<BoundStep, UpgradeStep> = {
    checkDraining: (ctx) => {
      if (state.draining) throw refuseWhileDraining(ctx);
    },
    reserveConnection: async (ctx) => {
      ctx.slot = await caps.reserve(ctx.ip);
    },
    reserveUser: async (ctx) => {
      if (ctx.principal) await ctx.slot!.addUser(ctx.principal.userId);
    },
  };
  const offRevoke = o.sessions.onRevoke((id) => {
    for (const c of bySession.take(id)) c.revoked();
  });

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const ctx: UpgradeContext = { req, ip: o.ips.of(req) };
    void (async () => {
      for (const [name, step] of UPGRADE_PIPELINE) {
        try {
          await (typeof step === 'string' ? steps[step] : step)(ctx, o);
        } catch (e) {
          ctx.slot?.release();
          const err = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: e });
          if (name !== 'checkPath') {
            o.events.emit({
              class: name === 'authenticate' || name === 'authorize' ? 'authentication' : 'network_activity',
              activity: `ws.upgrade.${name}`, outcome: 'failure', code: err.code, message: err.message,
              src: { ip: ctx.ip, origin: ctx.origin }, actor: { userId: ctx.principal?.userId, clientId: ctx.principal?.clientId },
            });
          }
          refuseUpgrade(socket, err, ctx.retryAfter);
          return;
        }
      }
      // The node began to drain while the pipeline ran (it awaits the rate limiter and the token check).
      if (state.draining) {
        ctx.slot?.release();
        refuseUpgrade(socket, refuseWhileDraining(ctx), ctx.retryAfter);
        return;
      }
      // The socket may have gone while the pipeline ran (its close event is past: ws would drop it
      // without a word), or go during the upgrade: either way its place is given back here.
      if (socket.destroyed) {
        ctx.slot?.release();
        return;
      }
      const slot = ctx.slot;
      const goneEarly = () => slot?.release();
      socket.once('close', goneEarly);
      wss.handleUpgrade(req, socket, head, (ws) => {
        socket.off('close', goneEarly);
        // Only what the connection needs is kept, not the request (its headers, the token): that
        // was kilobytes per idle connection (bench/connections.bench.ts).
        new AgentConnection(ws, { ip: ctx.ip, origin: ctx.origin, slot, principal: ctx.principal }, o, bySession, state).start();
      });
    })();
  };
  server.on('upgrade', onUpgrade);

  return {
    wss,
    caps,
    drain() {
      state.draining = true;
    },
    async close() {
      state.draining = true;
      offRevoke();
      server.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.close(SERVICE_RESTART_CLOSE, 'server restarting; reconnect');
      const closed = new Promise<void>((resolve) => wss.close(() => resolve()));
      const cut = setTimeout(() => {
        for (const ws of wss.clients) ws.terminate();
      }, CLOSE_WAIT_MS);
      await closed;
      clearTimeout(cut);
      await Promise.allSettled([...state.cleanups]);
      caps.stop();
    },
  };
}

/** Answers a refused upgrade with an HTTP status and a problem body, then closes the socket. */
function refuseUpgrade(socket: Duplex, err: PalisadeError, extra: readonly [string, string][] = []): void {
  const body = JSON.stringify(err.toProblem());
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[err.status as 400] ?? 'Error';
  const headers = [...extra, ...(err.status === 503 && extra.length === 0 ? [['retry-after', '1'] as const] : [])].map(([k, v]) => `${k}: ${v}\r\n`).join('');
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${err.status} ${reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n${headers}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }
  socket.destroy();
}

/** Open connections by session id. */
class SessionIndex {
  readonly #map = new Map<string, Set<AgentConnection>>();
  add(id: string, c: AgentConnection): void {
    let set = this.#map.get(id);
    if (!set) this.#map.set(id, (set = new Set()));
    set.add(c);
  }
  remove(id: string, c: AgentConnection): void {
    const set = this.#map.get(id);
    set?.delete(c);
    if (set?.size === 0) this.#map.delete(id);
  }
  take(id: string): AgentConnection[] {
    const set = this.#map.get(id);
    this.#map.delete(id);
    return [...(set ?? [])];
  }
}

/** What an upgraded connection keeps of its upgrade. */
interface ConnectionContext {
  readonly ip: string;
  readonly origin?: string | undefined;
  readonly slot?: ConnectionSlot | undefined;
  readonly principal?: Principal | undefined;
}

/** One agent connection, from upgrade to close. */
class AgentConnection {
  readonly #ws: WebSocket;
  readonly #ctx: ConnectionContext;
  readonly #o: GatewayOptions;
  #principal: Principal | undefined;
  #handle: AgentHandle | undefined;
  /** The authentication-and-hello deadline (cleared once the agent said hello) and the heartbeat. */
  #authTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #alive = true;
  #closed = false;
  /** Closing with an error: later frames are ignored. */
  #failed = false;
  /** Frames are handled one at a time, in order, so a task's accept, progress and result never race. */
  #chain: Promise<void> = Promise.resolve();
  #pending = 0;
  #expiry: NodeJS.Timeout | undefined;
  /** Token bucket of frames this connection may send: refilled at `wsMessageRate` per second up to `wsMessageBurst`. */
  #tokens: number;
  #refilledAt = Date.now();

  readonly #sessions: SessionIndex;
  readonly #state: GatewayState;

  constructor(ws: WebSocket, ctx: ConnectionContext, o: GatewayOptions, sessions: SessionIndex, state: GatewayState) {
    this.#ws = ws;
    this.#ctx = ctx;
    this.#o = o;
    this.#sessions = sessions;
    this.#state = state;
    this.#principal = ctx.principal;
    this.#tokens = o.config.wsMessageBurst;
  }

  /** Takes one frame from the bucket; false if the connection is over its rate. */
  #takeToken(): boolean {
    const now = Date.now();
    const { wsMessageRate, wsMessageBurst } = this.#o.config;
    this.#tokens = Math.min(wsMessageBurst, this.#tokens + ((now - this.#refilledAt) / 1000) * wsMessageRate);
    this.#refilledAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Sends a frame, unless the peer has left too much unread: then it is dropped as a slow consumer. */
  #write(data: string): void {
    const ws = this.#ws;
    if (ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount + data.length > this.#o.config.maxSendBufferBytes) {
      this.#event('ws.close', 'failure', 'PAL_ERR_SLOW_CONSUMER', `${ws.bufferedAmount} bytes unsent: the peer reads too slowly`);
      // A close frame would wait behind the unsent data: the connection is cut at once.
      ws.terminate();
      return;
    }
    ws.send(data);
  }

  /** Its session was revoked: close at once. */
  revoked(): void {
    if (!this.#closed) this.#fail('PAL_ERR_SESSION_REVOKED', 'the session was revoked; sign in again');
  }

  start(): void {
    const ws = this.#ws;
    ws.on('message', (data, isBinary) => {
      if (this.#closed || this.#failed) return;
      if (!this.#takeToken()) {
        this.#fail('PAL_ERR_RATE_LIMITED', `more than ${this.#o.config.wsMessageRate} frames per second (burst ${this.#o.config.wsMessageBurst}); slow down`);
        return;
      }
      if (++this.#pending > MAX_PENDING_FRAMES) {
        this.#fail('PAL_ERR_RATE_LIMITED', `more than ${MAX_PENDING_FRAMES} frames waiting; slow down`);
        return;
      }
      this.#chain = this.#chain.then(() => this.#onMessage(data, isBinary)).finally(() => void this.#pending--);
    });
    ws.on('pong', () => (this.#alive = true));
    ws.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.#event('ws.frame', 'failure', 'PAL_ERR_FRAME_TOO_LARGE', 'frame larger than the limit; connection closed');
      } else {
        this.#o.log.warn({ err: err.message, code: err.code }, 'agent socket error');
      }
    });
    ws.on('close', () => this.#onClose());
    // Authenticate and say hello within the limit, or be dropped. What the peer sent in time is
    // handled first: under load a hello may wait for the database past the limit, and that is the
    // server's delay, not the peer's. Frames sent later do not put the check off.
    this.#authTimer = setTimeout(() => {
      this.#authTimer = undefined;
      void this.#chain.then(() => {
        if (!this.#handle && !this.#closed && !this.#failed) this.#fail('PAL_ERR_UNAUTHENTICATED', this.#principal ? 'no hello in time' : 'no authentication in time');
      });
    }, Math.min(this.#o.config.authTimeoutMs, 2 ** 31 - 1));
    this.#authTimer.unref();
    const hb = setInterval(() => {
      if (!this.#alive) {
        ws.terminate();
        return;
      }
      this.#alive = false;
      ws.ping();
      if (Date.now() - this.#presentAt >= this.#o.config.presenceRefreshMs) this.#present();
    }, this.#o.config.heartbeatMs);
    hb.unref();
    this.#heartbeat = hb;
    if (this.#principal) this.#onAuthenticated();
  }

  #onAuthenticated(previous?: Principal): void {
    const p = this.#principal!;
    if (previous?.sessionId) this.#sessions.remove(previous.sessionId, this);
    if (p.sessionId) {
      this.#sessions.add(p.sessionId, this);
      // Revoked between the token check and now: the revocation listener has already run.
      if (this.#o.sessions.isRevoked(p.sessionId)) return this.revoked();
    }
    this.#event('ws.authenticate', 'success', undefined, 'agent connection authenticated');
    // The connection lives no longer than its token: the agent sends a fresh one in an `auth` frame
    // before it expires, or is closed with 4401 and reconnects.
    clearTimeout(this.#expiry);
    // Rounded up to a whole second: Node keeps one timer list per distinct delay, and per-millisecond
    // delays would leave a list behind for every connection until its token expired.
    this.#expiry = setTimeout(() => this.#fail('PAL_ERR_TOKEN_INVALID', 'the access token expired; send a fresh one or reconnect'), wholeSeconds(p.exp * 1000 - Date.now()));
    this.#expiry.unref();
  }

  /** A fresh token on an open connection: same user, still the `agent` scope. */
  async #reauthenticate(token: string): Promise<void> {
    const p = await this.#o.verifier.verify(token);
    if (!p.scopes.has('agent')) throw new PalisadeError('PAL_ERR_FORBIDDEN', 'agent connections need the "agent" scope');
    if (p.userId !== this.#principal!.userId) throw new PalisadeError('PAL_ERR_FORBIDDEN', 'the new token belongs to another user');
    const previous = this.#principal;
    this.#principal = p;
    this.#onAuthenticated(previous);
  }

  async #onMessage(data: RawData, isBinary: boolean): Promise<void> {
    if (this.#closed) return;
    let frame: AgentFrame;
    try {
      if (isBinary) throw new PalisadeError('PAL_ERR_VALIDATION', 'binary frames are not accepted');
      const text = data.toString();
      // Depth first, by a linear scan: a frame nested thousands deep costs the parser and the
      // validator no recursion (as HTTP bodies, edge/request-guard.ts).
      if (jsonDepthExceeds(text, this.#o.config.maxJsonDepth)) {
        throw new PalisadeError('PAL_ERR_VALIDATION', `the frame nests objects or arrays deeper than ${this.#o.config.maxJsonDepth} levels`);
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new PalisadeError('PAL_ERR_VALIDATION', 'the frame is not valid JSON');
      }
      frame = parse(agentFrame, json, 'frame');
      await this.#handle_(frame);
    } catch (e) {
      const err = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: e });
      if (err.code === 'PAL_ERR_INTERNAL') this.#o.log.error({ err: e }, 'agent frame handling failed');
      this.#event('ws.frame', 'failure', err.code, err.message);
      if (err.code === 'PAL_ERR_TOKEN_INVALID' || err.code === 'PAL_ERR_UNAUTHENTICATED' || err.code === 'PAL_ERR_FORBIDDEN' || err.code === 'PAL_ERR_PROTOCOL_VERSION') {
        this.#fail(err.code, err.message);
      } else {
        this.#send({ type: 'error', code: err.code, message: err.message });
      }
    }
  }

  async #handle_(frame: AgentFrame): Promise<void> {
    if (!this.#principal) {
      if (frame.type !== 'auth') throw new PalisadeError('PAL_ERR_UNAUTHENTICATED', 'authenticate first');
      const p = await this.#o.verifier.verify(frame.token);
      if (!p.scopes.has('agent')) throw new PalisadeError('PAL_ERR_FORBIDDEN', 'agent connections need the "agent" scope');
      this.#principal = p;
      // The per-user cap, now that the user is known (an upgrade with a bearer token took it before).
      try {
        await this.#ctx.slot?.addUser(p.userId);
      } catch (e) {
        const err = e instanceof PalisadeError ? e : new PalisadeError('PAL_ERR_INTERNAL', 'internal error', { internal: e });
        return this.#fail(err.code, err.message);
      }
      if (this.#closed) return;
      this.#onAuthenticated();
      return;
    }
    if (frame.type === 'auth') return this.#reauthenticate(frame.token);
    if (frame.type === 'ping') {
      this.#send({ type: 'pong', t: frame.t });
      return;
    }
    if (!this.#handle) {
      if (frame.type !== 'hello') throw new PalisadeError('PAL_ERR_VALIDATION', 'say hello first');
      await this.#hello(frame);
      return;
    }
    switch (frame.type) {
      case 'hello':
        throw new PalisadeError('PAL_ERR_VALIDATION', 'hello was already said');
      case 'grants':
        this.#handle.grants = normaliseGrants(frame.grants);
        this.#present();
        await this.#o.store.agents.touch(this.#handle.id, new Date().toISOString(), [...this.#handle.grants]);
        await this.#o.tasks.agentReady(this.#handle);
        return;
      case 'task.accept':
        return this.#o.tasks.accepted(this.#handle, frame.taskId);
      case 'task.progress':
        return this.#o.tasks.progress(this.#handle, frame);
      case 'task.result':
        return this.#o.tasks.resulted(this.#handle, frame);
    }
  }

  async #hello(frame: Extract<AgentFrame, { type: 'hello' }>): Promise<void> {
    if (frame.v !== PROTOCOL_VERSION) throw new PalisadeError('PAL_ERR_PROTOCOL_VERSION', `protocol version ${frame.v} is not supported; this server speaks ${PROTOCOL_VERSION}`);
    // Upgraded before the node began to drain: it would get no task here; sent to reconnect elsewhere.
    if (this.#state.draining) {
      this.#failed = true;
      this.#event('ws.close', 'failure', 'PAL_ERR_UNAVAILABLE', 'the node is shutting down; told to reconnect (1012)');
      this.#ws.close(SERVICE_RESTART_CLOSE, 'server restarting; reconnect');
      return;
    }
    // Upgraded before the node began to shed, but not an agent yet: it is new work, refused (1013).
    if (this.#o.memory.shedding) {
      const err = this.#o.memory.refuse('agent');
      return this.#fail(err.code, err.message);
    }
    const p = this.#principal!;
    const at = new Date().toISOString();
    const grants = normaliseGrants(frame.grants);
    const record = await this.#o.store.agents.upsert({
      id: `ag_${randomBytes(12).toString('base64url')}`, userId: p.userId, instanceId: frame.agent.instanceId, name: frame.agent.name,
      version: frame.agent.version, grants: [...grants], createdAt: at, lastSeenAt: at,
    });
    const ws = this.#ws;
    clearTimeout(this.#authTimer);
    this.#authTimer = undefined;
    const handle: AgentHandle = {
      id: record.id, userId: p.userId, name: record.name, grants, inFlight: new Set(),
      send: (f: ServerFrame) => this.#write(JSON.stringify(f)),
      close: (code: number, reason: string) => ws.close(code, reason),
      present: () => this.#present(),
    };
    this.#handle = handle;
    const previous = this.#o.agents.add(handle);
    if (previous) {
      // The same agent connected again: the old connection is closed, and its tasks pass to this
      // one (agentGone starts their grace period, agentReady below takes them back).
      previous.close(1000, 'replaced by a newer connection of the same agent');
      await this.#o.tasks.agentGone(previous);
    }
    this.#since = at;
    this.#present();
    this.#send({ type: 'welcome', v: PROTOCOL_VERSION, agentId: record.id, heartbeatMs: this.#o.config.heartbeatMs });
    this.#event('ws.hello', 'success', undefined, `agent ${record.id} connected with ${grants.size} granted site(s)`);
    await this.#o.tasks.agentReady(handle);
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.slot?.release();
    if (this.#principal?.sessionId) this.#sessions.remove(this.#principal.sessionId, this);
    clearTimeout(this.#authTimer);
    clearInterval(this.#heartbeat);
    clearTimeout(this.#expiry);
    const h = this.#handle;
    if (h && this.#o.agents.remove(h)) {
      // Tracked until settled, so a closing gateway waits for them before the stores close.
      this.#cleanup(this.#o.presence.remove(h.id, this.#o.nodeId).catch(() => undefined));
      this.#cleanup(this.#o.store.agents.touch(h.id, new Date().toISOString()).catch(() => undefined));
      this.#cleanup(this.#o.tasks.agentGone(h).catch((e: unknown) => this.#o.log.error({ err: e }, 'agentGone failed')));
    }
  }

  #cleanup(p: Promise<unknown>): void {
    const cleanups = this.#state.cleanups;
    cleanups.add(p);
    void p.finally(() => cleanups.delete(p));
  }

  #since = '';

  /** When this agent's presence was last written (ms since the epoch). */
  #presentAt = 0;

  /**
   * Records (or refreshes: at hello, on new grants, then on the first heartbeat after each
   * `presenceRefreshMs`) that this agent is connected here; lives three refreshes. An idle agent
   * costs Redis one write per refresh, not one per heartbeat.
   */
  #present(): void {
    const h = this.#handle;
    if (!h || this.#closed) return;
    this.#presentAt = Date.now();
    const ttlMs = 3 * Math.max(this.#o.config.presenceRefreshMs, this.#o.config.heartbeatMs);
    this.#o.presence.set({ agentId: h.id, userId: h.userId, nodeId: this.#o.nodeId, since: this.#since, grants: [...h.grants] }, ttlMs)
      .catch((e: unknown) => this.#o.log.warn({ err: (e as Error).message, agentId: h.id }, 'presence not recorded'));
  }

  #send(frame: ServerFrame): void {
    this.#write(JSON.stringify(frame));
  }

  /** Sends an error frame and closes with the code's WebSocket close number. */
  #fail(code: ErrorCode, message: string): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#event('ws.close', 'failure', code, message);
    this.#send({ type: 'error', code, message });
    this.#ws.close(ERROR_CODES[code].close, message.slice(0, 120));
  }

  #event(activity: string, outcome: 'success' | 'failure', code: string | undefined, message: string): void {
    this.#o.events.emit({
      class: activity === 'ws.authenticate' ? 'authentication' : 'network_activity', activity, outcome, code, message,
      actor: { userId: this.#principal?.userId, clientId: this.#principal?.clientId, agentId: this.#handle?.id },
      src: { ip: this.#ctx.ip, origin: this.#ctx.origin },
    });
  }
}

/** Keeps only well-formed http(s) origins from an agent's grant list. */
function normaliseGrants(grants: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const g of grants) {
    try {
      out.add(parseOrigin(g));
    } catch {
      // A malformed grant is ignored; it can only narrow what the agent receives.
    }
  }
  return out;
}
