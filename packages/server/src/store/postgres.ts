/**
 * @module store/postgres — the distributed durable store on PostgreSQL (`pg`), for many server
 * nodes. Same repositories and contract as the SQLite store; migrations are numbered, applied in a
 * transaction under an advisory lock (so nodes starting together migrate once), and recorded in
 * `palisade_migrations`. Tables live in the configured schema (default `palisade`).
 */
import pg from 'pg';
import { PalisadeError } from '@palisade/protocol';
import { UnfinishedCapReached, type DurableStore } from './types.ts';
import { byId, nowSeconds, TASK_COLUMNS, TASK_JSON_FIELDS, UNFINISHED, mappers, opt, taskMatch, withPatch, type Row } from './rows.ts';
import { migrations } from './schema.ts';

const MIGRATIONS = migrations('postgres');
const LIVE = '(expires_at IS NULL OR expires_at > $3)';
/** Pooled connections for relaxed writes, beside `maxConnections`. */
const RELAXED_CONNECTIONS = 2;

const { user: toUser, client: toClient, agent: toAgent, task: toTask, oidc: toOidc } = mappers({ json: <T>(v: unknown) => v as T, bool: (v) => v === true });
const TASK_INSERT_COLUMNS = `id, owner_user_id, client_id, recipe, site, steps, state, agent_id, pinned_agent_id, attempts, idempotency_key,
  request_hash, wait_for_agent, created_at, updated_at, deadline, result, error, node_id`;
const jsonOrNull = (v: unknown) => (v === undefined || v === null ? null : JSON.stringify(v));

export interface PostgresStoreOptions {
  /** Connection string, e.g. `postgres://postgres@127.0.0.1:5432/test`. */
  connectionString: string;
  /** Schema holding Palisade's tables. Default `palisade`. */
  schema?: string;
  /** Most pooled connections. Default 10 (and 2 more for relaxed writes, see TaskRepo.update). */
  maxConnections?: number;
  /** How long to wait for a connection before failing the query, ms. Default 3000. */
  connectTimeoutMs?: number;
  /** TLS to the server (e.g. `{ ca, rejectUnauthorized: true }` from tls/clients.ts). Default: what the connection string says. */
  ssl?: pg.PoolConfig['ssl'];
  /**
   * Named prepared statements: each connection parses and plans a statement once, then only binds
   * and runs it. Default true; false for a pooler that cannot carry them across transactions
   * (PgBouncer in transaction mode before 1.21, or with `max_prepared_statements = 0`).
   */
  preparedStatements?: boolean;
  /** Told of server settings that will hurt in the long run (autovacuum off), once, at open. */
  onWarning?: (message: string) => void;
}

/**
 * Names for prepared statements, one per distinct SQL text, the same on every connection of this
 * process (the texts are this module's own: a fixed set, plus task updates, one per set of changed
 * columns). Past `max` texts, statements go unnamed (`undefined`) rather than the map growing.
 */
export function statementNamer(max: number): { name(sql: string): string | undefined; forget(sql: string): void; readonly size: number } {
  const names = new Map<string, string>();
  let made = 0;
  return {
    name(sql) {
      let name = names.get(sql);
      if (name === undefined && names.size < max) names.set(sql, (name = `pal_${++made}`));
      return name;
    },
    forget: (sql) => void names.delete(sql),
    get size() {
      return names.size;
    },
  };
}
/** Distinct SQL texts named at once; the store's own texts number a few dozen. */
export const MAX_NAMED_STATEMENTS = 500;
const statements = statementNamer(MAX_NAMED_STATEMENTS);
let stalePlans = 0;
/** Named SQL texts, and statements prepared again after a migration changed their table (for tests and diagnostics). */
export const preparedStatements = (): { named: number; preparedAgain: number } => ({ named: statements.size, preparedAgain: stalePlans });
/**
 * A prepared `SELECT *` whose table another node's migration changed fails ("cached plan must not
 * change result type", SQLSTATE 0A000): the text gets a new name, so every connection prepares it again.
 */
const isStalePlan = (e: unknown) => (e as { code?: string }).code === '0A000' && /cached plan/.test((e as Error).message);

/** Connects, migrates, and returns the store. */
export async function openPostgresStore(o: PostgresStoreOptions): Promise<DurableStore> {
  const schema = o.schema ?? 'palisade';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`invalid schema name "${schema}"`);
  const poolOf = (max: number, settings = '') => new pg.Pool({
    connectionString: o.connectionString,
    max,
    options: `-c search_path=${schema}${settings}`,
    connectionTimeoutMillis: o.connectTimeoutMs ?? 3000,
    ...(o.ssl ? { ssl: o.ssl } : {}),
  });
  const pool = poolOf(o.maxConnections ?? 10);
  /** For `relaxed` writes (see TaskRepo.update): commits do not wait for the WAL flush. */
  const relaxedPool = poolOf(RELAXED_CONNECTIONS, ' -c synchronous_commit=off');
  // An idle connection that breaks (server restart, network) must not take the process down; the
  // pool replaces it, and queries meanwhile fail closed (see `run`).
  pool.on('error', () => undefined);
  relaxedPool.on('error', () => undefined);
  await migrate(pool, schema);
  // Every task leaves several row versions behind; without autovacuum they pile up and every query
  // on the tasks table slows (measured: PostgreSQL's CPU per dispatched task 4–5× after ~30,000 tasks).
  const autovacuum = (await pool.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0]?.autovacuum;
  if (autovacuum === 'off') o.onWarning?.('PostgreSQL runs with autovacuum = off: dead task rows will pile up and slow every task; turn it on (postgresql.conf) or VACUUM the schema\'s tables on a schedule');
  const prepare = o.preparedStatements ?? true;
  /** Every query: a lost or refused connection becomes PAL_ERR_UNAVAILABLE (fail closed, retryable). */
  const run = async (sql: string, params: unknown[] = [], via = pool): Promise<pg.QueryResult> => {
    try {
      const name = prepare ? statements.name(sql) : undefined;
      if (name === undefined) return await via.query(sql, params);
      try {
        return await via.query({ name, text: sql, values: params });
      } catch (e) {
        if (!isStalePlan(e)) throw e;
        statements.forget(sql);
        stalePlans++;
        return await via.query({ name: statements.name(sql), text: sql, values: params });
      }
    } catch (e) {
      if (isConnectionError(e)) throw new PalisadeError('PAL_ERR_UNAVAILABLE', 'the database is unreachable; try again shortly', { internal: e });
      throw e;
    }
  };
  const q = async (sql: string, params: unknown[] = []): Promise<Row[]> => (await run(sql, params)).rows as Row[];
  const one = async (sql: string, params: unknown[] = []): Promise<Row | undefined> => (await q(sql, params))[0];
  const byIdempotencyKey = async (owner: string, key: string) => {
    const r = await one('SELECT * FROM tasks WHERE owner_user_id = $1 AND idempotency_key = $2', [owner, key]);
    return r && toTask(r);
  };
  const countUnfinished = async (owner: string) =>
    Number((await one(`SELECT count(*)::int AS n FROM tasks WHERE owner_user_id = $1 AND ${UNFINISHED}`, [owner]))?.n ?? 0);

  return {
    kind: 'postgres',
    users: {
      async create(u) {
        await q('INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)', [u.id, u.username, u.passwordHash, u.role, u.createdAt]);
      },
      async byId(id) { const r = await one('SELECT * FROM users WHERE id = $1', [id]); return r && toUser(r); },
      async byUsername(n) { const r = await one('SELECT * FROM users WHERE username = $1', [n]); return r && toUser(r); },
      async count() { return Number((await one('SELECT count(*)::int AS n FROM users'))?.n ?? 0); },
      async byIdentity(provider, subject) {
        const r = await one('SELECT users.* FROM identities JOIN users ON users.id = identities.user_id WHERE provider = $1 AND subject = $2', [provider, subject]);
        return r && toUser(r);
      },
      async createLinked(u, identity) {
        // One statement, so atomic: the user row exists only if the link was made.
        try {
          await q(`WITH u AS (INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id)
                   INSERT INTO identities (provider, subject, user_id, email, created_at) SELECT $6, $7, u.id, $8, $5 FROM u`,
            [u.id, u.username, u.passwordHash, u.role, u.createdAt, identity.provider, identity.subject, identity.email ?? null]);
          return { user: u, created: true };
        } catch (e) {
          const linked = (e as { code?: string }).code === '23505' ? await this.byIdentity(identity.provider, identity.subject) : undefined;
          if (linked) return { user: linked, created: false };
          throw e;
        }
      },
    },
    clients: {
      async create(c) {
        await q('INSERT INTO api_clients (client_id, owner_user_id, name, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
          [c.clientId, c.ownerUserId, c.name, c.secretHash, JSON.stringify(c.scopes), c.createdAt]);
      },
      async byId(id) { const r = await one('SELECT * FROM api_clients WHERE client_id = $1', [id]); return r && toClient(r); },
      async listByOwner(owner) { return (await q('SELECT * FROM api_clients WHERE owner_user_id = $1 AND revoked_at IS NULL ORDER BY created_at', [owner])).map(toClient); },
      async revoke(id, at) { return (await run('UPDATE api_clients SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL', [at, id])).rowCount! > 0; },
    },
    agents: {
      async upsert(a) {
        const r = await one(`INSERT INTO agents (id, user_id, instance_id, name, version, grants, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (user_id, instance_id) DO UPDATE SET name = excluded.name, version = excluded.version, grants = excluded.grants, last_seen_at = excluded.last_seen_at
             RETURNING *`, [a.id, a.userId, a.instanceId, a.name, a.version, JSON.stringify(a.grants), a.createdAt, a.lastSeenAt]);
        return toAgent(r!);
      },
      async byId(id) { const r = await one('SELECT * FROM agents WHERE id = $1', [id]); return r && toAgent(r); },
      async listByUser(userId) { return (await q('SELECT * FROM agents WHERE user_id = $1 ORDER BY created_at', [userId])).map(toAgent); },
      async touch(id, at, grants) {
        if (grants) await q('UPDATE agents SET last_seen_at = $1, grants = $2 WHERE id = $3', [at, JSON.stringify(grants), id]);
        else await q('UPDATE agents SET last_seen_at = $1 WHERE id = $2', [at, id]);
      },
    },
    tasks: {
      async insert(t, o) {
        // The cap ($19, null for none) is counted in the same statement (one round trip); the values
        // are typed by hand, as a SELECT list does not take its types from the target columns.
        const r = await one(`INSERT INTO tasks (${TASK_INSERT_COLUMNS})
             SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::jsonb, $7::text, $8::text, $9::text, $10::int, $11::text, $12::text,
                    $13::boolean, $14::text, $15::text, $16::text, $17::jsonb, $18::jsonb, $20::text
             WHERE $19::int IS NULL OR (SELECT count(*) FROM tasks WHERE owner_user_id = $2 AND ${UNFINISHED}) < $19::int
             ON CONFLICT (owner_user_id, idempotency_key) DO NOTHING RETURNING id`,
          [t.id, t.ownerUserId, t.clientId, t.recipe ?? null, t.site, JSON.stringify(t.steps), t.state, t.agentId ?? null, t.pinnedAgentId ?? null,
            t.attempts, t.idempotencyKey ?? null, t.requestHash, t.waitForAgent, t.createdAt, t.updatedAt, t.deadline, jsonOrNull(t.result), jsonOrNull(t.error),
            o?.maxUnfinished ?? null, t.nodeId ?? null]);
        if (r) return { task: t, created: true };
        const existing = t.idempotencyKey === undefined ? undefined : await byIdempotencyKey(t.ownerUserId, t.idempotencyKey);
        if (existing) return { task: existing, created: false };
        // Not inserted and no replay: the cap (the count may have dropped since; the cap was reached).
        throw new UnfinishedCapReached(Math.max(o?.maxUnfinished ?? 0, await countUnfinished(t.ownerUserId)));
      },
      async byId(id) { const r = await one('SELECT * FROM tasks WHERE id = $1', [id]); return r && toTask(r); },
      byIdempotencyKey,
      async update(current, patch, o) {
        const keys = Object.keys(patch).filter((k) => Object.hasOwn(TASK_COLUMNS, k));
        if (keys.length === 0) return current;
        const values = keys.map((k) => {
          const v = (patch as Record<string, unknown>)[k];
          return TASK_JSON_FIELDS.has(k) ? jsonOrNull(v) : (v ?? null);
        });
        const sets = keys.map((k, i) => `${TASK_COLUMNS[k]} = $${i + 1}`).join(', ');
        const n = keys.length;
        const via = o?.relaxed ? relaxedPool : pool;
        const match = taskMatch(current, (i) => `$${n + i}`, 'IS NOT DISTINCT FROM');
        const res = await run(`UPDATE tasks SET ${sets} WHERE ${match.where}`, [...values, ...match.params], via);
        return res.rowCount === 1 ? withPatch(current, patch) : undefined;
      },
      async listUnfinished(owner) {
        const rows = owner === undefined
          ? await q(`SELECT * FROM tasks WHERE ${UNFINISHED} ORDER BY created_at`)
          : await q(`SELECT * FROM tasks WHERE owner_user_id = $1 AND ${UNFINISHED} ORDER BY created_at`, [owner]);
        return rows.map(toTask);
      },
      countUnfinished,
    },
    oidc: {
      async upsert(model, id, r) {
        await q(`INSERT INTO oidc (model, id, payload, expires_at, grant_id, user_code, uid, account_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at, grant_id = excluded.grant_id,
               user_code = excluded.user_code, uid = excluded.uid, account_id = excluded.account_id`,
          [model, id, JSON.stringify(r.payload), r.expiresAt ?? null, r.grantId ?? null, r.userCode ?? null, r.uid ?? null, r.accountId ?? null]);
      },
      async find(model, id) { const r = await one(`SELECT * FROM oidc WHERE model = $1 AND id = $2 AND ${LIVE}`, [model, id, nowSeconds()]); return r && toOidc(r); },
      async findByUserCode(model, code) { const r = await one(`SELECT * FROM oidc WHERE model = $1 AND user_code = $2 AND ${LIVE}`, [model, code, nowSeconds()]); return r && toOidc(r); },
      async findByUid(model, uid) { const r = await one(`SELECT * FROM oidc WHERE model = $1 AND uid = $2 AND ${LIVE}`, [model, uid, nowSeconds()]); return r && toOidc(r); },
      async consume(model, id) {
        await q("UPDATE oidc SET payload = jsonb_set(payload, '{consumed}', to_jsonb($1::bigint)) WHERE model = $2 AND id = $3", [Math.floor(Date.now() / 1000), model, id]);
      },
      async destroy(model, id) { await q('DELETE FROM oidc WHERE model = $1 AND id = $2', [model, id]); },
      async revokeByGrantId(grantId) { await q('DELETE FROM oidc WHERE grant_id = $1', [grantId]); },
      async listByAccount(model, accountId) {
        const rows = await q(`SELECT * FROM oidc WHERE model = $1 AND account_id = $2 AND ${LIVE}`, [model, accountId, nowSeconds()]);
        return rows.map((r) => ({ id: String(r.id), record: toOidc(r) })).sort(byId);
      },
      async sweep(now) { return (await run('DELETE FROM oidc WHERE expires_at IS NOT NULL AND expires_at <= $1', [now])).rowCount ?? 0; },
    },
    meta: {
      async get(key) { return opt((await one('SELECT value FROM meta WHERE key = $1', [key]))?.value); },
      async set(key, value) { await q('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]); },
      async delete(key) { await q('DELETE FROM meta WHERE key = $1', [key]); },
      async deleteIf(key, value) { return ((await run('DELETE FROM meta WHERE key = $1 AND value = $2', [key, value])).rowCount ?? 0) === 1; },
      async compareAndSet(key, expected, value) {
        const r = expected === undefined
          ? await run('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value])
          : await run('UPDATE meta SET value = $3 WHERE key = $1 AND value = $2', [key, expected, value]);
        return (r.rowCount ?? 0) === 1;
      },
    },
    async close() { await Promise.all([pool.end(), relaxedPool.end()]); },
  };
}

async function migrate(pool: pg.Pool, schema: string): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    await c.query("SELECT pg_advisory_xact_lock(hashtext('palisade.migrations'))");
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${schema}.palisade_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`);
    const done = Number((await c.query(`SELECT coalesce(max(version), 0) AS v FROM ${schema}.palisade_migrations`)).rows[0].v);
    for (let v = done; v < MIGRATIONS.length; v++) {
      await c.query(`SET LOCAL search_path = ${schema}`);
      await c.query(MIGRATIONS[v]!);
      await c.query(`INSERT INTO ${schema}.palisade_migrations (version) VALUES ($1)`, [v + 1]);
    }
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK');
    throw e;
  } finally {
    c.release();
  }
}

/** Socket-level failures and PostgreSQL's connection-class and shutdown errors. */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03']);

function isConnectionError(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  if (!err || typeof err !== 'object') return false;
  if (err.code && (CONNECTION_CODES.has(err.code) || err.code.startsWith('08'))) return true;
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(err.message ?? '');
}
