/**
 * @module store/schema — the durable schema's migrations, written once for both SQL stores. The
 * dialects differ only in three column types, filled in per dialect: JSON (`TEXT` / `JSONB`),
 * booleans (`INTEGER` / `BOOLEAN`) and epoch seconds (`INTEGER` / `BIGINT`). Index + 1 is the
 * version a migration brings the database to; applied migrations are never edited.
 */

export type Dialect = 'sqlite' | 'postgres';

const TYPES: Record<Dialect, { json: string; bool: string; epoch: string }> = {
  sqlite: { json: 'TEXT', bool: 'INTEGER', epoch: 'INTEGER' },
  postgres: { json: 'JSONB', bool: 'BOOLEAN', epoch: 'BIGINT' },
};

/** The migrations for `dialect`, in order. */
export function migrations(dialect: Dialect): string[] {
  const { json, bool, epoch } = TYPES[dialect];
  return [
    `CREATE TABLE users (
       id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
       role TEXT NOT NULL, created_at TEXT NOT NULL);
     CREATE TABLE api_clients (
       client_id TEXT PRIMARY KEY, owner_user_id TEXT NOT NULL REFERENCES users(id), name TEXT NOT NULL,
       secret_hash TEXT NOT NULL, scopes ${json} NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
     CREATE INDEX api_clients_owner ON api_clients(owner_user_id);
     CREATE TABLE agents (
       id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), instance_id TEXT NOT NULL,
       name TEXT NOT NULL, version TEXT NOT NULL, grants ${json} NOT NULL, created_at TEXT NOT NULL,
       last_seen_at TEXT NOT NULL, UNIQUE (user_id, instance_id));
     CREATE TABLE tasks (
       id TEXT PRIMARY KEY, owner_user_id TEXT NOT NULL, client_id TEXT NOT NULL, recipe TEXT, site TEXT NOT NULL,
       steps ${json} NOT NULL, state TEXT NOT NULL, agent_id TEXT, pinned_agent_id TEXT, attempts INTEGER NOT NULL,
       idempotency_key TEXT, request_hash TEXT NOT NULL, wait_for_agent ${bool} NOT NULL,
       created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deadline TEXT NOT NULL, result ${json}, error ${json},
       UNIQUE (owner_user_id, idempotency_key));
     CREATE INDEX tasks_unfinished ON tasks(state) WHERE state IN ('queued', 'dispatched', 'running');
     CREATE TABLE oidc (
       model TEXT NOT NULL, id TEXT NOT NULL, payload ${json} NOT NULL, expires_at ${epoch}, grant_id TEXT,
       user_code TEXT, uid TEXT, PRIMARY KEY (model, id));
     CREATE INDEX oidc_grant ON oidc(grant_id);
     CREATE INDEX oidc_user_code ON oidc(model, user_code);
     CREATE INDEX oidc_uid ON oidc(model, uid);
     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
    // 2: unfinished tasks are looked up and counted per owner.
    `DROP INDEX tasks_unfinished;
     CREATE INDEX tasks_unfinished_by_owner ON tasks(owner_user_id, state) WHERE state IN ('queued', 'dispatched', 'running');`,
    // 3: a user's sessions (grants) are listed by account.
    `ALTER TABLE oidc ADD COLUMN account_id TEXT;
     CREATE INDEX oidc_account ON oidc(model, account_id);`,
    // 4: people who sign in with Google, GitHub or another provider: (provider, subject) → user.
    `CREATE TABLE identities (
       provider TEXT NOT NULL, subject TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id), email TEXT,
       created_at TEXT NOT NULL, PRIMARY KEY (provider, subject));
     CREATE INDEX identities_user ON identities(user_id);`,
    // 5: the node whose agent connection runs a task, so others can take it back if that node dies.
    `ALTER TABLE tasks ADD COLUMN node_id TEXT;`,
  ];
}
