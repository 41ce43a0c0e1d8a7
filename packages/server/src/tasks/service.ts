/**
 * @module tasks/service — accepting, routing and tracking tasks.
 *
 * A submission passes, in order: code-step refusal → schema → recipe lookup → input binding →
 * site and URL policy → idempotency → routing pre-check; only then is it stored (`queued`) and
 * dispatched to one of the owner's connected agents granted its site. Every state change is a
 * compare-and-set in the durable store, so a restart loses nothing that was acknowledged.
 *
 * Across nodes (a `cluster`: Redis presence and bus, a shared durable store) an agent may be
 * connected to another node. Then:
 *
 *   node A (submit)                            node B (agent connected here)
 *   choose an agent on B (presence); store
 *   the task `dispatched` to it, arm deadline
 *   follow `task:<id>` on the bus ──────────►  (B's events reach A's watchers)
 *   publish {dispatch, task} on `node:<B>` ─►  send to the agent (no store write: the task was
 *                                              stored dispatched to it); arm accept timer and deadline
 *   watchers on A  ◄─── `task:<id>` ────────── state / progress / end events
 *   cancel: CAS → cancelled, publish {cancel}  ► agent told `task.cancel`, local timers dropped
 *
 * A new task is stored already dispatched to the agent chosen for it (on this node, or present on
 * another): one durable write less before the agent has it. A task that waits (no agent with room)
 * is stored `queued`, and a node that finds an agent for it later moves it queued → dispatched.
 * Every move is a compare-and-set in the shared store, so two nodes acting on one task (a duplicate
 * message, a cancel racing a result) move it once: a task is never dispatched twice for one attempt.
 * Bus messages only say "look" — what must not be lost is in the store: a dispatch the bus lost (or
 * whose sender died) leaves the task stored dispatched to a node that does not hold it; the sweeper
 * asks that node to look again, and it sends the task (or queues it again) after a compare-and-set.
 *
 * A dispatched task records its node. Every node beats (`nodes`, every `nodeBeatMs`); one node at a
 * time (a counter used as a lock) sweeps: a dispatched or running task whose node has missed three
 * beats is re-dispatched (its agent reconnects elsewhere) or failed with `PAL_ERR_AGENT_LOST`, a
 * task queued for more than two beats is offered again, and a task stored dispatched to a live node
 * for more than two beats is pointed out to it again (a bus message lost while Redis restarted costs
 * a beat or two, never the task).
 *
 * Redis unreachable (restarting, failing over): submissions are refused (`PAL_ERR_UNAVAILABLE`)
 * until routing works again, but a task once stored is accepted, and waits queued. Agents go on
 * running what they hold; what the bus lost is made good when it is back — `end` events it refused
 * are published again on a later beat, a node whose subscriptions came back reads the tasks it
 * follows from the store (and offers queued ones to its agents), and no node is judged dead until
 * the others have had time to beat again.
 *
 * Draining (a node shutting down): it dispatches nothing more to its own agents — new and requeued
 * tasks go to other nodes — and reports how many of its dispatches are still running.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  PalisadeError, FINAL_STATES, bindSteps, checkStepUrls, interpolate, parse, parseOrigin, refuseCodeSteps, resolveInputs,
  type ErrorBody, type ErrorCode, type TaskEvent, type TaskResult, type TaskState, type TaskView, type Step,
} from '@palisade/protocol';
import type { ServerConfig } from '../config.ts';
import type { Principal } from '../auth/tokens.ts';
import { UnfinishedCapReached, type DurableStore, type TaskRecord } from '../store/types.ts';
import type { SecurityEvents } from '../siem/events.ts';
import type { AgentHandle, AgentRegistry } from '../gateway/registry.ts';
import type { Bus, Counters, Nodes, Presence, PresenceEntry } from '../hot/types.ts';
import { taskSubmission, boundSteps } from '../edge/validators.ts';
import type { RecipeRegistry } from './recipes.ts';
import { canMove } from './machine.ts';
import { wholeSeconds } from '../timers.ts';

export type TaskListener = (event: TaskEvent, seq: number) => void;

/** An agent of the owner present on another node, with the sites it was granted. */
type Remote = { agentId: string; nodeId: string; grants: string[]; alive: boolean };
/** The agent a new task goes to: on this node (`here`, its place taken) or on node `nodeId`. */
type Chosen = { agentId: string; nodeId?: string | undefined; here?: AgentHandle };

/** Other nodes whose liveness is remembered at once (more are read again). */
const MAX_NODES_KEPT = 1000;

/** Events kept per task for late subscribers (replayed on subscribe, `Last-Event-ID` honoured). */
export const HISTORY_EVENTS_PER_TASK = 256;
/** Tasks whose events are kept at once; the oldest are dropped first. */
export const HISTORY_TASKS = 1000;
/** How long a finished task's events stay available, ms. */
export const HISTORY_RETENTION_MS = 60_000;

interface History {
  events: { seq: number; event: TaskEvent }[];
  next: number;
  endedAt?: number;
}

export interface TaskServiceOptions {
  config: ServerConfig;
  store: DurableStore;
  recipes: RecipeRegistry;
  agents: AgentRegistry;
  events: SecurityEvents;
  log: Logger;
  /** Where agents are connected (this node's, and in a cluster every node's). */
  presence: Presence;
  /** Set when several nodes share the stores: tasks then reach agents connected to other nodes. */
  cluster?: { nodeId: string; bus: Bus; nodes: Nodes; counters: Counters } | undefined;
}

/** A message to one node, on its topic `node:<id>`. */
type NodeMessage =
  | { k: 'dispatch'; taskId: string; task?: TaskRecord }
  | { k: 'cancel'; taskId: string; agentId: string; reason: string };

/** Longest wait between two attempts to reconnect to Redis, ms (hot/redis.ts, `retryStrategy`). */
const REDIS_RECONNECT_MAX_MS = 2000;

/**
 * Task events on the bus, on the task's topic `task:<id>`, tagged with the node that published them:
 * the latest (`event`), after those that went before it in the same message, oldest first (`before`,
 * see `taskEventBatchMs`). A node that reads only `event` still hears every end.
 */
interface BusEvent { from: string; event: TaskEvent; before?: TaskEvent[] }
/** Most events of one task sent in one bus message; the next goes out with those waiting at once. */
const MAX_BATCHED_EVENTS = 32;

export const nodeTopic = (nodeId: string) => `node:${nodeId}`;
const taskTopic = (taskId: string) => `task:${taskId}`;

const now = () => new Date().toISOString();

/** Stops the task's timer kept in `timers`, if any, and forgets it. */
function dropTimer(timers: Map<string, NodeJS.Timeout>, taskId: string): void {
  clearTimeout(timers.get(taskId));
  timers.delete(taskId);
}
const newTaskId = () => `t_${randomBytes(12).toString('base64url')}`;
/** One of `xs` (not empty), at random. */
const anyOf = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
/** The agent with the fewest tasks in flight (the first of them). */
const leastBusy = (agents: readonly AgentHandle[]): AgentHandle => agents.reduce((a, b) => (b.inFlight.size < a.inFlight.size ? b : a));

/** The API view of a stored task. */
export function toView(t: TaskRecord): TaskView {
  const v: TaskView = {
    id: t.id, state: t.state, site: t.site, attempts: t.attempts, createdAt: t.createdAt, updatedAt: t.updatedAt, deadline: t.deadline,
  };
  if (t.recipe !== undefined) v.recipe = t.recipe;
  if (t.agentId !== undefined) v.agentId = t.agentId;
  if (t.result !== undefined) v.result = t.result;
  if (t.error !== undefined) v.error = t.error;
  return v;
}

export class TaskService {
  readonly #o: TaskServiceOptions;
  readonly #listeners = new Map<string, Set<TaskListener>>();
  readonly #acceptTimers = new Map<string, NodeJS.Timeout>();
  readonly #deadlineTimers = new Map<string, NodeJS.Timeout>();
  /** Tasks whose agent disconnected, waiting for it to come back. */
  readonly #graceTimers = new Map<string, NodeJS.Timeout>();
  /** Accepted tasks whose `running` is not yet in the store (`config.runningRecordMs`). */
  readonly #recordTimers = new Map<string, NodeJS.Timeout>();
  /** Tasks' events waiting to go to the other nodes together (`config.taskEventBatchMs`). */
  readonly #outbox = new Map<string, { events: TaskEvent[]; timer: NodeJS.Timeout }>();
  /** `running` writes in flight. */
  readonly #recording = new Set<Promise<void>>();
  readonly #history = new Map<string, History>();
  /** Ids of ended tasks with the time they ended, oldest first, for pruning their histories. */
  #ended: [string, number][] = [];
  /**
   * Unfinished tasks this node has stored or moved: spares a store read for every agent frame. In a
   * cluster it holds only tasks this node dispatched (a queued task may be taken by any node), and
   * callers' reads go to the store, which every node's moves reach.
   */
  readonly #live = new Map<string, TaskRecord>();
  /** Task topics this node follows on the bus: how many reasons (watchers, a remote dispatch) and how to stop. */
  readonly #following = new Map<string, { refs: number; stop: Promise<() => Promise<void>> }>();
  /** Tasks this node handed to another node's agent (it follows their events until they end). */
  readonly #routed = new Set<string>();
  /** Tasks another node told this one were cancelled, the latest HISTORY_TASKS (see #take). */
  readonly #cancelled = new Set<string>();
  #stopNodeTopic: (() => Promise<void>) | undefined;
  #beat: NodeJS.Timeout | undefined;
  #draining = false;
  #stopped = false;
  /** `end` events the bus refused (Redis unreachable), by task, oldest first: published again on a later beat. */
  readonly #unsent = new Map<string, Extract<TaskEvent, { type: 'end' }>>();
  /** Tasks accepted here that could not be routed (Redis unreachable): followed on a later beat. */
  readonly #unrouted = new Set<string>();
  /** Other nodes' liveness as last read, oldest reading first (see #aliveNodes). */
  readonly #nodeSeen = new Map<string, { alive: boolean; at: number }>();
  /** A sweep is running. */
  #sweeping = false;
  /** A beat is in flight. */
  #beating = false;
  /** Since when this node's beats (and sweeps) succeed without a failure (ms since the epoch); Infinity after one fails. */
  #beatingSince = 0;

  constructor(options: TaskServiceOptions) {
    this.#o = options;
  }

  /** After this node's beats fail, how long before it trusts others' beats again (they lived through the same outage). */
  get #beatGraceMs(): number {
    return 3 * this.#o.config.nodeBeatMs + 2 * REDIS_RECONNECT_MAX_MS;
  }

  // ── caller side ────────────────────────────────────────────────────────────────────────────

  /**
   * Validates and accepts a task. Returns the task and whether it was created (false on an idempotent
   * replay). With a `listener` (a caller waiting for the end, `Prefer: wait`), a created task's events
   * go to it from before its dispatch, and `unsubscribe` is returned: no read-back is needed to catch
   * up, so `task` is then the view as stored. No `unsubscribe` means nothing was subscribed (a replay,
   * or the bus refused the subscription: the task is accepted all the same) — use `watch`.
   */
  async submit(p: Principal, body: unknown, idempotencyHeader?: string, listener?: TaskListener): Promise<{ task: TaskView; created: boolean; unsubscribe?: () => void }> {
    if (body !== null && typeof body === 'object') refuseCodeSteps((body as { steps?: unknown }).steps);
    const sub = parse(taskSubmission, body, 'task');
    if (idempotencyHeader !== undefined && sub.idempotencyKey !== undefined && idempotencyHeader !== sub.idempotencyKey) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'the Idempotency-Key header and the idempotencyKey field differ');
    }
    const key = sub.idempotencyKey ?? idempotencyHeader;
    if (key !== undefined && (key.length === 0 || key.length > 128)) throw new PalisadeError('PAL_ERR_VALIDATION', 'the idempotency key must have 1 to 128 characters');

    const { site, steps, recipe, timeoutMs } = this.#plan(sub);
    // Inputs may lengthen strings past what a field allows: the bound steps are checked again.
    parse(boundSteps, steps, 'steps once the inputs are put in');
    checkStepUrls(steps, site);

    const requestHash = createHash('sha256').update(JSON.stringify([sub.recipe, sub.site, sub.steps, sub.input, sub.agentId, sub.timeoutMs])).digest('base64url');
    if (key !== undefined) {
      const existing = await this.#o.store.tasks.byIdempotencyKey(p.userId, key);
      if (existing) {
        if (existing.requestHash !== requestHash) throw new PalisadeError('PAL_ERR_IDEMPOTENCY_CONFLICT', 'this idempotency key was used for a different task');
        return { task: toView(existing), created: false };
      }
    }

    const waitForAgent = sub.waitForAgent ?? false;
    const id = newTaskId();
    // No agent here can take it: presence is read, and the task most likely goes to another node's
    // agent — which it must be followed to before it is stored (below). The subscription is started
    // now, beside the presence read (one round trip instead of two in a row); undone if it stays here.
    // (Until the task is stored, only this submission can have followed its new id: undoing is `#unroute(id)`.)
    const early = this.#o.cluster && (this.#draining || this.#eligible(p.userId, site, sub.agentId).length === 0) ? this.#followRouted(id) : undefined;
    early?.catch(() => undefined); // awaited (and its failure handled) only if the task goes to another node
    let remote: Remote[] | undefined;
    let chosen: Chosen | undefined;
    try {
      // Presence is read once (the routing pre-check and the routing itself see the same).
      remote = waitForAgent ? undefined : await this.#precheckRouting(p.userId, site, sub.agentId);
      // The agent is chosen before the task is stored, and the task stored dispatched to it.
      chosen = await this.#choose(id, p.userId, site, sub.agentId, remote);
    } catch (e) {
      this.#unroute(id);
      throw e;
    }
    const at = now();
    const record: TaskRecord = {
      id, ownerUserId: p.userId, clientId: p.clientId, recipe, site, steps, state: chosen ? 'dispatched' : 'queued', pinnedAgentId: sub.agentId,
      agentId: chosen?.agentId, nodeId: chosen?.nodeId, attempts: chosen ? 1 : 0, idempotencyKey: key, requestHash, waitForAgent, createdAt: at, updatedAt: at,
      deadline: new Date(Date.now() + timeoutMs).toISOString(),
    };
    // A waiting caller subscribes while the task is stored (one round trip less on its way); an
    // idempotent replay undoes it. Refused (Redis unreachable): the task is accepted all the same.
    const listening = listener && this.#listen(record.id, listener).catch((e: unknown) => {
      this.#o.log.warn({ err: e, taskId: record.id }, 'following a new task failed; the caller is answered without waiting');
      return undefined;
    });
    // A task handed to another node's agent is followed before it is stored: its events come from
    // there, and that node may take it (a reconnect, the sweeper) as soon as it is stored. Refused
    // (Redis unreachable): the submission is refused, nothing stored.
    const remoteChosen = chosen !== undefined && chosen.here === undefined;
    if (!remoteChosen) this.#unroute(id);
    else {
      try {
        await (early ?? this.#followRouted(id));
      } catch (e) {
        (await listening)?.();
        throw e;
      }
    }
    let inserted: Awaited<ReturnType<DurableStore['tasks']['insert']>>;
    try {
      // The cap on unfinished tasks is counted by the insert itself (one round trip).
      inserted = await this.#o.store.tasks.insert(record, { maxUnfinished: this.#o.config.maxUnfinishedTasksPerUser });
    } catch (e) {
      chosen?.here?.inFlight.delete(id);
      this.#unroute(id);
      (await listening)?.();
      if (e instanceof UnfinishedCapReached) {
        throw new PalisadeError('PAL_ERR_RATE_LIMITED', `you have ${e.open} unfinished tasks, the most allowed; wait for some to finish or cancel them`);
      }
      throw e;
    }
    const { task, created } = inserted;
    const unsubscribe = await listening;
    if (!created) {
      chosen?.here?.inFlight.delete(id);
      this.#unroute(id);
      unsubscribe?.();
      return { task: toView(task), created: false };
    }
    if (!this.#o.cluster && !chosen?.here) this.#live.set(task.id, task);
    this.#o.events.emit({
      class: 'api_activity', activity: 'task.submit', outcome: 'success', message: `task ${task.id} accepted for ${site}`,
      actor: { userId: p.userId, clientId: p.clientId }, data: { taskId: task.id, recipe, site },
    });
    this.#armDeadline(task);
    try {
      if (chosen?.here) {
        if (this.#o.agents.get(chosen.here.id) === chosen.here) {
          // Its place is gone if the task was cancelled meanwhile (an idempotent replay told its id): not sent.
          if (chosen.here.inFlight.has(task.id)) this.#handTo(chosen.here, task);
        } else {
          // Gone while the task was stored (its close started a reconnect grace for the place taken):
          // never sent, so it goes to the agent's new connection if there is one, else back to the queue.
          dropTimer(this.#graceTimers, task.id);
          await this.#take(task, false);
        }
      } else if (chosen) {
        // Followed already (above): the message carries the record as stored.
        await this.#sendRemote(task.id, chosen.nodeId!, task);
      } else {
        await this.#tryDispatch(task, false, false, remote);
      }
      // Left queued (no agent free, or its chosen agent went away while it was stored).
      this.#followQueued(task.id);
    } catch (e) {
      // The task is stored, so it is accepted: a refusal now would have the caller submit it again
      // (and it would run twice). Redis failing mid-dispatch leaves it queued (the sweeper offers it
      // again) or stored dispatched to another node's agent unannounced (the sweeper points it out there).
      if (chosen) this.#o.log.warn({ err: e, taskId: task.id, nodeId: chosen.nodeId }, 'handing a new task to its agent\'s node failed; the sweeper points it out there again');
      else this.#o.log.warn({ err: e, taskId: task.id }, 'dispatching a new task failed; it stays queued');
      // Another node may take it from the queue: this one follows it once the bus is back, to hear
      // its end (and drop its deadline timer).
      if (this.#o.cluster) this.#unrouted.add(task.id);
    }
    if (unsubscribe) return { task: toView(task), created: true, unsubscribe };
    return { task: toView((await this.#current(task.id)) ?? task), created: true };
  }

  async get(p: Principal, id: string): Promise<TaskView> {
    return toView(await this.#owned(p, id));
  }

  async cancel(p: Principal, id: string): Promise<TaskView> {
    // The task may move between the read and the compare-and-set: read again and retry.
    for (let attempt = 0; attempt < 5; attempt++) {
      const t = await this.#owned(p, id);
      if (FINAL_STATES.has(t.state)) throw new PalisadeError('PAL_ERR_TASK_FINISHED', `task ${id} has already ${t.state}`);
      const done = await this.#finish(t, 'cancelled', undefined, { code: 'PAL_ERR_TASK_CANCELLED', message: 'cancelled by the caller' });
      if (done) return toView(done);
    }
    throw new PalisadeError('PAL_ERR_UNAVAILABLE', `task ${id} keeps changing; try again`);
  }

  /**
   * Subscribes to a task's events. Returns its current view and the events already published after
   * `afterSeq` (all kept ones by default), so a late subscriber misses nothing that is still kept.
   */
  async watch(p: Principal, id: string, listener: TaskListener, afterSeq = -1): Promise<{ task: TaskView; backlog: { seq: number; event: TaskEvent }[]; unsubscribe: () => void }> {
    const t = await this.#owned(p, id);
    const unsubscribe = await this.#listen(id, listener, !FINAL_STATES.has(t.state));
    // Read after subscribing so no transition between the read and the subscription is missed.
    let fresh: TaskRecord;
    try {
      fresh = (await this.#current(id)) ?? t;
    } catch (e) {
      // The store failed (bench/soak.bench.ts found listeners left behind this way): undo, then refuse.
      unsubscribe();
      throw e;
    }
    const backlog = (this.#history.get(id)?.events ?? []).filter((e) => e.seq > afterSeq);
    return { task: toView(fresh), backlog, unsubscribe };
  }

  /**
   * Adds `listener` to the task's listeners and, unless the task is known to have ended (`follow`
   * false), follows its events from other nodes. Returns how to undo both. Refused (Redis
   * unreachable): nothing is left behind.
   */
  async #listen(id: string, listener: TaskListener, follow = true): Promise<() => void> {
    let set = this.#listeners.get(id);
    if (!set) this.#listeners.set(id, (set = new Set()));
    set.add(listener);
    const drop = () => {
      if (!set.delete(listener)) return false;
      if (set.size === 0 && this.#listeners.get(id) === set) this.#listeners.delete(id);
      return true;
    };
    if (follow) {
      try {
        await this.#follow(id);
      } catch (e) {
        drop();
        throw e;
      }
    }
    return () => {
      if (drop() && follow) this.#unfollow(id);
    };
  }

  // ── agent side ─────────────────────────────────────────────────────────────────────────────

  /**
   * An agent connected or changed its grants: it takes back the tasks it held before a disconnect
   * (still within the grace period), then is offered the owner's queued tasks.
   */
  async agentReady(agent: AgentHandle): Promise<void> {
    for (const t of this.#live.values()) {
      if (t.agentId === agent.id && (t.state === 'dispatched' || t.state === 'running') && this.#graceTimers.has(t.id)) {
        dropTimer(this.#graceTimers, t.id);
        agent.inFlight.add(t.id);
        this.#o.log.info({ taskId: t.id, agentId: agent.id }, 'agent came back; it keeps its task');
      }
    }
    await this.#offerQueued(agent.userId);
  }

  /**
   * Offers the user's (or everyone's) queued tasks to this node's agents (one connected, one has
   * room again, the bus came back); `unfinished`: the list, if already read.
   */
  async #offerQueued(userId?: string, unfinished?: readonly TaskRecord[]): Promise<void> {
    const queued = (unfinished ?? (await this.#o.store.tasks.listUnfinished(userId))).filter((t) => t.state === 'queued');
    for (const t of queued) await this.#tryDispatch(t, true);
  }

  /**
   * An agent disconnected. Its tasks wait `reconnectGraceMs` for it to come back (a token refresh or
   * a network blip closes the socket while the browser goes on running the task); after that they
   * are re-dispatched once, or failed with `PAL_ERR_AGENT_LOST`.
   */
  async agentGone(agent: AgentHandle): Promise<void> {
    for (const taskId of [...agent.inFlight]) {
      agent.inFlight.delete(taskId);
      if (this.#graceTimers.has(taskId)) continue;
      const timer = setTimeout(() => {
        this.#graceTimers.delete(taskId);
        void (async () => {
          const t = this.#live.get(taskId) ?? (await this.#o.store.tasks.byId(taskId));
          const back = this.#o.agents.get(agent.id);
          if (t && t.agentId === agent.id && (t.state === 'dispatched' || t.state === 'running') && !back?.inFlight.has(taskId)) {
            await this.#requeueOrFail(t, 'the agent disconnected');
          } else if (!back?.inFlight.has(taskId)) {
            this.#letGo(taskId);
          }
        })().catch((e: unknown) => this.#o.log.error({ err: e, taskId }, 'handling a lost agent failed'));
      }, this.#o.config.reconnectGraceMs);
      timer.unref();
      this.#graceTimers.set(taskId, timer);
    }
  }

  async accepted(agent: AgentHandle, taskId: string): Promise<void> {
    const t = await this.#agentTask(agent, taskId);
    if (!t || t.state !== 'dispatched') return;
    dropTimer(this.#acceptTimers, taskId);
    dropTimer(this.#recordTimers, taskId);
    // Running from now on, here; the store hears it later (#recordRunning) or not at all (the task
    // ended first): a move from `running` applies to the task stored as dispatched to the same agent.
    // To recovery a stored `dispatched` means the same; reads see `running` (#current).
    const running: TaskRecord = { ...t, state: 'running', updatedAt: now() };
    this.#live.set(taskId, running);
    this.#publish({ type: 'state', taskId, state: 'running', at: running.updatedAt });
    const timer = setTimeout(() => {
      this.#recordTimers.delete(taskId);
      this.#recordRunning(taskId);
    }, this.#o.config.runningRecordMs);
    timer.unref();
    this.#recordTimers.set(taskId, timer);
  }

  /**
   * Writes a task's `running` to the store, if it still runs here. Relaxed: nothing waits for the
   * commit's flush. Were a database crash to lose it, the task would read `dispatched` to this
   * agent, which a move from `running` accepts.
   */
  #recordRunning(taskId: string): void {
    const t = this.#live.get(taskId);
    if (!t || t.state !== 'running') return;
    const write = this.#o.store.tasks.update(t, { state: 'running', updatedAt: t.updatedAt }, { relaxed: true }).then(
      (moved) => {
        // Not if the task moved meanwhile (its end, a requeue): that move's copy stands.
        if (this.#live.get(taskId) !== t) return;
        // Refused: another node moved it (a cancel whose message has not arrived): not ours to keep.
        if (moved) this.#live.set(taskId, moved);
        else this.#live.delete(taskId);
      },
      (e: unknown) => this.#o.log.warn({ err: e, taskId }, 'writing that a task runs failed; the store says dispatched until it ends'),
    );
    this.#recording.add(write);
    void write.finally(() => this.#recording.delete(write));
  }

  /** Writes now the `running` of every task accepted here and not yet written (before the stores close). */
  async recordRunningNow(): Promise<void> {
    for (const [taskId, timer] of this.#recordTimers) {
      clearTimeout(timer);
      this.#recordRunning(taskId);
    }
    this.#recordTimers.clear();
    await Promise.all(this.#recording);
  }

  async progress(agent: AgentHandle, frame: { taskId: string; step: number; stepType: string; status: 'started' | 'done'; elapsedMs: number }): Promise<void> {
    const t = await this.#agentTask(agent, frame.taskId);
    if (!t || (t.state !== 'running' && t.state !== 'dispatched')) return;
    this.#publish({ type: 'progress', taskId: frame.taskId, step: frame.step, stepType: frame.stepType, status: frame.status, elapsedMs: frame.elapsedMs });
  }

  async resulted(agent: AgentHandle, frame: { taskId: string; outcome: 'succeeded' | 'failed'; result: TaskResult; error?: ErrorBody | undefined }): Promise<void> {
    const t = await this.#agentTask(agent, frame.taskId);
    agent.inFlight.delete(frame.taskId);
    if (!t || (t.state !== 'running' && t.state !== 'dispatched')) return;
    const error = frame.outcome === 'failed' ? (frame.error ?? { code: 'PAL_ERR_STEP_FAILED', message: 'the agent reported a failure' }) : undefined;
    await this.#finish(t, frame.outcome, frame.result, error);
    // The agent has room again: tasks waiting for it (past maxInFlightPerAgent) are offered.
    if (agent.inFlight.size === this.#o.config.maxInFlightPerAgent - 1) await this.#offerQueued(agent.userId);
  }

  // ── lifecycle ──────────────────────────────────────────────────────────────────────────────

  /** Recovers tasks left unfinished by a previous run: requeued (agents reconnect) or expired. */
  async start(): Promise<void> {
    const c = this.#o.cluster;
    if (c) {
      this.#stopNodeTopic = await c.bus.subscribe(nodeTopic(c.nodeId), (m) => void this.#onNodeMessage(m));
      await c.nodes.beat(c.nodeId, 3 * this.#o.config.nodeBeatMs);
      this.#beat = setInterval(() => void this.#beatAndSweep(), this.#o.config.nodeBeatMs);
      this.#beat.unref();
    }
    for (const t of await this.#o.store.tasks.listUnfinished()) {
      if (Date.parse(t.deadline) <= Date.now()) {
        await this.#finish(t, 'expired', undefined, { code: 'PAL_ERR_TASK_EXPIRED', message: 'the deadline passed while the server was down' });
        continue;
      }
      // A task an agent on another live node is running is that node's; the rest were this node's
      // (or a dead node's whose agents are gone): requeued.
      const elsewhere = t.agentId !== undefined && (await this.#remote(t.ownerUserId, t.agentId)).some((r) => r.alive);
      if (t.state !== 'queued' && !elsewhere) await this.#requeueOrFail(t, 'the server restarted while the task ran');
      const fresh = await this.#o.store.tasks.byId(t.id);
      if (fresh && !FINAL_STATES.has(fresh.state)) this.#armDeadline(fresh);
    }
  }

  stop(): void {
    // Events still waiting go now (the bus closes after this).
    for (const id of [...this.#outbox.keys()]) this.#flushEvents(id);
    this.#stopped = true;
    clearInterval(this.#beat);
    void this.#stopNodeTopic?.().catch(() => undefined);
    for (const f of this.#following.values()) void f.stop.then((stop) => stop()).catch(() => undefined);
    this.#following.clear();
    this.#routed.clear();
    this.#unsent.clear();
    this.#unrouted.clear();
    for (const timers of [this.#acceptTimers, this.#deadlineTimers, this.#graceTimers, this.#recordTimers]) {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    }
    this.#listeners.clear();
    this.#cancelled.clear();
    this.#live.clear();
    this.#history.clear();
    this.#ended = [];
  }

  /**
   * Stops dispatching to this node's agents (a shutdown is draining it): from now on tasks go to
   * agents on other nodes, or wait for one. Tasks already running here go on.
   */
  drain(): void {
    this.#draining = true;
  }

  /** Tasks this node dispatched that have not finished (what a drain waits for). */
  get running(): number {
    let n = 0;
    for (const t of this.#live.values()) if (t.state === 'dispatched' || t.state === 'running') n++;
    return n;
  }

  /** Open timers and listeners, for leak checks. */
  get openHandles(): { accept: number; deadline: number; grace: number; record: number; listeners: number; live: number; following: number; unended: number; outbox: number } {
    let unended = 0;
    for (const h of this.#history.values()) if (h.endedAt === undefined) unended++;
    return {
      accept: this.#acceptTimers.size, deadline: this.#deadlineTimers.size, grace: this.#graceTimers.size, record: this.#recordTimers.size, listeners: this.#listeners.size, live: this.#live.size,
      following: this.#following.size, unended, outbox: this.#outbox.size,
    };
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────

  #plan(sub: ReturnType<typeof parse<typeof taskSubmission.schema>>): { site: string; steps: Step[]; recipe?: string; timeoutMs: number } {
    const { config, recipes } = this.#o;
    if ((sub.recipe === undefined) === (sub.steps === undefined)) {
      throw new PalisadeError('PAL_ERR_VALIDATION', 'give either "recipe" or "steps", not both or neither', { errors: [{ path: '/recipe', message: 'recipe or steps required' }] });
    }
    if (sub.recipe !== undefined) {
      if (sub.site !== undefined) throw new PalisadeError('PAL_ERR_VALIDATION', '"site" comes from the recipe; remove it', { errors: [{ path: '/site', message: 'not allowed with a recipe' }] });
      const r = recipes.get(sub.recipe);
      const values = resolveInputs(r, sub.input);
      const site = parseOrigin(interpolate(r.site, values));
      return { site, steps: bindSteps(r.steps, values), recipe: r.name, timeoutMs: sub.timeoutMs ?? r.timeoutMs ?? config.defaultTaskTimeoutMs };
    }
    if (sub.site === undefined) throw new PalisadeError('PAL_ERR_VALIDATION', 'inline steps need a "site"', { errors: [{ path: '/site', message: 'required with steps' }] });
    const site = parseOrigin(sub.site);
    return { site, steps: bindSteps(sub.steps!, sub.input ?? {}), timeoutMs: sub.timeoutMs ?? config.defaultTaskTimeoutMs };
  }

  /** This node's agents of `userId` granted `site` (and with room for one more task, unless `busyToo`). */
  #eligible(userId: string, site: string, pinned?: string, busyToo = false): AgentHandle[] {
    const room = busyToo ? Infinity : this.#o.config.maxInFlightPerAgent;
    return this.#o.agents.forUser(userId).filter((a) => (pinned === undefined || a.id === pinned) && a.grants.has(site) && a.inFlight.size < room);
  }

  /** Present agents of the owner on other nodes (presence), with the sites they were granted. */
  async #remote(userId: string, pinned?: string): Promise<Remote[]> {
    const c = this.#o.cluster;
    if (!c) return [];
    const entries = (await this.#o.presence.forUser(userId))
      .filter((e) => e.nodeId !== c.nodeId && (pinned === undefined || e.agentId === pinned) && !this.#o.agents.get(e.agentId));
    const alive = await this.#aliveNodes(entries);
    return entries.map((e) => ({ agentId: e.agentId, nodeId: e.nodeId, grants: e.grants ?? [], alive: alive.has(e.nodeId) }));
  }

  /**
   * The user's agents present on live nodes. An entry lives long (refreshed every
   * `presenceRefreshMs`), so one whose node stopped beating is left out here, at once.
   */
  async present(userId: string): Promise<PresenceEntry[]> {
    const entries = await this.#o.presence.forUser(userId);
    if (!this.#o.cluster) return entries;
    const alive = await this.#aliveNodes(entries);
    return entries.filter((e) => alive.has(e.nodeId));
  }

  /** Which of the entries' nodes are alive: this node is; others as read from `nodes`, each reading kept one beat. */
  async #aliveNodes(entries: readonly PresenceEntry[]): Promise<Set<string>> {
    const c = this.#o.cluster!;
    const ids = [...new Set(entries.map((e) => e.nodeId))];
    // Just after this node's own Redis outage the others may not have beaten again yet (as for the
    // sweep, below): all count as alive meanwhile.
    if (Date.now() - this.#beatingSince < this.#beatGraceMs) return new Set(ids);
    const fresh = Date.now() - this.#o.config.nodeBeatMs;
    const unknown = ids.filter((id) => id !== c.nodeId && !((this.#nodeSeen.get(id)?.at ?? 0) > fresh));
    if (unknown.length > 0) {
      const alive = await c.nodes.alive(unknown);
      const at = Date.now();
      for (const id of unknown) {
        this.#nodeSeen.delete(id); // re-inserted last: the map stays in reading order, oldest first
        this.#nodeSeen.set(id, { alive: alive.has(id), at });
      }
      for (const [id, seen] of this.#nodeSeen) {
        if (this.#nodeSeen.size <= MAX_NODES_KEPT && seen.at > fresh) break;
        this.#nodeSeen.delete(id);
      }
    }
    return new Set(ids.filter((id) => id === c.nodeId || this.#nodeSeen.get(id)?.alive === true));
  }

  /** Refuses a task no connected agent could run; returns the presence it read, if it read it. */
  async #precheckRouting(userId: string, site: string, pinned?: string): Promise<Remote[] | undefined> {
    const connected = this.#o.agents.forUser(userId).filter((a) => pinned === undefined || a.id === pinned);
    if (connected.length > 0 && this.#eligible(userId, site, pinned, true).length > 0) return undefined;
    const remote = await this.#remote(userId, pinned);
    if (connected.length === 0 && remote.length === 0) {
      throw new PalisadeError('PAL_ERR_NO_AGENT', pinned ? `agent ${pinned} is not connected` : 'none of your agents is connected; open the extension and sign in, or submit with "waitForAgent": true');
    }
    if (!remote.some((r) => r.grants.includes(site))) {
      throw new PalisadeError('PAL_ERR_SITE_NOT_GRANTED', `no connected agent has been granted ${site}; grant it in the extension's popup`);
    }
    return remote;
  }

  /**
   * Dispatches a queued task to the least busy eligible agent on this node; failing that (and unless
   * `localOnly`, as when another node asked), hands it to a node where an eligible agent is present
   * (`remote`: presence already read for it, else read now).
   */
  async #tryDispatch(t: TaskRecord, localOnly = false, old = false, remote?: Remote[]): Promise<void> {
    if (this.#stopped || t.state !== 'queued') return;
    const candidates = this.#draining ? [] : this.#eligible(t.ownerUserId, t.site, t.pinnedAgentId);
    if (candidates.length === 0) {
      if (!localOnly) await this.#routeRemote(t, old, remote);
      return;
    }
    const agent = leastBusy(candidates);
    const moved = await this.#move(t, 'dispatched', { agentId: agent.id, attempts: t.attempts + 1, nodeId: this.#o.cluster?.nodeId });
    if (!moved) return;
    this.#handTo(agent, moved);
  }

  /**
   * The agent a new task goes to, chosen before the task is stored: the least busy eligible one on
   * this node (`here`: its place is taken under `taskId` at once, so parallel submissions cannot
   * overfill it), else one present on a live node. None (all busy, this node draining, presence
   * unreadable): the task is stored queued and dispatched as before.
   */
  async #choose(taskId: string, userId: string, site: string, pinned: string | undefined, remote: Remote[] | undefined): Promise<Chosen | undefined> {
    const candidates = this.#draining ? [] : this.#eligible(userId, site, pinned);
    if (candidates.length > 0) {
      const here = leastBusy(candidates);
      here.inFlight.add(taskId);
      return { agentId: here.id, nodeId: this.#o.cluster?.nodeId, here };
    }
    if (!this.#o.cluster) return undefined;
    const present = remote ?? (await this.#remote(userId, pinned).catch(() => []));
    const live = present.filter((r) => r.alive && r.grants.includes(site));
    if (live.length === 0) return undefined;
    const target = anyOf(live);
    return { agentId: target.agentId, nodeId: target.nodeId };
  }

  /** Sends `t`, stored as dispatched to `agent` (connected here), to it; this node now holds it. */
  #handTo(agent: AgentHandle, t: TaskRecord): void {
    this.#live.set(t.id, t);
    // The node that runs a task also enforces its deadline (the submitting node may be gone).
    if (!this.#deadlineTimers.has(t.id)) this.#armDeadline(t);
    agent.inFlight.add(t.id);
    agent.send({ type: 'task.dispatch', taskId: t.id, site: t.site, steps: t.steps, deadline: Date.parse(t.deadline) });
    this.#publish({ type: 'state', taskId: t.id, state: 'dispatched', at: t.updatedAt });
    dropTimer(this.#acceptTimers, t.id);
    const timer = setTimeout(() => {
      this.#acceptTimers.delete(t.id);
      // A store failure here must not become an unhandled rejection (it would end the process).
      this.#acceptTimedOut(t.id, agent).catch((e: unknown) => this.#o.log.error({ err: e, taskId: t.id }, 'handling an accept timeout failed'));
    }, this.#o.config.acceptTimeoutMs);
    timer.unref();
    this.#acceptTimers.set(t.id, timer);
  }

  /**
   * A task stored as dispatched to an agent on this node, by the node that stored it (`t` came with
   * its message) or pointed out again (`t` read from the store): sent to the agent, unless this node
   * holds it already. Read from the store (or heard of before), it is first confirmed by a
   * compare-and-set, so a task that ended or moved meanwhile is not sent again. The agent gone,
   * full, no longer granted the site, or this node draining: the task goes back to the queue (the
   * attempt not counted) and on to another agent.
   */
  async #take(t: TaskRecord, fromStore: boolean): Promise<void> {
    // Held: sent (or being sent: the place its submission reserved) to an agent here, or waiting for
    // one to come back. A task this node was told is cancelled is over (a cancel may arrive while the
    // store is asked).
    const holds = () => this.#stopped || this.#live.has(t.id) || this.#graceTimers.has(t.id)
      || this.#o.agents.get(t.agentId!)?.inFlight.has(t.id) === true || this.#cancelled.has(t.id);
    if (holds()) return;
    // A task this node has heard of before (its events are kept a while), or stored longer ago than
    // a beat, is not new: a message bringing it may be a duplicate or late, and the store decides.
    const confirm = fromStore || this.#history.has(t.id) || Date.now() - Date.parse(t.updatedAt) > this.#o.config.nodeBeatMs;
    const task = confirm ? await this.#o.store.tasks.update(t, { updatedAt: now() }) : t;
    if (!task || holds()) return;
    const agent = this.#o.agents.get(task.agentId!);
    if (agent && !this.#draining && agent.grants.has(task.site) && agent.inFlight.size < this.#o.config.maxInFlightPerAgent) {
      this.#handTo(agent, task);
      return;
    }
    const moved = await this.#move(task, 'queued', { agentId: undefined, nodeId: undefined, attempts: Math.max(0, task.attempts - 1) });
    if (!moved) return;
    this.#publish({ type: 'state', taskId: t.id, state: 'queued', at: moved.updatedAt });
    await this.#tryDispatch(moved);
    this.#followQueued(t.id);
  }

  /**
   * Says this node is alive; if no other node swept within the last beat, offers stale queued tasks
   * again and takes back dead nodes' tasks. One sweep runs at a time (a slow Redis must not pile them
   * up), but the beat goes out beside a running sweep: a sweep slowed by Redis (after a failover each
   * call may wait out the command timeout, for every stale task in turn) must not let this node's beat
   * expire, or the other nodes judge it dead and route around it.
   */
  async #beatAndSweep(): Promise<void> {
    const beaten = this.#beatOnce();
    if (this.#sweeping) return void (await beaten);
    this.#sweeping = true;
    try {
      if (await beaten) await this.#sweepOnce();
    } catch (e) {
      this.#o.log.warn({ err: e }, 'node sweep failed');
    } finally {
      this.#sweeping = false;
    }
  }

  /** One beat at a time; false if it failed or the previous one is still in flight (Redis is slow: no sweep then). */
  async #beatOnce(): Promise<boolean> {
    const c = this.#o.cluster!;
    if (this.#beating) return false;
    this.#beating = true;
    try {
      await c.nodes.beat(c.nodeId, 3 * this.#o.config.nodeBeatMs);
      if (this.#beatingSince === Infinity) this.#beatingSince = Date.now();
      return true;
    } catch (e) {
      this.#beatingSince = Infinity;
      this.#o.log.warn({ err: e }, 'node beat failed');
      return false;
    } finally {
      this.#beating = false;
    }
  }

  async #sweepOnce(): Promise<void> {
    const c = this.#o.cluster!;
    const beat = this.#o.config.nodeBeatMs;
    const started = Date.now();
    await this.#republish();
    await this.#followUnrouted();
    if (!(await c.counters.attempt([{ key: 'tasks:sweep', limit: 1 }], beat)).allowed) return;
    const unfinished = await this.#o.store.tasks.listUnfinished();
    const stale = Date.now() - 2 * beat;
    for (const t of unfinished) {
      if (t.state !== 'queued' || Date.parse(t.updatedAt) >= stale || this.#stopped) continue;
      // One task failing to be offered (Redis again) must not keep the others from their turn.
      await this.#tryDispatch(t, false, true).catch((e: unknown) => {
        this.#beatingSince = Infinity;
        this.#o.log.warn({ err: e, taskId: t.id }, 'offering a queued task again failed');
      });
    }
    // Stored dispatched to a node for two beats: its message may have been lost (or its sender died
    // before sending it). That node is asked to look again; if it holds the task (its agent has not
    // accepted it yet), it ignores this. Asked of a dead node, nobody hears it: that is for below.
    for (const t of unfinished) {
      if (t.state !== 'dispatched' || t.nodeId === undefined || Date.parse(t.updatedAt) >= stale || this.#stopped) continue;
      await this.#pointOut(t).catch((e: unknown) => this.#o.log.warn({ err: e, taskId: t.id }, 'pointing a dispatched task out to its node again failed'));
    }
    // Other nodes could not beat while this one could not either (Redis was down: their beats
    // may have expired), and may get Redis back later than this one (ioredis waits up to
    // REDIS_RECONNECT_MAX_MS between attempts): none is judged dead until they have had time to
    // beat again — nor by a sweep so slow (Redis stalled under it) that their beats expired meanwhile.
    if (Date.now() - this.#beatingSince < this.#beatGraceMs || Date.now() - started > 3 * beat) return;
    const held = unfinished.filter((t) => t.state !== 'queued' && t.nodeId !== undefined && t.nodeId !== c.nodeId);
    if (held.length === 0) return;
    const alive = await c.nodes.alive([...new Set(held.map((t) => t.nodeId!))]);
    const lost = new Set<string>();
    for (const t of held) {
      if (alive.has(t.nodeId!) || this.#stopped) continue;
      lost.add(t.nodeId!);
      await this.#requeueOrFail(t, `node ${t.nodeId} stopped`);
    }
    for (const nodeId of lost) {
      this.#o.events.emit({
        class: 'api_activity', activity: 'node.lost', outcome: 'failure', severity: 'high', code: 'PAL_ERR_AGENT_LOST',
        message: `node ${nodeId} stopped beating; the tasks its agents were running were taken back`, data: { nodeId },
      });
    }
  }

  /** Asks the node a task is stored dispatched to to look at it again (see #take). */
  async #pointOut(t: TaskRecord): Promise<void> {
    const c = this.#o.cluster!;
    if (t.nodeId === c.nodeId) await this.#take(t, true);
    else await c.bus.publish(nodeTopic(t.nodeId!), JSON.stringify({ k: 'dispatch', taskId: t.id } satisfies NodeMessage));
  }

  /**
   * Asks a node where an eligible agent is present to dispatch `t`, following its events first.
   * `old`: `t` was read a while ago (the sweeper's list), so it may have ended before this node followed it.
   */
  async #routeRemote(t: TaskRecord, old = false, present?: Remote[]): Promise<void> {
    const c = this.#o.cluster;
    if (!c) return;
    const eligible = (present ?? (await this.#remote(t.ownerUserId, t.pinnedAgentId))).filter((r) => r.grants.includes(t.site));
    // Agents on nodes that beat first. If none does (after a Redis failover a node may take a while
    // to beat again), the others are tried: a dispatch sent to a dead node is lost, and the sweeper
    // offers the task again — better than refusing work a live node could do.
    const live = eligible.filter((r) => r.alive);
    const remote = live.length > 0 ? live : eligible;
    if (remote.length === 0) return;
    const target = anyOf(remote);
    // A task just stored travels with the message (the other node need not read it back; its
    // compare-and-set still decides); one read a while ago (`old`) does not.
    await this.#sendRemote(t.id, target.nodeId, old ? undefined : t, old);
  }

  /**
   * Tells node `nodeId` to look at a task (`task`: as just stored, sent along), following the task's
   * events first. `old`: the task was read a while ago, so it may have ended before this node followed it.
   */
  async #sendRemote(taskId: string, nodeId: string, task?: TaskRecord, old = false): Promise<void> {
    if (!this.#routed.has(taskId)) {
      await this.#followRouted(taskId);
      // Its end may have been published before this node followed it: read it again, now that no
      // event can be missed, and stop (forget it) if it ended.
      if (old) {
        await this.#catchUp(taskId);
        if (!this.#following.has(taskId)) return;
      }
    }
    // The other node moves it from here on: this node reads it from the store.
    this.#live.delete(taskId);
    await this.#o.cluster!.bus.publish(nodeTopic(nodeId), JSON.stringify({ k: 'dispatch', taskId, task } satisfies NodeMessage));
  }

  /** Follows the events of a task this node hands to another node (until it ends); refused, it is not marked routed. */
  async #followRouted(taskId: string): Promise<void> {
    if (this.#routed.has(taskId)) return;
    this.#routed.add(taskId);
    try {
      await this.#follow(taskId);
    } catch (e) {
      // Not following: the next offer (the sweeper's) follows it again.
      this.#routed.delete(taskId);
      throw e;
    }
  }

  /** Stops following a task as routed (nothing if this node does not). */
  #unroute(taskId: string): void {
    if (this.#routed.delete(taskId)) this.#unfollow(taskId);
  }

  async #onNodeMessage(raw: string): Promise<void> {
    if (raw === '') {
      // The bus reconnected (see hot/redis.ts): dispatch messages sent meanwhile are lost, and so
      // may be presence (Redis restarted empty): this node's agents are recorded again, tasks stored
      // dispatched to it that it does not hold are taken, and queued tasks are offered to its agents —
      // now rather than after the sweeper's two beats.
      try {
        const unfinished = await this.#o.store.tasks.listUnfinished();
        const me = this.#o.cluster?.nodeId;
        for (const t of unfinished) if (t.state === 'dispatched' && t.nodeId === me) await this.#take(t, true);
        if (this.#o.agents.size === 0) return;
        for (const a of this.#o.agents.all()) a.present();
        await this.#offerQueued(undefined, unfinished);
      } catch (e) {
        this.#o.log.warn({ err: e }, 'taking or offering tasks after the bus reconnected failed');
      }
      return;
    }
    let m: NodeMessage;
    try {
      m = JSON.parse(raw) as NodeMessage;
    } catch {
      return;
    }
    try {
      if (m.k === 'dispatch') {
        const sent = m.task?.id === m.taskId && (m.task.state === 'queued' || m.task.state === 'dispatched') ? m.task : undefined;
        const t = sent ?? (await this.#o.store.tasks.byId(m.taskId));
        // Queued: a draining node passes it on to an agent present on another node (its own take no more).
        if (t?.state === 'queued') await this.#tryDispatch(t, !this.#draining);
        else if (t?.state === 'dispatched' && t.nodeId === this.#o.cluster?.nodeId) await this.#take(t, sent === undefined);
      } else if (m.k === 'cancel') {
        // A dispatch of it arriving later (sent before the cancel by a slower node) is checked against the store.
        this.#cancelled.add(m.taskId);
        if (this.#cancelled.size > HISTORY_TASKS) this.#cancelled.delete(this.#cancelled.values().next().value!);
        this.#dropLocal(m.taskId);
        // Its end event goes to the followers of `task:<id>`, which this node is not: the history
        // it kept (dispatched, progress) is let go after the retention like an ended task's.
        this.#historyEnded(m.taskId);
        const agent = this.#o.agents.get(m.agentId);
        agent?.inFlight.delete(m.taskId);
        agent?.send({ type: 'task.cancel', taskId: m.taskId, reason: m.reason });
      }
    } catch (e) {
      this.#o.log.error({ err: e, message: m.k, taskId: m.taskId }, 'a message from another node failed');
    }
  }

  /** Forgets what this node holds for a task another node finished. */
  #dropLocal(taskId: string): void {
    this.#clearTimers(taskId);
    this.#live.delete(taskId);
    // Its events still waiting here would reach the other nodes after its end: they go no further.
    this.#takeEvents(taskId);
  }

  /** Stops the task's accept, reconnect-grace and deadline timers: it is over, or over here. */
  #clearTimers(taskId: string): void {
    for (const timers of [this.#acceptTimers, this.#graceTimers, this.#recordTimers, this.#deadlineTimers]) dropTimer(timers, taskId);
  }

  /** Starts (or adds a reason for) receiving a task's events published by other nodes. */
  async #follow(taskId: string): Promise<void> {
    const c = this.#o.cluster;
    if (!c) return;
    const f = this.#following.get(taskId);
    if (f) {
      f.refs++;
      await f.stop;
      return;
    }
    const stop = c.bus.subscribe(taskTopic(taskId), (raw) => this.#onBusEvent(taskId, raw));
    const entry = { refs: 1, stop };
    this.#following.set(taskId, entry);
    try {
      await stop;
    } catch (e) {
      // A failed subscription must not be shared with later callers (they would all fail with it).
      if (this.#following.get(taskId) === entry) this.#following.delete(taskId);
      throw e;
    }
  }

  #unfollow(taskId: string): void {
    const f = this.#following.get(taskId);
    if (!f || --f.refs > 0) return;
    this.#following.delete(taskId);
    void f.stop.then((stop) => stop()).catch((e: unknown) => this.#o.log.warn({ err: e, taskId }, 'unsubscribing from a task failed'));
    this.#letGo(taskId);
  }

  /**
   * This node hears no more of a task that has not ended here (it follows it no more, nobody here
   * listens, and it does not hold it): the events it kept are let go after the retention like an
   * ended task's, instead of staying until the cap pushes them out.
   */
  #letGo(taskId: string): void {
    if (!this.#following.has(taskId) && !this.#listeners.has(taskId) && !this.#live.has(taskId)) this.#historyEnded(taskId);
  }

  #onBusEvent(taskId: string, raw: string): void {
    if (raw === '') {
      void this.#catchUp(taskId).catch((e: unknown) => this.#o.log.warn({ err: e, taskId }, 'reading a followed task again failed'));
      return;
    }
    let m: BusEvent;
    try {
      m = JSON.parse(raw) as BusEvent;
    } catch {
      return;
    }
    if (m.from === this.#o.cluster?.nodeId) return;
    for (const event of m.before ? [...m.before, m.event] : [m.event]) {
      if (event.type === 'end') this.#dropLocal(taskId);
      this.#publishLocal(event);
      if (event.type === 'end') {
        this.#forget(taskId);
        return;
      }
    }
  }

  /**
   * The bus reconnected (an empty message, see hot/redis.ts): the task's events published meanwhile
   * are lost. If it ended, its watchers here get the end from the store instead of waiting forever.
   */
  async #catchUp(taskId: string): Promise<void> {
    const t = await this.#o.store.tasks.byId(taskId);
    // Followed no more: the end came through the bus after all.
    if (!t || !FINAL_STATES.has(t.state) || !this.#following.has(taskId)) return;
    this.#dropLocal(taskId);
    this.#publishLocal({ type: 'end', task: toView(t) });
    this.#forget(taskId);
  }

  /** A task ended (here or elsewhere): stop following it for the reasons that end with it. */
  #forget(taskId: string): void {
    this.#unroute(taskId);
    this.#listeners.delete(taskId);
    const f = this.#following.get(taskId);
    if (f) {
      // Watchers are gone with the end event: nothing else keeps the subscription.
      this.#following.delete(taskId);
      void f.stop.then((stop) => stop()).catch(() => undefined);
    }
  }

  async #acceptTimedOut(taskId: string, agent: AgentHandle): Promise<void> {
    const t = this.#live.get(taskId) ?? (await this.#o.store.tasks.byId(taskId));
    agent.inFlight.delete(taskId);
    if (t && t.state === 'dispatched' && t.agentId === agent.id) {
      // The slow agent must not run it beside the next one.
      agent.send({ type: 'task.cancel', taskId, reason: 'not accepted in time' });
      await this.#requeueOrFail(t, 'the agent did not accept the task in time');
    }
  }

  async #requeueOrFail(t: TaskRecord, reason: string): Promise<void> {
    dropTimer(this.#acceptTimers, t.id);
    dropTimer(this.#recordTimers, t.id);
    if (t.attempts >= this.#o.config.maxAttempts) {
      await this.#finish(t, 'failed', undefined, { code: 'PAL_ERR_AGENT_LOST', message: `${reason}; gave up after ${t.attempts} attempts` });
      return;
    }
    const moved = await this.#move(t, 'queued', { agentId: undefined, nodeId: undefined });
    if (!moved) {
      // Moved on meanwhile (its agent took it back through another node, or it ended there).
      this.#letGo(t.id);
      return;
    }
    this.#o.log.warn({ taskId: t.id, reason }, 'task requeued');
    this.#publish({ type: 'state', taskId: t.id, state: 'queued', at: moved.updatedAt });
    await this.#tryDispatch(moved);
    this.#followQueued(t.id);
  }

  async #finish(t: TaskRecord, state: TaskState, result?: TaskResult, error?: { code: ErrorCode | string; message: string; step?: number }): Promise<TaskRecord | undefined> {
    // Its events waiting here go before its end is stored: a node whose reader finds the task ended
    // in the store has heard them (else an event stream opened there then would lack them).
    this.#flushEvents(t.id);
    const moved = await this.#move(t, state, { result, error });
    if (!moved) return undefined;
    this.#clearTimers(t.id);
    if (t.agentId !== undefined && (state === 'cancelled' || state === 'expired')) {
      const agent = this.#o.agents.get(t.agentId);
      if (agent) {
        agent.inFlight.delete(t.id);
        agent.send({ type: 'task.cancel', taskId: t.id, reason: state });
      } else {
        await this.#cancelRemote(t, t.agentId, state);
      }
    }
    this.#publish({ type: 'end', task: toView(moved) });
    this.#forget(t.id);
    return moved;
  }

  /** Tells the node the agent is connected to that the task it runs is over. */
  async #cancelRemote(t: TaskRecord, agentId: string, reason: string): Promise<void> {
    const c = this.#o.cluster;
    if (!c) return;
    const at = (await this.#o.presence.forUser(t.ownerUserId)).find((e) => e.agentId === agentId);
    if (!at || at.nodeId === c.nodeId) return;
    await c.bus.publish(nodeTopic(at.nodeId), JSON.stringify({ k: 'cancel', taskId: t.id, agentId, reason } satisfies NodeMessage));
  }

  async #move(t: TaskRecord, to: TaskState, patch: Partial<TaskRecord>, o?: { relaxed?: boolean }): Promise<TaskRecord | undefined> {
    if (!canMove(t.state, to)) return undefined;
    const moved = await this.#o.store.tasks.update(t, { ...patch, state: to, updatedAt: now() }, o);
    // A failed compare-and-set means another node (or call) moved it: the cached copy is stale.
    if (!moved || FINAL_STATES.has(moved.state) || (this.#o.cluster && moved.state === 'queued')) this.#live.delete(t.id);
    else this.#live.set(t.id, moved);
    return moved;
  }

  #armDeadline(t: TaskRecord): void {
    // A whole number of seconds (at most one late): one timer list per distinct delay (see wholeSeconds).
    const ms = wholeSeconds(Date.parse(t.deadline) - Date.now());
    const timer = setTimeout(() => {
      this.#deadlineTimers.delete(t.id);
      void (async () => {
        const fresh = await this.#o.store.tasks.byId(t.id);
        if (fresh && !FINAL_STATES.has(fresh.state)) {
          await this.#finish(fresh, 'expired', undefined, { code: 'PAL_ERR_TASK_EXPIRED', message: 'the task did not finish before its deadline' });
        } else if (fresh && this.#following.has(t.id)) {
          // Ended elsewhere, and its end never reached this node: its watchers get it now, and it is let go.
          await this.#catchUp(t.id);
        }
      })().catch((e: unknown) => this.#o.log.error({ err: e, taskId: t.id }, 'expiring a task failed'));
    }, ms);
    timer.unref();
    this.#deadlineTimers.set(t.id, timer);
  }

  /**
   * The task as callers should see it: this node's copy when it alone moves tasks, else the store's —
   * `running` if the store does not have it yet but this node heard it announced (the store hears it
   * `runningRecordMs` late), so a read never goes back from what a watcher here was told.
   */
  async #current(id: string): Promise<TaskRecord | undefined> {
    const t = (this.#o.cluster ? undefined : this.#live.get(id)) ?? (await this.#o.store.tasks.byId(id));
    if (t?.state === 'dispatched' && this.#lastHeardState(id) === 'running') return { ...t, state: 'running' };
    return t;
  }

  /** The latest state this node heard announced for the task (its kept events), if any. */
  #lastHeardState(id: string): TaskState | undefined {
    const events = this.#history.get(id)?.events;
    for (let i = (events?.length ?? 0) - 1; i >= 0; i--) {
      const e = events![i]!.event;
      if (e.type === 'state') return e.state;
      if (e.type === 'end') return e.task.state;
    }
    return undefined;
  }

  async #owned(p: Principal, id: string): Promise<TaskRecord> {
    const t = await this.#current(id);
    // Another user's task is reported as missing, so ids cannot be probed.
    if (!t || t.ownerUserId !== p.userId) throw new PalisadeError('PAL_ERR_NOT_FOUND', `no task ${id}`);
    return t;
  }

  async #agentTask(agent: AgentHandle, taskId: string): Promise<TaskRecord | undefined> {
    const t = this.#live.get(taskId) ?? (await this.#o.store.tasks.byId(taskId));
    if (!t || t.agentId !== agent.id) {
      this.#o.events.emit({
        class: 'authorization', activity: 'agent.task.frame', outcome: 'failure', code: 'PAL_ERR_FORBIDDEN',
        message: `agent ${agent.id} reported on task ${taskId} it does not hold`, actor: { userId: agent.userId, agentId: agent.id },
      });
      return undefined;
    }
    return t;
  }

  /**
   * Publishes a task event to this node's watchers at once and, in a cluster, to every node following
   * the task: an event before the end waits up to `taskEventBatchMs` for the task's next ones, and
   * they go in one message (one PUBLISH, one message to read on each following node); the end goes
   * at once, with the events waiting.
   */
  #publish(event: TaskEvent): void {
    const c = this.#o.cluster;
    if (c) {
      const id = event.type === 'end' ? event.task.id : event.taskId;
      const box = this.#outbox.get(id);
      // The end, or the task going back to the queue (another node may run it next), goes at once.
      const atOnce = event.type === 'end' || (event.type === 'state' && event.state === 'queued');
      if (box) {
        box.events.push(event);
        if (atOnce || box.events.length >= MAX_BATCHED_EVENTS) this.#flushEvents(id);
      } else if (atOnce || this.#o.config.taskEventBatchMs <= 0 || this.#stopped) {
        this.#sendEvents(id, [event]);
      } else {
        this.#outbox.set(id, { events: [event], timer: setTimeout(() => this.#flushEvents(id), this.#o.config.taskEventBatchMs).unref() });
      }
    }
    this.#publishLocal(event);
  }

  /** Sends the task's events waiting in the outbox, if any. */
  #flushEvents(taskId: string): void {
    const events = this.#takeEvents(taskId);
    if (events) this.#sendEvents(taskId, events);
  }

  /** Takes the task's events waiting in the outbox out of it (its timer stopped), if any. */
  #takeEvents(taskId: string): TaskEvent[] | undefined {
    const box = this.#outbox.get(taskId);
    if (!box) return undefined;
    clearTimeout(box.timer);
    this.#outbox.delete(taskId);
    return box.events;
  }

  #sendEvents(taskId: string, events: TaskEvent[]): void {
    const c = this.#o.cluster!;
    const message: BusEvent = { from: c.nodeId, event: events.at(-1)! };
    if (events.length > 1) message.before = events.slice(0, -1);
    c.bus.publish(taskTopic(taskId), JSON.stringify(message)).catch((e: unknown) => {
      this.#o.log.warn({ err: e, taskId }, 'a task event did not reach the other nodes');
      // Watchers elsewhere wait for the end: it is published again once Redis is back (#republish).
      const end = events.at(-1)!;
      if (end.type !== 'end') return;
      this.#unsent.delete(taskId);
      this.#unsent.set(taskId, end);
      if (this.#unsent.size > HISTORY_TASKS) this.#unsent.delete(this.#unsent.keys().next().value!);
    });
  }

  /**
   * A task this node left queued (stored so, or requeued) that no agent could take now: another node
   * may run it (one of its owner's agents connects there). This node, which keeps its deadline,
   * follows it to hear its end (else it would hold the deadline timer until the deadline); one that
   * ended before the subscription is read from the store. Refused (Redis unreachable): followed once
   * the bus is back. Nothing to do if this node keeps no deadline for it, holds it or follows it
   * already, or is not clustered.
   */
  #followQueued(taskId: string): void {
    if (!this.#o.cluster || this.#stopped || !this.#deadlineTimers.has(taskId) || this.#routed.has(taskId) || this.#live.has(taskId)) return;
    void (async () => {
      await this.#followRouted(taskId);
      await this.#catchUp(taskId);
    })().catch((e: unknown) => {
      this.#o.log.warn({ err: e, taskId }, 'following a queued task failed; it is followed once the bus is back');
      this.#unrouted.add(taskId);
    });
  }

  /** Follows the tasks accepted here that could not be routed, as if routed; ends those that ended meanwhile. */
  async #followUnrouted(): Promise<void> {
    for (const id of [...this.#unrouted]) {
      await this.#followRouted(id);
      this.#unrouted.delete(id);
      await this.#catchUp(id);
    }
  }

  /** Publishes again the `end` events the bus refused, oldest first; stops at the first refusal. */
  async #republish(): Promise<void> {
    const c = this.#o.cluster!;
    for (const [id, event] of [...this.#unsent]) {
      await c.bus.publish(taskTopic(id), JSON.stringify({ from: c.nodeId, event } satisfies BusEvent));
      if (this.#unsent.get(id) === event) this.#unsent.delete(id);
    }
  }

  #publishLocal(event: TaskEvent): void {
    const id = event.type === 'end' ? event.task.id : event.taskId;
    const seq = this.#remember(id, event);
    const set = this.#listeners.get(id);
    if (!set) return;
    for (const l of [...set]) {
      try {
        l(event, seq);
      } catch (e) {
        this.#o.log.error({ err: e }, 'task listener failed');
      }
    }
  }

  /**
   * Appends to the task's bounded event history; drops expired and excess histories. An `end`
   * event is kept without its result (a replay sends the stored task instead), so the history of
   * a finished task stays small.
   */
  #remember(id: string, event: TaskEvent): number {
    const at = Date.now();
    let h = this.#history.get(id);
    if (!h) {
      this.#prune(at);
      this.#history.set(id, (h = { events: [], next: 0 }));
    }
    // Every event heard restarts the history's retention: one let go (#letGo) but heard of again
    // (dispatched to an agent here after all) is kept again; an end starts it afresh below.
    h.endedAt = undefined;
    const seq = h.next++;
    const kept: TaskEvent = event.type === 'end' ? { type: 'end', task: { ...event.task, result: undefined } } : event;
    h.events.push({ seq, event: kept });
    if (h.events.length > HISTORY_EVENTS_PER_TASK) {
      const i = h.events.findIndex((e) => e.event.type === 'progress');
      h.events.splice(i >= 0 ? i : 0, 1);
    }
    if (event.type === 'end') this.#historyEnded(id);
    return seq;
  }

  /** Marks a task's history ended (its end event will not pass here), so #prune lets it go in time. */
  #historyEnded(id: string): void {
    const h = this.#history.get(id);
    if (!h || h.endedAt !== undefined) return;
    h.endedAt = Date.now();
    this.#ended.push([id, h.endedAt]);
  }

  /** Drops histories of tasks that ended more than the retention ago; past the cap, the oldest. */
  #prune(at: number): void {
    // Ended tasks are queued in the order they ended, so expired ones are all at the front.
    while (this.#ended.length > 0) {
      const [id, endedAt] = this.#ended[0]!;
      if (at - endedAt < HISTORY_RETENTION_MS) break;
      this.#ended.shift();
      if (this.#history.get(id)?.endedAt === endedAt) this.#history.delete(id);
    }
    while (this.#history.size >= HISTORY_TASKS) this.#history.delete(this.#history.keys().next().value!);
    if (this.#ended.length > HISTORY_TASKS * 2) this.#ended = this.#ended.filter(([id]) => this.#history.has(id));
  }
}
