/** @module task — task submission, states, events and results, over HTTP and WebSocket alike. */
import { Type, type Static } from '@sinclair/typebox';
import { Steps } from './steps.ts';
import { RECIPE_NAME_PATTERN } from './recipe.ts';

export const TASK_STATES = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] as const;
export const TaskState = Type.Union(TASK_STATES.map((s) => Type.Literal(s)));
export type TaskState = (typeof TASK_STATES)[number];
/** States a task never leaves. */
export const FINAL_STATES: ReadonlySet<TaskState> = new Set(['succeeded', 'failed', 'cancelled', 'expired']);

export const Id = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' });

/**
 * Submitting a task: a `recipe` by name, or inline `steps` with the `site` they run on; `input`
 * values are strings; `agentId` pins one of the caller's agents; `timeoutMs` defaults to 120 s.
 */
export const TaskSubmission = Type.Object(
  {
    recipe: Type.Optional(Type.String({ pattern: RECIPE_NAME_PATTERN })),
    steps: Type.Optional(Steps),
    site: Type.Optional(Type.String({ maxLength: 2048 })),
    input: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 65_536 }), { maxProperties: 64 })),
    agentId: Type.Optional(Id),
    idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 3_600_000 })),
    waitForAgent: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type TaskSubmission = Static<typeof TaskSubmission>;

export const ArtifactRef = Type.Object(
  {
    name: Type.String({ maxLength: 128 }),
    kind: Type.Union([Type.Literal('download'), Type.Literal('screenshot')]),
    filename: Type.Optional(Type.String({ maxLength: 512 })),
    mimeType: Type.Optional(Type.String({ maxLength: 128 })),
    bytes: Type.Optional(Type.Integer({ minimum: 0 })),
    /** Screenshots only: a `data:image/png;base64,` URL, bounded by the frame size. */
    dataUrl: Type.Optional(Type.String({ maxLength: 4_000_000 })),
  },
  { additionalProperties: false },
);
export type ArtifactRef = Static<typeof ArtifactRef>;

export const StepTiming = Type.Object(
  { index: Type.Integer({ minimum: 0 }), type: Type.String({ maxLength: 32 }), ms: Type.Number({ minimum: 0 }) },
  { additionalProperties: false },
);

export const ErrorBody = Type.Object(
  {
    code: Type.String({ maxLength: 64 }),
    message: Type.String({ maxLength: 4096 }),
    step: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type ErrorBody = Static<typeof ErrorBody>;

/** What the agent reports when a task ends, and what the caller receives. */
export const TaskResult = Type.Object(
  {
    outputs: Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), { maxProperties: 256 }),
    artifacts: Type.Array(ArtifactRef, { maxItems: 64 }),
    timings: Type.Object(
      { totalMs: Type.Number({ minimum: 0 }), steps: Type.Array(StepTiming, { maxItems: 500 }) },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type TaskResult = Static<typeof TaskResult>;

/** A task as the API shows it. */
export const TaskView = Type.Object(
  {
    id: Id,
    state: TaskState,
    recipe: Type.Optional(Type.String()),
    site: Type.String(),
    agentId: Type.Optional(Id),
    attempts: Type.Integer({ minimum: 0 }),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    deadline: Type.String(),
    result: Type.Optional(TaskResult),
    error: Type.Optional(ErrorBody),
  },
  { additionalProperties: false },
);
export type TaskView = Static<typeof TaskView>;

/** Streamed to the caller (SSE `event:` = `type`). */
export const TaskEvent = Type.Union([
  Type.Object({ type: Type.Literal('state'), taskId: Id, state: TaskState, at: Type.String() }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('progress'),
      taskId: Id,
      step: Type.Integer({ minimum: 0 }),
      stepType: Type.String({ maxLength: 32 }),
      status: Type.Union([Type.Literal('started'), Type.Literal('done')]),
      elapsedMs: Type.Number({ minimum: 0 }),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('end'), task: TaskView }, { additionalProperties: false }),
]);
export type TaskEvent = Static<typeof TaskEvent>;
