/**
 * @module worker/runner — runs `task.dispatch` frames. Before anything touches a tab the frame is
 * validated, code-running steps are refused, every URL in the steps must stay on the task's site,
 * and the site must be granted. Then: `task.accept`, a new tab, each step with `task.progress`
 * started/done, and `task.result`. Every navigation (including ones a click causes) is re-checked
 * against the site. Each step is bounded by its `timeout` (default 30 s) and the task by its deadline.
 *
 * The browser is reached only through `PageDriver` (see `worker/tabs.ts` for Chrome's).
 */
import {
  DispatchFrame,
  PalisadeError,
  checkNavigation,
  checkStepUrls,
  isErrorCode,
  parseOrigin,
  refuseCodeSteps,
  validator,
  type AgentFrame,
  type ArtifactRef,
  type DispatchFrame as DispatchFrameT,
  type ErrorBody,
  type ErrorCode,
  type Step,
  type TaskResult,
} from '@palisade/protocol';
import type { StepRequest } from '../shared/messages.ts';
import { filenameFromUrl, sanitizeFilename } from './filename.ts';

/** Step timeout when the step sets none. */
export const DEFAULT_STEP_TIMEOUT_MS = 30_000;
/** `assert` checks for this long when the step sets no timeout (an assertion should not hang). */
export const DEFAULT_ASSERT_TIMEOUT_MS = 2_000;
/** Tasks running at once; more are refused with `PAL_ERR_UNAVAILABLE`. */
export const MAX_CONCURRENT_TASKS = 4;
/**
 * A `task.result` frame whose UTF-8 encoding is larger than this is replaced by an error result
 * (the server's frame limit is 1 MiB; text outside ASCII takes up to 3 bytes a character).
 */
export const MAX_RESULT_BYTES = 1_000_000;
/** Largest screenshot data URL kept in a result. */
export const MAX_SCREENSHOT_CHARS = 900_000;
const utf8 = new TextEncoder();
/** Steps whose action may start a navigation: after them the runner lets a navigation begin. */
const ACTION_STEPS = new Set<Step['type']>(['click', 'doubleClick', 'keyDown', 'keyUp']);

/** What the runner needs from the browser. */
export interface PageDriver {
  openTab(signal: AbortSignal): Promise<number>;
  closeTab(tabId: number): Promise<void>;
  /** Navigates and resolves when the new document has loaded. */
  navigate(tabId: number, url: string, timeoutMs: number, signal: AbortSignal): Promise<void>;
  tabUrl(tabId: number): Promise<string | undefined>;
  setViewport(tabId: number, width: number, height: number): Promise<void>;
  /** Runs a page step in the tab's top document (injecting the content script once per document). */
  runPageStep(tabId: number, request: StepRequest, signal: AbortSignal): Promise<unknown>;
  /** After an action: waits for a navigation it may have started (`expect`: one must happen). */
  settle(tabId: number, expect: boolean, timeoutMs: number, signal: AbortSignal): Promise<void>;
  /**
   * PNG `data:` URL of the visible tab: Chrome's capture when it allows it, else the content script
   * draws the page (`request` is the step, for the content script).
   */
  screenshot(tabId: number, request: StepRequest, signal: AbortSignal): Promise<string>;
  /**
   * Keeps the tab on `site` before any request leaves it (navigations to other origins are blocked);
   * resolves once in force, with the function that lifts it.
   */
  guardTab(tabId: number, site: string): Promise<() => Promise<void>>;
  /** Saves `url` as `filename`; refuses (and removes) a download whose final URL is not on `site`. */
  download(url: string, filename: string, timeoutMs: number, signal: AbortSignal, site: string): Promise<{ id: number; filename: string; finalUrl: string; bytes: number; mimeType: string | undefined }>;
  /** Cancels a download, deletes its file and erases it from the list. */
  discardDownload(id: number): Promise<void>;
  /** Calls `cb` with every URL the tab commits to, and `undefined` when it closes. */
  watchTab(tabId: number, cb: (url: string | undefined) => void): () => void;
}

export interface RunnerDeps {
  driver: PageDriver;
  isGranted(site: string): Promise<boolean>;
  send(frame: AgentFrame): void;
  now?: () => number;
  log?: (event: string, detail?: Record<string, unknown>) => void;
  onChange?: () => void;
}

interface Running {
  id: string;
  site: string;
  step: number;
  tabId: number | undefined;
  abort: AbortController;
}

const dispatchFrame = validator(DispatchFrame);

/** Runs tasks; knows which tab belongs to which task (for the message pipeline). */
export class TaskRunner {
  readonly #d: RunnerDeps & { now: () => number };
  readonly #running = new Map<string, Running>();

  constructor(deps: RunnerDeps) {
    this.#d = { now: Date.now, ...deps };
  }

  /** The site of the task driving `tabId`, if any. */
  drivenSite(tabId: number): string | undefined {
    for (const r of this.#running.values()) if (r.tabId === tabId) return r.site;
    return undefined;
  }

  /** Tasks running now. */
  active(): { id: string; site: string; step: number }[] {
    return [...this.#running.values()].map(({ id, site, step }) => ({ id, site, step }));
  }

  /** Stops a task (`task.cancel`). */
  cancel(taskId: string, reason: string): void {
    this.#running.get(taskId)?.abort.abort(new PalisadeError('PAL_ERR_TASK_CANCELLED', `cancelled: ${reason}`));
  }

  /** Stops every task (sign-out). */
  cancelAll(reason: string): void {
    for (const id of this.#running.keys()) this.cancel(id, reason);
  }

  /** Handles a raw `task.dispatch` frame; resolves when the task has ended and its result was sent. */
  async dispatch(raw: unknown): Promise<void> {
    const taskId = rawTaskId(raw);
    if (taskId === undefined) {
      this.#d.log?.('task.refused', { reason: 'dispatch frame without a valid taskId' });
      return;
    }
    if (this.#running.has(taskId)) {
      this.#d.send({ type: 'task.accept', taskId }); // re-delivery of a task already running
      return;
    }
    const started = this.#d.now();
    let frame: DispatchFrameT;
    let site: string;
    try {
      refuseCodeSteps((raw as { steps?: unknown }).steps);
      if (!dispatchFrame.check(raw)) {
        const issue = dispatchFrame.issues(raw)[0];
        throw new PalisadeError('PAL_ERR_VALIDATION', issue ? `invalid task.dispatch: ${issue.path} ${issue.message}` : 'invalid task.dispatch');
      }
      frame = raw;
      site = parseOrigin(frame.site);
      checkStepUrls(frame.steps, site);
      if (!(await this.#d.isGranted(site))) throw new PalisadeError('PAL_ERR_SITE_NOT_GRANTED', `the site ${site} is not granted to this agent`);
      if (frame.deadline <= this.#d.now()) throw new PalisadeError('PAL_ERR_TASK_EXPIRED', 'the task deadline has passed');
      if (this.#running.size >= MAX_CONCURRENT_TASKS) throw new PalisadeError('PAL_ERR_UNAVAILABLE', `the agent is already running ${MAX_CONCURRENT_TASKS} tasks`);
    } catch (e) {
      this.#d.log?.('task.refused', { taskId, code: errorBody(e).code });
      this.#sendResult(taskId, emptyResult(this.#d.now() - started), errorBody(e));
      return;
    }
    await this.#run(frame, site, started);
  }

  async #run(frame: DispatchFrameT, site: string, started: number): Promise<void> {
    const task: Running = { id: frame.taskId, site, step: 0, tabId: undefined, abort: new AbortController() };
    const { signal } = task.abort;
    this.#running.set(task.id, task);
    this.#d.send({ type: 'task.accept', taskId: task.id });
    this.#d.onChange?.();
    const deadlineTimer = setTimeout(
      () => task.abort.abort(new PalisadeError('PAL_ERR_TASK_EXPIRED', 'the task did not finish before its deadline')),
      Math.max(0, frame.deadline - this.#d.now()),
    );
    const outputs: Record<string, unknown> = {};
    const artifacts: ArtifactRef[] = [];
    const timings: { index: number; type: string; ms: number }[] = [];
    let error: ErrorBody | undefined;
    let tabClosed = false;
    let unwatch = () => {};
    let unguard = async () => {};
    try {
      const tabId = await abortable(this.#d.driver.openTab(signal), signal);
      task.tabId = tabId;
      // Before the first navigation: requests of this tab to other origins are blocked from now on.
      unguard = await this.#d.driver.guardTab(tabId, site);
      unwatch = this.#d.driver.watchTab(tabId, (url) => {
        if (url === undefined) {
          tabClosed = true;
          return;
        }
        if (url === 'about:blank') return;
        try {
          checkNavigation(url, site);
        } catch (e) {
          this.#d.log?.('task.offsite', { taskId: task.id });
          task.abort.abort(new PalisadeError('PAL_ERR_URL_REFUSED', `the page navigated off the task's site: ${(e as Error).message}`));
        }
      });
      for (const [index, step] of frame.steps.entries()) {
        task.step = index;
        signal.throwIfAborted();
        const t0 = this.#d.now();
        this.#d.send({ type: 'task.progress', taskId: task.id, step: index, stepType: step.type, status: 'started', elapsedMs: t0 - started });
        try {
          if (tabClosed && step.type !== 'close') throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the task\'s tab was closed');
          const timeout = Math.min(stepTimeout(step), Math.max(0, frame.deadline - this.#d.now()));
          await this.#step(tabId, step, index, timeout, site, signal, { outputs, artifacts, closeTab: () => (tabClosed = true) });
          if (!tabClosed) await this.#checkStillOnSite(tabId, site);
          signal.throwIfAborted();
        } catch (e) {
          const err = signal.aborted ? signal.reason : e;
          error = { ...errorBody(err), step: index };
          timings.push({ index, type: step.type, ms: this.#d.now() - t0 });
          break;
        }
        const t1 = this.#d.now();
        timings.push({ index, type: step.type, ms: t1 - t0 });
        this.#d.send({ type: 'task.progress', taskId: task.id, step: index, stepType: step.type, status: 'done', elapsedMs: t1 - started });
      }
    } catch (e) {
      error ??= errorBody(signal.aborted ? signal.reason : e);
    } finally {
      clearTimeout(deadlineTimer);
      unwatch();
      this.#running.delete(task.id);
      if (task.tabId !== undefined && !tabClosed) await this.#d.driver.closeTab(task.tabId).catch(() => {});
      await unguard().catch(() => {}); // after the tab is gone: it never runs unguarded
      this.#d.onChange?.();
    }
    this.#sendResult(task.id, { outputs, artifacts, timings: { totalMs: this.#d.now() - started, steps: timings } }, error);
  }

  async #step(
    tabId: number,
    step: Step,
    index: number,
    timeoutMs: number,
    site: string,
    signal: AbortSignal,
    out: { outputs: Record<string, unknown>; artifacts: ArtifactRef[]; closeTab: () => void },
  ): Promise<void> {
    const d = this.#d.driver;
    const bounded = <T>(p: Promise<T>): Promise<T> => withTimeout(p, timeoutMs + 1000, signal, `step ${index} (${step.type}) timed out after ${timeoutMs} ms`);
    switch (step.type) {
      case 'navigate': {
        const url = checkNavigation(step.url, site);
        await bounded(d.navigate(tabId, url, timeoutMs, signal));
        return;
      }
      case 'setViewport':
        await d.setViewport(tabId, step.width, step.height).catch(() => {}); // best effort
        return;
      case 'emulateNetworkConditions':
        return; // accepted so recorded flows run unchanged; throttling would need the debugger permission
      case 'close':
        out.closeTab();
        await d.closeTab(tabId);
        return;
      case 'screenshot': {
        let dataUrl: string;
        try {
          dataUrl = await bounded(d.screenshot(tabId, { type: 'palisade.step', index, step, timeoutMs }, signal));
        } catch (e) {
          if (e instanceof PalisadeError) throw e;
          throw new PalisadeError('PAL_ERR_STEP_FAILED', `the screenshot failed: ${(e as Error).message}`);
        }
        if (!dataUrl.startsWith('data:image/png;base64,')) throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the screenshot is not a PNG data: URL');
        if (dataUrl.length > MAX_SCREENSHOT_CHARS) {
          throw new PalisadeError('PAL_ERR_STEP_FAILED', `the screenshot is ${dataUrl.length} characters, over the ${MAX_SCREENSHOT_CHARS} a result may carry; use a smaller viewport`);
        }
        const b64 = dataUrl.slice(dataUrl.indexOf(',') + 1);
        out.artifacts.push({ name: step.name, kind: 'screenshot', mimeType: 'image/png', bytes: Math.floor((b64.length * 3) / 4), dataUrl });
        return;
      }
      case 'download': {
        let url = step.url;
        let suggested: string | undefined;
        if (url === undefined) {
          if (step.selectors === undefined) throw new PalisadeError('PAL_ERR_VALIDATION', 'a download step needs "url" or "selectors"');
          const found = (await bounded(d.runPageStep(tabId, { type: 'palisade.step', index, step, timeoutMs }, signal))) as { url?: unknown; filename?: unknown };
          if (typeof found?.url !== 'string') throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the matched element has no href or src');
          url = found.url;
          if (typeof found.filename === 'string' && found.filename !== '') suggested = found.filename;
        }
        const checked = checkNavigation(url, site);
        const name = sanitizeFilename(step.filename ?? suggested ?? filenameFromUrl(checked) ?? step.name);
        const saved = await bounded(d.download(checked, `palisade/${name}`, timeoutMs, signal, site));
        try {
          checkNavigation(saved.finalUrl, site); // second line: the driver refuses such a download itself
        } catch (e) {
          await d.discardDownload(saved.id);
          throw e;
        }
        const artifact: ArtifactRef = { name: step.name, kind: 'download', filename: saved.filename, bytes: saved.bytes };
        if (saved.mimeType) artifact.mimeType = saved.mimeType;
        out.artifacts.push(artifact);
        return;
      }
      default: {
        const value = await bounded(d.runPageStep(tabId, { type: 'palisade.step', index, step, timeoutMs }, signal));
        if (step.type === 'extract') out.outputs[step.name] = value;
        if (ACTION_STEPS.has(step.type)) {
          const expect = (step.assertedEvents ?? []).some((e) => e.type === 'navigation');
          await bounded(d.settle(tabId, expect, timeoutMs, signal));
        }
      }
    }
  }

  async #checkStillOnSite(tabId: number, site: string): Promise<void> {
    const url = await this.#d.driver.tabUrl(tabId);
    if (url === undefined || url === 'about:blank') return;
    try {
      checkNavigation(url, site);
    } catch (e) {
      throw new PalisadeError('PAL_ERR_URL_REFUSED', `the page navigated off the task's site: ${(e as Error).message}`);
    }
  }

  #sendResult(taskId: string, result: TaskResult, error: ErrorBody | undefined): void {
    const frame: AgentFrame = error
      ? { type: 'task.result', taskId, outcome: 'failed', result, error }
      : { type: 'task.result', taskId, outcome: 'succeeded', result };
    if (utf8.encode(JSON.stringify(frame)).byteLength > MAX_RESULT_BYTES) {
      this.#d.send({
        type: 'task.result',
        taskId,
        outcome: 'failed',
        result: { outputs: {}, artifacts: [], timings: result.timings },
        error: { code: 'PAL_ERR_FRAME_TOO_LARGE', message: `the result is larger than ${MAX_RESULT_BYTES} bytes; extract less (use "limit")` },
      });
      return;
    }
    this.#d.send(frame);
  }
}

function stepTimeout(step: Step): number {
  if (step.timeout !== undefined) return step.timeout;
  return step.type === 'assert' ? DEFAULT_ASSERT_TIMEOUT_MS : DEFAULT_STEP_TIMEOUT_MS;
}

function rawTaskId(raw: unknown): string | undefined {
  const id = raw !== null && typeof raw === 'object' ? (raw as { taskId?: unknown }).taskId : undefined;
  return typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : undefined;
}

function emptyResult(totalMs: number): TaskResult {
  return { outputs: {}, artifacts: [], timings: { totalMs, steps: [] } };
}

/** The wire error of anything thrown. */
export function errorBody(e: unknown): ErrorBody {
  if (e instanceof PalisadeError) return { code: e.code, message: e.message.slice(0, 4000) };
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  return { code: isErrorCode(code) ? code : ('PAL_ERR_STEP_FAILED' satisfies ErrorCode), message: message.slice(0, 4000) };
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return withTimeout(p, undefined, signal, '');
}

/** Rejects with `PAL_ERR_TIMEOUT` after `ms`, or with the abort reason when `signal` aborts. */
export function withTimeout<T>(p: Promise<T>, ms: number | undefined, signal: AbortSignal, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = ms === undefined ? undefined : setTimeout(() => reject(new PalisadeError('PAL_ERR_TIMEOUT', message)), ms);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    });
  });
}
