/**
 * A synthetic agent speaking the real agent protocol over a real WebSocket: used by integration
 * tests and the dispatch benchmark. `onTask` decides the outcome of each dispatched task.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { PROTOCOL_VERSION, WS_BEARER_PREFIX, WS_SUBPROTOCOL, type DispatchFrame, type ServerFrame, type TaskResult, type ErrorBody } from '@palisade/protocol';

export type TaskOutcome = { outcome: 'succeeded' | 'failed'; result?: Partial<TaskResult>; error?: ErrorBody } | 'ignore' | 'no-accept';

export interface SyntheticAgentOptions {
  url: string;
  token: string;
  ca?: string | undefined;
  grants: string[];
  instanceId?: string;
  origin?: string;
  onTask?: (frame: DispatchFrame) => TaskOutcome | Promise<TaskOutcome>;
}

export class SyntheticAgent {
  readonly ws: WebSocket;
  readonly frames: ServerFrame[] = [];
  agentId: string | undefined;
  readonly #o: SyntheticAgentOptions;
  readonly #waiters: { match: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void }[] = [];

  private constructor(o: SyntheticAgentOptions) {
    this.#o = o;
    const wsUrl = `${o.url.replace(/^http/, 'ws')}/ws/agent`;
    this.ws = new WebSocket(wsUrl, [WS_SUBPROTOCOL, WS_BEARER_PREFIX + o.token], { ca: o.ca, ...(o.origin ? { origin: o.origin } : {}) });
    this.ws.on('message', (data) => {
      const f = JSON.parse(String(data)) as ServerFrame;
      this.frames.push(f);
      for (const w of [...this.#waiters]) {
        if (w.match(f)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(f);
        }
      }
      if (f.type === 'task.dispatch') void this.#run(f);
    });
  }

  /** Connects, says hello and waits for `welcome`. */
  static async connect(o: SyntheticAgentOptions): Promise<SyntheticAgent> {
    const a = new SyntheticAgent(o);
    await new Promise<void>((resolve, reject) => {
      a.ws.once('open', () => resolve());
      a.ws.once('error', reject);
      a.ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    a.send({ type: 'hello', v: PROTOCOL_VERSION, agent: { name: 'synthetic', version: '0.0.0', instanceId: o.instanceId ?? randomUUID() }, grants: o.grants });
    const welcome = await a.next((f) => f.type === 'welcome');
    a.agentId = (welcome as Extract<ServerFrame, { type: 'welcome' }>).agentId;
    return a;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  next(match: (f: ServerFrame) => boolean, timeoutMs = 5000): Promise<ServerFrame> {
    const seen = this.frames.find(match);
    if (seen) {
      this.frames.splice(this.frames.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), timeoutMs);
      this.#waiters.push({ match, resolve: (f) => { clearTimeout(timer); this.frames.splice(this.frames.indexOf(f), 1); resolve(f); } });
    });
  }

  closed(): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve({ code: -1, reason: 'already closed' });
    return new Promise((resolve) => this.ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  }

  close(): void {
    this.ws.close();
  }

  async #run(f: DispatchFrame): Promise<void> {
    const decision = (await this.#o.onTask?.(f)) ?? { outcome: 'succeeded' as const };
    if (decision === 'no-accept') return;
    this.send({ type: 'task.accept', taskId: f.taskId });
    if (decision === 'ignore') return;
    const started = performance.now();
    f.steps.forEach((s, i) => {
      this.send({ type: 'task.progress', taskId: f.taskId, step: i, stepType: s.type, status: 'done', elapsedMs: performance.now() - started });
    });
    this.send({
      type: 'task.result', taskId: f.taskId, outcome: decision.outcome,
      result: { outputs: {}, artifacts: [], timings: { totalMs: performance.now() - started, steps: [] }, ...decision.result },
      ...(decision.error ? { error: decision.error } : {}),
    });
  }
}

/** Opens a raw WebSocket to the agent endpoint and reports how it ended (for refusal tests). */
export function rawAgentSocket(url: string, protocols: string[], options: { ca?: string | undefined; origin?: string; headers?: Record<string, string> } = {}): Promise<{ status?: number; body?: string; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws/agent`, protocols, { ca: options.ca, ...(options.origin ? { origin: options.origin } : {}), headers: options.headers });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (e) => reject(e));
  });
}
