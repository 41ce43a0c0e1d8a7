/**
 * @module checks — validators for the hot messages, backed by checking functions compiled ahead of
 * time from the schemas (`generated/checks.js`, made by `scripts/generate-checks.ts` and kept in
 * step by a test). Use these on every hot path, in the server and in the extension alike.
 */
import { AgentFrame, ServerFrame } from './frames.ts';
import { TaskEvent, TaskSubmission } from './task.ts';
import { Recipe } from './recipe.ts';
import { RecorderFlow, Step, Steps } from './steps.ts';
import { validator } from './validate.ts';
import * as compiled from './generated/checks.js';

export const agentFrameValidator = validator(AgentFrame, compiled.checkAgentFrame);
export const serverFrameValidator = validator(ServerFrame, compiled.checkServerFrame);
export const taskSubmissionValidator = validator(TaskSubmission, compiled.checkTaskSubmission);
export const taskEventValidator = validator(TaskEvent, compiled.checkTaskEvent);
export const recipeValidator = validator(Recipe, compiled.checkRecipe);
export const recorderFlowValidator = validator(RecorderFlow, compiled.checkRecorderFlow);
export const stepValidator = validator(Step, compiled.checkStep);
export const stepsValidator = validator(Steps, compiled.checkSteps);
