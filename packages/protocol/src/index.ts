/** @module @palisade/protocol — one source of truth for every message and API body. */
export * from './version.ts';
export * from './errors.ts';
export * from './steps.ts';
export * from './recipe.ts';
export * from './task.ts';
export * from './frames.ts';
export * from './validate.ts';
export * from './url.ts';
export * from './interpolate.ts';
export * from './policy.ts';
export * from './checks.ts';
