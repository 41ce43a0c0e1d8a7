/**
 * @module edge/validators — the validators the server's hot paths use: the protocol's, backed by
 * checks compiled ahead of time (no code is generated while the server runs).
 */
export {
  agentFrameValidator as agentFrame, taskSubmissionValidator as taskSubmission, recipeValidator as recipe,
  stepsValidator as boundSteps,
} from '@palisade/protocol';
