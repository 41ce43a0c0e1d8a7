/**
 * @module gateway/registry — which agents are connected to this node, what they were granted,
 * and how many tasks each is running. In-process (one node); issue 5 puts presence in Redis.
 */
import type { ServerFrame } from '@palisade/protocol';

/** A connected agent as the router sees it. */
export interface AgentHandle {
  readonly id: string;
  readonly userId: string;
  readonly name: string;
  grants: ReadonlySet<string>;
  readonly inFlight: Set<string>;
  send(frame: ServerFrame): void;
  /** Closes the agent's connection (a newer connection of the same agent replaced it). */
  close(code: number, reason: string): void;
  /** Records again that the agent is connected here (its presence, which Redis may have lost). */
  present(): void;
}

export class AgentRegistry {
  readonly #byId = new Map<string, AgentHandle>();
  readonly #byUser = new Map<string, Set<AgentHandle>>();

  add(agent: AgentHandle): AgentHandle | undefined {
    const previous = this.#byId.get(agent.id);
    if (previous) this.remove(previous);
    this.#byId.set(agent.id, agent);
    let set = this.#byUser.get(agent.userId);
    if (!set) this.#byUser.set(agent.userId, (set = new Set()));
    set.add(agent);
    return previous;
  }

  /** Removes `agent` if it is still the registered handle for its id. */
  remove(agent: AgentHandle): boolean {
    if (this.#byId.get(agent.id) !== agent) return false;
    this.#byId.delete(agent.id);
    const set = this.#byUser.get(agent.userId);
    set?.delete(agent);
    if (set?.size === 0) this.#byUser.delete(agent.userId);
    return true;
  }

  get(id: string): AgentHandle | undefined {
    return this.#byId.get(id);
  }

  forUser(userId: string): AgentHandle[] {
    return [...(this.#byUser.get(userId) ?? [])];
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Every agent connected to this node. */
  all(): IterableIterator<AgentHandle> {
    return this.#byId.values();
  }
}
