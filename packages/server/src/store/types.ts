/**
 * @module store/types — the durable-store port. Every adapter (SQLite, PostgreSQL) implements these
 * repositories and passes the same contract suite (`test/store/contract.ts`); the OAuth records
 * (`OidcRepo`) may instead live in the hot store (Redis), which passes the same OAuth-record suite.
 * All methods are async so a networked adapter fits the same shape.
 */
import type { ErrorBody, TaskResult, TaskState, Step } from '@palisade/protocol';

export interface UserRecord {
  id: string;
  username: string;
  passwordHash: string;
  role: 'admin' | 'user';
  createdAt: string;
}

export interface ApiClientRecord {
  clientId: string;
  ownerUserId: string;
  name: string;
  /** `sha256:<base64url>` of the secret; the secret itself is never stored. */
  secretHash: string;
  scopes: string[];
  createdAt: string;
  revokedAt?: string | undefined;
}

export interface AgentRecord {
  id: string;
  userId: string;
  instanceId: string;
  name: string;
  version: string;
  grants: string[];
  createdAt: string;
  lastSeenAt: string;
}

export interface TaskRecord {
  id: string;
  ownerUserId: string;
  clientId: string;
  recipe?: string | undefined;
  site: string;
  steps: Step[];
  state: TaskState;
  agentId?: string | undefined;
  pinnedAgentId?: string | undefined;
  attempts: number;
  idempotencyKey?: string | undefined;
  /** Hash of the submission, so a reused idempotency key with another body is detected. */
  requestHash: string;
  waitForAgent: boolean;
  createdAt: string;
  updatedAt: string;
  deadline: string;
  result?: TaskResult | undefined;
  error?: ErrorBody | undefined;
  /** The node that dispatched it to an agent connected there (unset while queued). */
  nodeId?: string | undefined;
}

/** One record of oidc-provider's adapter contract (sessions, grants, device codes, …). */
export interface OidcRecord {
  payload: Record<string, unknown>;
  expiresAt?: number | undefined;
  grantId?: string | undefined;
  userCode?: string | undefined;
  uid?: string | undefined;
  /** The user the record belongs to (grants and sessions), so a user's sessions can be listed. */
  accountId?: string | undefined;
  consumed?: boolean | undefined;
}

/** An account at an upstream provider (Google, GitHub…) linked to a user. */
export interface IdentityLink {
  provider: string;
  subject: string;
  email?: string | undefined;
}

export interface UserRepo {
  create(user: UserRecord): Promise<void>;
  byId(id: string): Promise<UserRecord | undefined>;
  byUsername(username: string): Promise<UserRecord | undefined>;
  count(): Promise<number>;
  /** The user linked to an upstream identity. */
  byIdentity(provider: string, subject: string): Promise<UserRecord | undefined>;
  /**
   * Creates `user` linked to `identity`, atomically. If the identity is already linked (another
   * sign-in won the race), creates nothing and returns the linked user.
   */
  createLinked(user: UserRecord, identity: IdentityLink): Promise<{ user: UserRecord; created: boolean }>;
}

export interface ClientRepo {
  create(client: ApiClientRecord): Promise<void>;
  byId(clientId: string): Promise<ApiClientRecord | undefined>;
  listByOwner(ownerUserId: string): Promise<ApiClientRecord[]>;
  revoke(clientId: string, at: string): Promise<boolean>;
}

export interface AgentRepo {
  /** Inserts or updates the agent identified by (userId, instanceId); returns the stored record. */
  upsert(agent: Omit<AgentRecord, 'id' | 'createdAt'> & { id: string; createdAt: string }): Promise<AgentRecord>;
  byId(id: string): Promise<AgentRecord | undefined>;
  listByUser(userId: string): Promise<AgentRecord[]>;
  touch(id: string, lastSeenAt: string, grants?: string[]): Promise<void>;
}

/** `TaskRepo.insert` refused a task: its owner has `open` unfinished tasks, the most allowed. */
export class UnfinishedCapReached extends Error {
  readonly open: number;
  constructor(open: number) {
    super(`${open} unfinished tasks`);
    this.name = 'UnfinishedCapReached';
    this.open = open;
  }
}

export interface TaskRepo {
  /**
   * Inserts a task; returns the existing one instead if (owner, idempotencyKey) is taken. With
   * `maxUnfinished`, the owner's unfinished tasks are counted in the same step (PostgreSQL: the same
   * statement), and at the cap nothing is inserted: it throws {@link UnfinishedCapReached} (an
   * idempotent replay still returns its task). The count does not see inserts running at the same
   * time (PostgreSQL's statement snapshot; other processes on one SQLite file), so a burst may pass
   * the cap by the number of the owner's submissions in flight at once — a bound on what waits, not
   * an exact quota.
   */
  insert(task: TaskRecord, o?: { maxUnfinished?: number }): Promise<{ task: TaskRecord; created: boolean }>;
  byId(id: string): Promise<TaskRecord | undefined>;
  byIdempotencyKey(ownerUserId: string, key: string): Promise<TaskRecord | undefined>;
  /**
   * Compare-and-set update of the task `current` describes: applies `patch` only if the stored state
   * is still `current.state` — or, when `current` is `running`, still `dispatched` to the same agent
   * (a `running` written `relaxed` may have been lost); a `dispatched` task must still be dispatched
   * to the same agent on the same node for the same attempt (a copy from before a requeue and a new
   * dispatch is stale, though the state reads the same). Returns `current` with the patch applied,
   * or undefined if the task moved.
   *
   * `relaxed`: the caller need not wait for the change to be durable (PostgreSQL: committed without
   * waiting for the WAL flush, which the next ordinary commit of any session makes). A crash of the
   * database itself may lose it. Only for changes whose loss the rule above makes harmless.
   */
  update(current: TaskRecord, patch: Partial<Omit<TaskRecord, 'id' | 'ownerUserId'>>, o?: { relaxed?: boolean }): Promise<TaskRecord | undefined>;
  /** Unfinished tasks, oldest first: every owner's, or one owner's. */
  listUnfinished(ownerUserId?: string): Promise<TaskRecord[]>;
  /** How many unfinished tasks an owner has. */
  countUnfinished(ownerUserId: string): Promise<number>;
}

export interface OidcRepo {
  upsert(model: string, id: string, record: OidcRecord): Promise<void>;
  find(model: string, id: string): Promise<OidcRecord | undefined>;
  findByUserCode(model: string, userCode: string): Promise<OidcRecord | undefined>;
  findByUid(model: string, uid: string): Promise<OidcRecord | undefined>;
  consume(model: string, id: string): Promise<void>;
  destroy(model: string, id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
  /** Live (unexpired) records of `model` that belong to `accountId`, with their ids. */
  listByAccount(model: string, accountId: string): Promise<{ id: string; record: OidcRecord }[]>;
  /** Deletes expired records; returns how many. */
  sweep(now: number): Promise<number>;
}

export interface MetaRepo {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Deletes `key` only if it still holds `value`; true if this call deleted it (an atomic consume). */
  deleteIf(key: string, value: string): Promise<boolean>;
  /**
   * Sets `key` to `value` only if it holds `expected` (`undefined`: only if absent); true if this
   * call wrote it. Of concurrent writers from the same `expected`, exactly one wins.
   */
  compareAndSet(key: string, expected: string | undefined, value: string): Promise<boolean>;
}

/** The durable store: every repository plus lifecycle. */
export interface DurableStore {
  readonly kind: string;
  readonly users: UserRepo;
  readonly clients: ClientRepo;
  readonly agents: AgentRepo;
  readonly tasks: TaskRepo;
  readonly oidc: OidcRepo;
  readonly meta: MetaRepo;
  close(): Promise<void>;
}
