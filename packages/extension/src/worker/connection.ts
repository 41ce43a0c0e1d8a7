/**
 * @module worker/connection — the agent's WebSocket to `/ws/agent`: bearer token in the
 * subprotocols (never in the URL), `hello` on open, an application `ping` every 20 s (it also keeps
 * the MV3 service worker alive, Chrome ≥ 116), and reconnection with exponential backoff and
 * jitter (cap 30 s); a close with 4401 reconnects at once with a refreshed token.
 *
 * Incoming frames are parsed here and handed on as `unknown`: the caller validates every one.
 */
import { WS_BEARER_PREFIX, WS_SUBPROTOCOL, agentFrameValidator, type AgentFrame as AgentFrameT } from '@palisade/protocol';
import { backoffDelay } from './backoff.ts';

/** Largest frame read (the server's own limit is 1 MiB). */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Interval of the application-level `ping` frame. */
export const PING_INTERVAL_MS = 20_000;
/** A socket that is not open after this long is abandoned. */
export const OPEN_TIMEOUT_MS = 15_000;

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'error';

/** The parts of the WebSocket constructor used (the browser's, or `ws` in tests). */
export type SocketFactory = (url: string, protocols: string[]) => WebSocket;

export interface ConnectionDeps {
  socket: SocketFactory;
  /** The agent WebSocket URL, or `undefined` when no server is configured. */
  url(): string | undefined;
  /** A valid access token, or `undefined` when signed out. */
  token(): Promise<string | undefined>;
  /** A freshly refreshed token (after a 4401 close). */
  refreshToken(): Promise<string | undefined>;
  /** Whether the user is signed in (a missing token then means "try again later", not "stop"). */
  signedIn(): boolean;
  hello(): Promise<AgentFrameT>;
  onFrame(frame: unknown): void;
  onState(state: ConnectionState, detail: string | undefined): void;
  backoff?: (attempt: number) => number;
  log?: (event: string, detail?: Record<string, unknown>) => void;
}

const outgoing = agentFrameValidator;

/** The one connection of the agent to its server. */
export class AgentConnection {
  state: ConnectionState = 'idle';
  detail: string | undefined;
  readonly #d: ConnectionDeps;
  #ws: WebSocket | undefined;
  #attempt = 0;
  #wanted = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #ping: ReturnType<typeof setInterval> | undefined;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  #fresh = false;
  #connecting = false;

  constructor(deps: ConnectionDeps) {
    this.#d = deps;
  }

  /** Connects unless already connected or connecting. Idempotent. */
  ensure(): void {
    this.#wanted = true;
    if (this.#ws || this.#retry !== undefined || this.#connecting) return;
    void this.#connect();
  }

  /** Reconnects now (after a manual "reconnect"), resetting the backoff. */
  restart(): void {
    this.#attempt = 0;
    this.stop();
    this.ensure();
  }

  /** Closes and stops reconnecting. */
  stop(): void {
    this.#wanted = false;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#teardown(1000, 'agent stopped');
    this.#set('idle', undefined);
  }

  /** Sends a frame if connected; frames that do not match `AgentFrame` are never sent. */
  send(frame: AgentFrameT): boolean {
    if (!outgoing.check(frame)) {
      this.#d.log?.('frame.out.invalid', { type: (frame as { type?: unknown }).type, issues: outgoing.issues(frame).slice(0, 3) });
      return false;
    }
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.state !== 'connected') return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Whether frames can be sent now. */
  get connected(): boolean {
    return this.state === 'connected';
  }

  async #connect(): Promise<void> {
    if (this.#connecting) return;
    this.#connecting = true;
    let token: string | undefined;
    try {
      token = this.#fresh ? await this.#d.refreshToken() : await this.#d.token();
    } catch {
      token = undefined;
    } finally {
      this.#connecting = false;
    }
    this.#fresh = false;
    const url = this.#d.url();
    if (!this.#wanted || this.#ws) return;
    if (url === undefined || !this.#d.signedIn()) {
      this.#set('idle', 'signed out');
      return;
    }
    if (token === undefined) {
      this.#scheduleRetry('no valid access token yet (the token endpoint is unreachable?)');
      return;
    }
    this.#set(this.#attempt === 0 ? 'connecting' : 'reconnecting', undefined);
    let ws: WebSocket;
    try {
      ws = this.#d.socket(url, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + token]);
    } catch (e) {
      this.#scheduleRetry(`cannot open the connection: ${(e as Error).message}`);
      return;
    }
    this.#ws = ws;
    this.#openTimer = setTimeout(() => ws.close(4000, 'open timeout'), OPEN_TIMEOUT_MS);
    ws.onopen = async () => {
      clearTimeout(this.#openTimer);
      if (ws.protocol !== WS_SUBPROTOCOL) {
        ws.close(1002, 'subprotocol not agreed');
        return;
      }
      this.#set('connected', undefined);
      const hello = await this.#d.hello();
      // Closed while the hello was being made: no ping timer for a socket that is gone.
      if (this.#ws !== ws) return;
      this.send(hello);
      this.#ping = setInterval(() => this.send({ type: 'ping', t: Date.now() }), PING_INTERVAL_MS);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== 'string' || ev.data.length > MAX_FRAME_BYTES) {
        this.#d.log?.('frame.in.refused', { reason: typeof ev.data !== 'string' ? 'binary frame' : 'too large' });
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(ev.data);
      } catch {
        this.#d.log?.('frame.in.refused', { reason: 'not JSON' });
        return;
      }
      if (parsed !== null && typeof parsed === 'object' && (parsed as { type?: unknown }).type === 'welcome') this.#attempt = 0;
      this.#d.onFrame(parsed);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.#ws !== ws) return;
      this.#teardown();
      this.#d.log?.('socket.closed', { code: ev.code, reason: ev.reason.slice(0, 120) });
      if (!this.#wanted) return;
      if (ev.code === 4401 || ev.code === 4410) {
        // Expired token (4401) or revoked session (4410): reconnect at once with a fresh one, once;
        // then back off. For a revoked session the refresh is refused and the user is signed out.
        this.#fresh = true;
        if (this.#attempt === 0) {
          this.#attempt = 1;
          void this.#connect();
          return;
        }
        this.#scheduleRetry('the server refused the token');
        return;
      }
      if (ev.code === 4403 || ev.code === 1002) {
        const why = ev.code === 4403 ? 'the server refused this agent (forbidden)' : 'the server does not speak this protocol version; update the extension';
        this.#set('error', ev.reason ? `${why}: ${ev.reason.slice(0, 200)}` : why);
        this.#wanted = false;
        return;
      }
      this.#scheduleRetry(ev.reason ? `connection closed (${ev.code}: ${ev.reason.slice(0, 200)})` : `connection closed (${ev.code})`);
    };
    ws.onerror = () => {
      // Always followed by a close event.
    };
  }

  #scheduleRetry(detail: string): void {
    const delay = (this.#d.backoff ?? backoffDelay)(this.#attempt);
    this.#attempt += 1;
    this.#set('reconnecting', detail);
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#wanted) void this.#connect();
    }, delay);
  }

  #teardown(code?: number, reason?: string): void {
    clearTimeout(this.#openTimer);
    clearInterval(this.#ping);
    this.#ping = undefined;
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws && code !== undefined && ws.readyState <= WebSocket.OPEN) ws.close(code, reason);
  }

  #set(state: ConnectionState, detail: string | undefined): void {
    this.state = state;
    this.detail = detail;
    this.#d.onState(state, detail);
  }
}
