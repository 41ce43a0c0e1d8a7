/**
 * @module store/sqlite — the embedded durable store on `node:sqlite` (WAL, one file).
 * Migrations are numbered and applied in order, recorded in `PRAGMA user_version`.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { startCheckpointer } from './sqlite-checkpointer.ts';
import { UnfinishedCapReached, type DurableStore } from './types.ts';
import { byId, nowSeconds, TASK_COLUMNS, TASK_JSON_FIELDS, UNFINISHED, mappers, opt, taskMatch, withPatch, type Row } from './rows.ts';
import { migrations } from './schema.ts';

const MIGRATIONS = migrations('sqlite');
const LIVE = '(expires_at IS NULL OR expires_at > ?)';

const { user: toUser, client: toClient, agent: toAgent, task: toTask, oidc: toOidc } = mappers({ json: <T>(v: unknown) => JSON.parse(String(v)) as T, bool: (v) => v === 1 });

function taskValue(key: string, v: unknown): string | number | null {
  if (v === undefined || v === null) return null;
  if (TASK_JSON_FIELDS.has(key)) return JSON.stringify(v);
  if (key === 'waitForAgent') return v ? 1 : 0;
  return v as string | number;
}

/**
 * Opens (creating if needed) the SQLite store at `path` (`:memory:` for tests).
 * @example const store = openSqliteStore('.palisade/palisade.db')
 */
export function openSqliteStore(path: string): DurableStore {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;');
  migrate(db);
  // Checkpoints run on a thread of their own (see sqlite-checkpointer.ts), not inside a request.
  const checkpointer = path === ':memory:' ? undefined : startCheckpointer(path);
  if (checkpointer) db.exec('PRAGMA wal_autocheckpoint = 0;');
  const cache = new Map<string, StatementSync>();
  const q = (sql: string): StatementSync => {
    let s = cache.get(sql);
    if (!s) cache.set(sql, (s = db.prepare(sql)));
    return s;
  };
  const one = (sql: string, ...args: (string | number | null)[]) => q(sql).get(...args) as Row | undefined;
  const all = (sql: string, ...args: (string | number | null)[]) => q(sql).all(...args) as Row[];
  const run = (sql: string, ...args: (string | number | null)[]) => q(sql).run(...args);
  const byIdempotencyKey = (owner: string, key: string) => {
    const r = one('SELECT * FROM tasks WHERE owner_user_id = ? AND idempotency_key = ?', owner, key);
    return r && toTask(r);
  };
  const countUnfinished = (owner: string) => Number(one(`SELECT count(*) AS n FROM tasks WHERE owner_user_id = ? AND ${UNFINISHED}`, owner)?.n ?? 0);

  return {
    kind: 'sqlite',
    users: {
      async create(u) {
        run('INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)', u.id, u.username, u.passwordHash, u.role, u.createdAt);
      },
      async byId(id) { const r = one('SELECT * FROM users WHERE id = ?', id); return r && toUser(r); },
      async byUsername(name) { const r = one('SELECT * FROM users WHERE username = ?', name); return r && toUser(r); },
      async count() { return Number(one('SELECT count(*) AS n FROM users')?.n ?? 0); },
      async byIdentity(provider, subject) {
        const r = one('SELECT users.* FROM identities JOIN users ON users.id = identities.user_id WHERE provider = ? AND subject = ?', provider, subject);
        return r && toUser(r);
      },
      async createLinked(u, identity) {
        // Synchronous statements in one transaction: nothing else runs in between.
        const linked = one('SELECT users.* FROM identities JOIN users ON users.id = identities.user_id WHERE provider = ? AND subject = ?', identity.provider, identity.subject);
        if (linked) return { user: toUser(linked), created: false };
        db.exec('BEGIN');
        try {
          run('INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)', u.id, u.username, u.passwordHash, u.role, u.createdAt);
          run('INSERT INTO identities (provider, subject, user_id, email, created_at) VALUES (?, ?, ?, ?, ?)', identity.provider, identity.subject, u.id, identity.email ?? null, u.createdAt);
          db.exec('COMMIT');
        } catch (e) {
          db.exec('ROLLBACK');
          throw e;
        }
        return { user: u, created: true };
      },
    },
    clients: {
      async create(c) {
        run('INSERT INTO api_clients (client_id, owner_user_id, name, secret_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)',
          c.clientId, c.ownerUserId, c.name, c.secretHash, JSON.stringify(c.scopes), c.createdAt);
      },
      async byId(id) { const r = one('SELECT * FROM api_clients WHERE client_id = ?', id); return r && toClient(r); },
      async listByOwner(owner) { return all('SELECT * FROM api_clients WHERE owner_user_id = ? AND revoked_at IS NULL ORDER BY created_at', owner).map(toClient); },
      async revoke(id, at) { return Number(run('UPDATE api_clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL', at, id).changes) > 0; },
    },
    agents: {
      async upsert(a) {
        run(`INSERT INTO agents (id, user_id, instance_id, name, version, grants, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (user_id, instance_id) DO UPDATE SET name = excluded.name, version = excluded.version, grants = excluded.grants, last_seen_at = excluded.last_seen_at`,
          a.id, a.userId, a.instanceId, a.name, a.version, JSON.stringify(a.grants), a.createdAt, a.lastSeenAt);
        return toAgent(one('SELECT * FROM agents WHERE user_id = ? AND instance_id = ?', a.userId, a.instanceId)!);
      },
      async byId(id) { const r = one('SELECT * FROM agents WHERE id = ?', id); return r && toAgent(r); },
      async listByUser(userId) { return all('SELECT * FROM agents WHERE user_id = ? ORDER BY created_at', userId).map(toAgent); },
      async touch(id, at, grants) {
        if (grants) run('UPDATE agents SET last_seen_at = ?, grants = ? WHERE id = ?', at, JSON.stringify(grants), id);
        else run('UPDATE agents SET last_seen_at = ? WHERE id = ?', at, id);
      },
    },
    tasks: {
      async insert(t, o) {
        if (t.idempotencyKey !== undefined) {
          const existing = byIdempotencyKey(t.ownerUserId, t.idempotencyKey);
          if (existing) return { task: existing, created: false };
        }
        // No await between the count and the insert: exact within this process (see TaskRepo.insert).
        if (o?.maxUnfinished !== undefined) {
          const open = countUnfinished(t.ownerUserId);
          if (open >= o.maxUnfinished) throw new UnfinishedCapReached(open);
        }
        run(`INSERT INTO tasks (id, owner_user_id, client_id, recipe, site, steps, state, agent_id, pinned_agent_id, attempts, idempotency_key,
               request_hash, wait_for_agent, created_at, updated_at, deadline, result, error, node_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          t.id, t.ownerUserId, t.clientId, t.recipe ?? null, t.site, JSON.stringify(t.steps), t.state, t.agentId ?? null, t.pinnedAgentId ?? null,
          t.attempts, t.idempotencyKey ?? null, t.requestHash, t.waitForAgent ? 1 : 0, t.createdAt, t.updatedAt, t.deadline,
          taskValue('result', t.result), taskValue('error', t.error), t.nodeId ?? null);
        return { task: t, created: true };
      },
      async byId(id) { const r = one('SELECT * FROM tasks WHERE id = ?', id); return r && toTask(r); },
      async byIdempotencyKey(owner, key) {
        return byIdempotencyKey(owner, key);
      },
      async update(current, patch) {
        const keys = Object.keys(patch).filter((k) => Object.hasOwn(TASK_COLUMNS, k));
        if (keys.length === 0) return current;
        const sets = keys.map((k) => `${TASK_COLUMNS[k]} = ?`).join(', ');
        const values = keys.map((k) => taskValue(k, (patch as Record<string, unknown>)[k]));
        // (`relaxed` changes nothing here: with synchronous = NORMAL in WAL mode no commit waits for a sync.)
        const match = taskMatch(current, () => '?', 'IS');
        const res = run(`UPDATE tasks SET ${sets} WHERE ${match.where}`, ...values, ...match.params);
        return Number(res.changes) === 1 ? withPatch(current, patch) : undefined;
      },
      async listUnfinished(owner) {
        return owner === undefined
          ? all(`SELECT * FROM tasks WHERE ${UNFINISHED} ORDER BY created_at`).map(toTask)
          : all(`SELECT * FROM tasks WHERE owner_user_id = ? AND ${UNFINISHED} ORDER BY created_at`, owner).map(toTask);
      },
      async countUnfinished(owner) {
        return countUnfinished(owner);
      },
    },
    oidc: {
      async upsert(model, id, r) {
        run(`INSERT INTO oidc (model, id, payload, expires_at, grant_id, user_code, uid, account_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at, grant_id = excluded.grant_id,
               user_code = excluded.user_code, uid = excluded.uid, account_id = excluded.account_id`,
          model, id, JSON.stringify(r.payload), r.expiresAt ?? null, r.grantId ?? null, r.userCode ?? null, r.uid ?? null, r.accountId ?? null);
      },
      async find(model, id) { const r = one(`SELECT * FROM oidc WHERE model = ? AND id = ? AND ${LIVE}`, model, id, nowSeconds()); return r && toOidc(r); },
      async findByUserCode(model, code) { const r = one(`SELECT * FROM oidc WHERE model = ? AND user_code = ? AND ${LIVE}`, model, code, nowSeconds()); return r && toOidc(r); },
      async findByUid(model, uid) { const r = one(`SELECT * FROM oidc WHERE model = ? AND uid = ? AND ${LIVE}`, model, uid, nowSeconds()); return r && toOidc(r); },
      async consume(model, id) {
        run("UPDATE oidc SET payload = json_set(payload, '$.consumed', ?) WHERE model = ? AND id = ?", Math.floor(Date.now() / 1000), model, id);
      },
      async destroy(model, id) { run('DELETE FROM oidc WHERE model = ? AND id = ?', model, id); },
      async revokeByGrantId(grantId) { run('DELETE FROM oidc WHERE grant_id = ?', grantId); },
      async listByAccount(model, accountId) {
        // Sorted here: `ORDER BY id` would make SQLite walk the primary key over every account's records.
        return all(`SELECT * FROM oidc WHERE model = ? AND account_id = ? AND ${LIVE}`, model, accountId, nowSeconds())
          .map((r) => ({ id: String(r.id), record: toOidc(r) })).sort(byId);
      },
      async sweep(now) { return Number(run('DELETE FROM oidc WHERE expires_at IS NOT NULL AND expires_at <= ?', now).changes); },
    },
    meta: {
      async get(key) { return opt(one('SELECT value FROM meta WHERE key = ?', key)?.value); },
      async set(key, value) { run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', key, value); },
      async delete(key) { run('DELETE FROM meta WHERE key = ?', key); },
      async deleteIf(key, value) { return Number(run('DELETE FROM meta WHERE key = ? AND value = ?', key, value).changes) === 1; },
      async compareAndSet(key, expected, value) {
        const r = expected === undefined
          ? run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING', key, value)
          : run('UPDATE meta SET value = ? WHERE key = ? AND value = ?', value, key, expected);
        return Number(r.changes) === 1;
      },
    },
    async close() {
      await checkpointer?.stop();
      if (checkpointer) db.exec('PRAGMA wal_checkpoint(TRUNCATE);');
      db.close();
    },
  };
}

function migrate(db: DatabaseSync): void {
  const current = Number((db.prepare('PRAGMA user_version').get() as Row).user_version);
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.exec('BEGIN');
    try {
      db.exec(MIGRATIONS[v]!);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec('COMMIT');
    } catch (e) {
      db.exec('ROLLBACK');
      throw e;
    }
  }
}
