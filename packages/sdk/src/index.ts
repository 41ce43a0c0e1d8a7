/** @module @palisade/sdk — the typed Palisade client for Node and browsers. */
export { Palisade } from './client.ts';
export type { PalisadeOptions, RunOptions, TokenProvider, AgentView, ApiClient, NewApiClient, User, Session, SigningKey, Me, CallOptions, EventsOptions } from './client.ts';
export { TaskError, errorFromBody, errorFromResponse } from './lib/errors.ts';
export { SSEParser, readSSE, type SSEEvent, type SSEParserOptions } from './lib/sse.ts';
export type { FetchLike } from './lib/http.ts';
export type { TokenSet, TokenRequest, DiscoveryDocument } from './lib/oauth.ts';
export {
  deviceLogin,
  refreshTokens,
  revokeToken,
  refreshingTokenProvider,
  CLI_CLIENT_ID,
  CLI_SCOPE,
  type DeviceCode,
  type DeviceLoginOptions,
  type ServerOptions,
} from './device.ts';
export { browserLogin, BROWSER_LOGIN_TIMEOUT_MS, type BrowserLoginOptions } from './browser-login.ts';
export { PalisadeError, ERROR_CODES, type ErrorCode, type Problem, type TaskView, type TaskEvent, type TaskSubmission, type Recipe } from '@palisade/protocol';
