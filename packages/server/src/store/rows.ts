/**
 * @module store/rows — mapping between database rows and records, shared by the SQLite and
 * PostgreSQL adapters. The two differ only in how JSON and booleans come back from the driver,
 * which each passes in as a `Decode`.
 */
import type { AgentRecord, ApiClientRecord, OidcRecord, TaskRecord, UserRecord } from './types.ts';

export type Row = Record<string, unknown>;

/** How a driver returns JSON columns and booleans. */
export interface Decode {
  json<T>(v: unknown): T;
  bool(v: unknown): boolean;
}

export const opt = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));

/** Task record fields and their column names (the fields an update may set). */
export const TASK_COLUMNS: Record<string, string> = {
  clientId: 'client_id', recipe: 'recipe', site: 'site', steps: 'steps', state: 'state', agentId: 'agent_id', pinnedAgentId: 'pinned_agent_id',
  attempts: 'attempts', idempotencyKey: 'idempotency_key', requestHash: 'request_hash', waitForAgent: 'wait_for_agent',
  createdAt: 'created_at', updatedAt: 'updated_at', deadline: 'deadline', result: 'result', error: 'error', nodeId: 'node_id',
};
/** Task fields stored as JSON. */
export const TASK_JSON_FIELDS: ReadonlySet<string> = new Set(['steps', 'result', 'error']);

/** The row mappers for one driver. */
export function mappers(d: Decode) {
  return {
    user: (r: Row): UserRecord => ({
      id: String(r.id), username: String(r.username), passwordHash: String(r.password_hash), role: r.role === 'admin' ? 'admin' : 'user', createdAt: String(r.created_at),
    }),
    client: (r: Row): ApiClientRecord => ({
      clientId: String(r.client_id), ownerUserId: String(r.owner_user_id), name: String(r.name), secretHash: String(r.secret_hash),
      scopes: d.json<string[]>(r.scopes), createdAt: String(r.created_at), revokedAt: opt(r.revoked_at),
    }),
    agent: (r: Row): AgentRecord => ({
      id: String(r.id), userId: String(r.user_id), instanceId: String(r.instance_id), name: String(r.name), version: String(r.version),
      grants: d.json<string[]>(r.grants), createdAt: String(r.created_at), lastSeenAt: String(r.last_seen_at),
    }),
    task: (r: Row): TaskRecord => lazySteps({
      id: String(r.id), ownerUserId: String(r.owner_user_id), clientId: String(r.client_id), recipe: opt(r.recipe), site: String(r.site),
      steps: r.steps, state: String(r.state) as TaskRecord['state'], agentId: opt(r.agent_id), pinnedAgentId: opt(r.pinned_agent_id),
      attempts: Number(r.attempts), idempotencyKey: opt(r.idempotency_key), requestHash: String(r.request_hash), waitForAgent: d.bool(r.wait_for_agent),
      createdAt: String(r.created_at), updatedAt: String(r.updated_at), deadline: String(r.deadline),
      result: r.result == null ? undefined : d.json(r.result), error: r.error == null ? undefined : d.json(r.error), nodeId: opt(r.node_id),
    }, d),
    oidc: (r: Row): OidcRecord => ({
      payload: d.json(r.payload), expiresAt: r.expires_at == null ? undefined : Number(r.expires_at), grantId: opt(r.grant_id), userCode: opt(r.user_code), uid: opt(r.uid), accountId: opt(r.account_id),
    }),
  };
}

/**
 * Steps are read on every state change but used only at dispatch: they are decoded on first use.
 * (A record otherwise behaves as plain data: `steps` is enumerable and can be assigned.)
 */
function lazySteps(record: Omit<TaskRecord, 'steps'> & { steps: unknown }, d: Decode): TaskRecord {
  const raw = record.steps;
  let decoded: TaskRecord['steps'] | undefined;
  return Object.defineProperty(record, 'steps', {
    enumerable: true,
    configurable: true,
    get: () => (decoded ??= d.json<TaskRecord['steps']>(raw)),
    set: (v: TaskRecord['steps']) => (decoded = v),
  }) as TaskRecord;
}

/**
 * `current` with `patch` applied (a field patched to undefined is removed), as the store now holds it.
 * A new plain object, built field by field: copying property descriptors made every state change
 * cost ~10 µs (the object went to dictionary mode). Only `steps` keeps its descriptor (decoded lazily).
 */
export function withPatch(current: TaskRecord, patch: Partial<TaskRecord>): TaskRecord {
  const from = current as unknown as Record<string, unknown>;
  const changes = patch as Record<string, unknown>;
  const removed = (k: string) => Object.hasOwn(changes, k) && changes[k] === undefined && Object.hasOwn(TASK_COLUMNS, k);
  const next: Record<string, unknown> = {};
  for (const k of Object.keys(from)) {
    if (k === 'steps') Object.defineProperty(next, k, Object.getOwnPropertyDescriptor(from, k)!);
    else if (!removed(k)) next[k] = from[k];
  }
  for (const k of Object.keys(changes)) {
    const v = changes[k];
    if (v === undefined || !Object.hasOwn(TASK_COLUMNS, k)) continue;
    if (k === 'steps') Object.defineProperty(next, k, { value: v, enumerable: true, writable: true, configurable: true });
    else next[k] = v;
  }
  return next as unknown as TaskRecord;
}

/**
 * The compare-and-set condition of `TaskRepo.update` (the rule is on it, in types.ts), in either
 * dialect: `param(i)` spells the i-th parameter of the condition (from 1), `nullSafeEq` the equality
 * that holds between two NULLs (SQLite `IS`, PostgreSQL `IS NOT DISTINCT FROM`).
 */
export function taskMatch(current: TaskRecord, param: (i: number) => string, nullSafeEq: string): { where: string; params: (string | number | null)[] } {
  const [id, p2, p3, p4] = [param(1), param(2), param(3), param(4)];
  if (current.state === 'running' && current.agentId !== undefined) {
    return { where: `id = ${id} AND (state = 'running' OR (state = 'dispatched' AND agent_id = ${p2}))`, params: [current.id, current.agentId] };
  }
  if (current.state === 'dispatched' && current.agentId !== undefined) {
    return {
      where: `id = ${id} AND state = 'dispatched' AND agent_id = ${p2} AND attempts = ${p3} AND node_id ${nullSafeEq} ${p4}`,
      params: [current.id, current.agentId, current.attempts, current.nodeId ?? null],
    };
  }
  return { where: `id = ${id} AND state = ${p2}`, params: [current.id, current.state] };
}

/** The SQL condition of an unfinished task: the same text as the partial index on it (schema.ts, migration 2). */
export const UNFINISHED = "state IN ('queued', 'dispatched', 'running')";

/** Epoch seconds now: OAuth records past their `expires_at` are never returned, swept or not. */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** Orders records by id (code-point order, as Redis's adapter and the contract expect). */
export const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
