/** @module @palisade/server — the Palisade server node. */
export { createPalisade, type Palisade, type CreateOptions } from './app.ts';
export { resolveConfig, DEFAULTS, type ServerConfig } from './config.ts';
export { openSqliteStore } from './store/sqlite.ts';
export type * from './store/types.ts';
export { createSecurityEvents, type SecurityEvent, type SecurityEvents } from './siem/events.ts';
