/**
 * @module frames — WebSocket frames between the server and agents (`/ws/agent`).
 *
 * The agent authenticates with `Sec-WebSocket-Protocol: palisade.v1, palisade.bearer.<token>`
 * or with an `auth` frame first; then says `hello`. The server dispatches tasks; the agent
 * acknowledges (`task.accept`), reports `task.progress`, and ends with `task.result`.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Steps } from './steps.ts';
import { Id, TaskResult, ErrorBody } from './task.ts';

/** Origins like `https://example.com` or `http://127.0.0.1:8080`, at most 256 of them. */
export const Origins = Type.Array(Type.String({ maxLength: 2048 }), { maxItems: 256 });

const frame = <T extends string, P extends Record<string, import('@sinclair/typebox').TSchema>>(type: T, props: P) =>
  Type.Object({ type: Type.Literal(type), ...props }, { additionalProperties: false });

// ── agent → server ──────────────────────────────────────────────────────────────────────────
export const AuthFrame = frame('auth', { token: Type.String({ maxLength: 8192 }) });
export const HelloFrame = frame('hello', {
  v: Type.Integer({ minimum: 1 }),
  agent: Type.Object(
    { name: Type.String({ maxLength: 128 }), version: Type.String({ maxLength: 32 }), instanceId: Id },
    { additionalProperties: false },
  ),
  grants: Origins,
});
export const GrantsFrame = frame('grants', { grants: Origins });
export const TaskAcceptFrame = frame('task.accept', { taskId: Id });
export const TaskProgressFrame = frame('task.progress', {
  taskId: Id,
  step: Type.Integer({ minimum: 0 }),
  stepType: Type.String({ maxLength: 32 }),
  status: Type.Union([Type.Literal('started'), Type.Literal('done')]),
  elapsedMs: Type.Number({ minimum: 0 }),
});
export const TaskResultFrame = frame('task.result', {
  taskId: Id,
  outcome: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]),
  result: TaskResult,
  error: Type.Optional(ErrorBody),
});
export const PingFrame = frame('ping', { t: Type.Number() });

export const AgentFrame = Type.Union([AuthFrame, HelloFrame, GrantsFrame, TaskAcceptFrame, TaskProgressFrame, TaskResultFrame, PingFrame]);
export type AgentFrame = Static<typeof AgentFrame>;

// ── server → agent ──────────────────────────────────────────────────────────────────────────
export const WelcomeFrame = frame('welcome', {
  v: Type.Integer({ minimum: 1 }),
  agentId: Id,
  heartbeatMs: Type.Integer({ minimum: 1000 }),
});
/** A task ready to run: steps already interpolated, `site` the origin it is bound to. */
export const DispatchFrame = frame('task.dispatch', {
  taskId: Id,
  site: Type.String({ maxLength: 2048 }),
  steps: Steps,
  deadline: Type.Number(),
});
export const CancelFrame = frame('task.cancel', { taskId: Id, reason: Type.String({ maxLength: 256 }) });
export const PongFrame = frame('pong', { t: Type.Number() });
export const ErrorFrame = frame('error', {
  code: Type.String({ maxLength: 64 }),
  message: Type.String({ maxLength: 4096 }),
  taskId: Type.Optional(Id),
});

export const ServerFrame = Type.Union([WelcomeFrame, DispatchFrame, CancelFrame, PongFrame, ErrorFrame]);
export type ServerFrame = Static<typeof ServerFrame>;
export type DispatchFrame = Static<typeof DispatchFrame>;
export type HelloFrame = Static<typeof HelloFrame>;
