/**
 * @module edge/validators — compiled checkers for the server's hot paths (TypeBox's compiler).
 * Same `Validator` shape as the protocol's interpreting one; the extension never uses these.
 */
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { TSchema } from '@sinclair/typebox';
import { AgentFrame, Recipe, TaskSubmission, collectIssues, type Validator } from '@palisade/protocol';

/** Compiles `schema` once. */
export function compiled<S extends TSchema>(schema: S): Validator<S> {
  const c = TypeCompiler.Compile(schema);
  return { schema, check: (v: unknown): v is import('@sinclair/typebox').Static<S> => c.Check(v), issues: (v: unknown) => collectIssues(c.Errors(v)) };
}

export const agentFrame = compiled(AgentFrame);
export const taskSubmission = compiled(TaskSubmission);
export const recipe = compiled(Recipe);
