/**
 * @module policy — checks on a list of steps that the schema alone cannot express, shared by the
 * server (at submission) and the extension (before running): code-running steps are refused with
 * their own error, and every `navigate` and `download.url` must stay on the task's site.
 */
import { PalisadeError } from './errors.ts';
import { REFUSED_STEP_TYPES, type Step } from './steps.ts';
import { checkNavigation } from './url.ts';

/** Throws `PAL_ERR_STEP_REFUSED` if any raw step (before schema validation) is one that runs code. */
export function refuseCodeSteps(rawSteps: unknown): void {
  if (!Array.isArray(rawSteps)) return;
  rawSteps.forEach((s, i) => {
    const type = s !== null && typeof s === 'object' ? (s as { type?: unknown }).type : undefined;
    if (typeof type === 'string' && REFUSED_STEP_TYPES.includes(type)) {
      throw new PalisadeError('PAL_ERR_STEP_REFUSED', `step ${i} ("${type}") would run code in the page; Palisade refuses it`, {
        errors: [{ path: `/steps/${i}/type`, message: `"${type}" is refused` }],
      });
    }
  });
}

/** Throws `PAL_ERR_URL_REFUSED` if a step would navigate or download off `site`. */
export function checkStepUrls(steps: readonly Step[], site: string): void {
  steps.forEach((s, i) => {
    const url = s.type === 'navigate' ? s.url : s.type === 'download' ? s.url : undefined;
    if (url === undefined) return;
    try {
      checkNavigation(url, site);
    } catch (e) {
      if (e instanceof PalisadeError) {
        throw new PalisadeError(e.code, `step ${i}: ${e.message}`, { errors: [{ path: `/steps/${i}/url`, message: e.message }] });
      }
      throw e;
    }
  });
}
