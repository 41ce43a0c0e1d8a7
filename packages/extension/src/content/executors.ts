/**
 * @module content/executors — the fixed vocabulary of page steps. Each executor reads or acts on the
 * DOM through ordinary DOM APIs; nothing is ever evaluated. Errors carry protocol codes:
 * `PAL_ERR_STEP_FAILED` (naming the selectors tried), `PAL_ERR_ASSERTION_FAILED`, `PAL_ERR_TIMEOUT`.
 */
import { PalisadeError, type Step } from '@palisade/protocol';
import { describeSelector, normalizeText, queryAlternatives } from './selectors.ts';
import { renderViewport } from './screenshot.ts';

type Selectors = readonly (string | readonly string[])[];
type StepOf<T extends Step['type']> = Extract<Step, { type: T }>;

/** Polling interval while waiting (mutations also wake the wait at once). */
const POLL_MS = 100;
/** Most values one `extract` returns when it sets no `limit`. */
export const DEFAULT_EXTRACT_LIMIT = 1000;

// ── waiting ─────────────────────────────────────────────────────────────────────────────────

/**
 * Calls `probe` until it returns a value other than `undefined`: at once, on every DOM mutation and
 * every 100 ms (for changes mutations do not report: layout, shadow roots). Rejects on timeout.
 */
export function waitFor<T>(probe: () => T | undefined, timeoutMs: number, onTimeout: () => PalisadeError): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const first = safeProbe(probe);
    if (first !== undefined) {
      resolve(first);
      return;
    }
    let done = false;
    const finish = (value: T | undefined, err?: PalisadeError) => {
      if (done) return;
      done = true;
      observer.disconnect();
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value as T);
    };
    const tick = () => {
      const v = safeProbe(probe);
      if (v !== undefined) finish(v);
    };
    const observer = new MutationObserver(tick);
    observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    const poll = setInterval(tick, POLL_MS);
    const timer = setTimeout(() => finish(undefined, onTimeout()), timeoutMs);
  });
}

function safeProbe<T>(probe: () => T | undefined): T | undefined {
  try {
    return probe();
  } catch {
    return undefined;
  }
}

/** Whether an element is rendered and visible. */
export function isVisible(el: Element): boolean {
  if (typeof (el as HTMLElement).checkVisibility === 'function' && !(el as HTMLElement).checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
}

/** The document a step runs in: the top document, or a same-origin frame given by `frame` indices. */
function stepRoot(frame: readonly number[] | undefined): Document {
  let doc = document;
  for (const i of frame ?? []) {
    const frames = [...doc.querySelectorAll('iframe, frame')] as HTMLIFrameElement[];
    const child = frames[i]?.contentDocument;
    if (!child) throw new PalisadeError('PAL_ERR_STEP_FAILED', `frame ${i} does not exist or is not same-origin`);
    doc = child;
  }
  return doc;
}

/** Waits until one of `selectors` matches a (visible, when asked) element; `PAL_ERR_STEP_FAILED` naming them otherwise. */
async function findElement(step: { selectors: Selectors; frame?: number[] | undefined }, timeoutMs: number, visible: boolean): Promise<Element> {
  const root = stepRoot(step.frame);
  return waitFor(
    () => {
      const { elements } = queryAlternatives(root, step.selectors);
      return elements.find((el) => !visible || isVisible(el));
    },
    timeoutMs,
    () => new PalisadeError('PAL_ERR_STEP_FAILED', `no ${visible ? 'visible ' : ''}element matched ${step.selectors.map(describeSelector).join(' or ')} within ${timeoutMs} ms`),
  );
}

// ── pointer ─────────────────────────────────────────────────────────────────────────────────

const BUTTONS = { primary: 0, auxiliary: 1, secondary: 2, back: 3, forward: 4 } as const;

function pointAt(el: Element, offsetX?: number, offsetY?: number): { clientX: number; clientY: number } {
  const r = el.getBoundingClientRect();
  return { clientX: r.left + (offsetX ?? r.width / 2), clientY: r.top + (offsetY ?? r.height / 2) };
}

function mouse(el: Element, type: string, init: MouseEventInit): void {
  const Ctor = type.startsWith('pointer') ? PointerEvent : MouseEvent;
  el.dispatchEvent(new Ctor(type, { bubbles: true, cancelable: true, composed: true, view: window, ...init, ...(type.startsWith('pointer') ? { pointerId: 1, pointerType: 'mouse', isPrimary: true } : {}) }));
}

function hoverOn(el: Element, at: { clientX: number; clientY: number }): void {
  for (const t of ['pointerover', 'pointerenter', 'mouseover', 'mouseenter', 'pointermove', 'mousemove']) mouse(el, t, at);
}

function clickOn(el: Element, step: StepOf<'click'> | StepOf<'doubleClick'>, count: number): void {
  el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
  const at = pointAt(el, step.offsetX, step.offsetY);
  const button = BUTTONS[step.button ?? 'primary'];
  hoverOn(el, at);
  for (let detail = 1; detail <= count; detail++) {
    const init = { ...at, button, detail, buttons: 1 << button };
    mouse(el, 'pointerdown', init);
    mouse(el, 'mousedown', init);
    if (detail === 1 && el instanceof HTMLElement && el.isConnected) el.focus({ preventScroll: true });
    mouse(el, 'pointerup', { ...init, buttons: 0 });
    mouse(el, 'mouseup', { ...init, buttons: 0 });
    if (button === 0) {
      // `click()` fires the click event and performs the default action (follow a link, submit, toggle).
      if (el instanceof HTMLElement) el.click();
      else mouse(el, 'click', { ...init, buttons: 0 });
    } else if (button === 2) {
      mouse(el, 'contextmenu', { ...init, buttons: 0 });
    } else {
      mouse(el, 'auxclick', { ...init, buttons: 0 });
    }
  }
  if (count === 2) mouse(el, 'dblclick', { ...at, button, detail: 2 });
}

// ── form input ──────────────────────────────────────────────────────────────────────────────

/** Sets a value the way a user would, so frameworks that patch `value` (React) see it. */
function setNativeValue(el: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement, value: string): void {
  const proto = el instanceof HTMLInputElement ? HTMLInputElement.prototype : el instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype : HTMLSelectElement.prototype;
  const setter = Object.getOwnPropertyDescriptor(proto, 'value')?.set;
  if (setter) setter.call(el, value);
  else el.value = value;
}

function fire(el: Element, type: 'input' | 'change'): void {
  el.dispatchEvent(type === 'input' ? new InputEvent('input', { bubbles: true, composed: true, inputType: 'insertText' }) : new Event('change', { bubbles: true }));
}

function changeValue(el: Element, value: string): void {
  if (el instanceof HTMLElement) el.focus({ preventScroll: false });
  if (el instanceof HTMLInputElement && (el.type === 'checkbox' || el.type === 'radio')) {
    const on = !['', 'false', 'off', '0', 'unchecked'].includes(value.trim().toLowerCase());
    if (el.checked !== on) {
      const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'checked')?.set;
      if (setter) setter.call(el, on);
      else el.checked = on;
      fire(el, 'input');
      fire(el, 'change');
    }
    return;
  }
  if (el instanceof HTMLSelectElement) {
    const option = [...el.options].find((o) => o.value === value) ?? [...el.options].find((o) => normalizeText(o.text) === normalizeText(value));
    if (!option) throw new PalisadeError('PAL_ERR_STEP_FAILED', `the select has no option "${value.slice(0, 100)}"`);
    setNativeValue(el, option.value);
    fire(el, 'input');
    fire(el, 'change');
    return;
  }
  if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
    setNativeValue(el, value);
    fire(el, 'input');
    fire(el, 'change');
    return;
  }
  if (el instanceof HTMLElement && el.isContentEditable) {
    el.textContent = value;
    fire(el, 'input');
    return;
  }
  throw new PalisadeError('PAL_ERR_STEP_FAILED', `the element <${el.tagName.toLowerCase()}> does not take a value`);
}

const KEY_CODES: Record<string, string> = { Enter: 'Enter', Tab: 'Tab', Escape: 'Escape', Backspace: 'Backspace', ' ': 'Space', ArrowDown: 'ArrowDown', ArrowUp: 'ArrowUp', ArrowLeft: 'ArrowLeft', ArrowRight: 'ArrowRight' };
const IMPLICIT_SUBMIT_TYPES = new Set(['text', 'search', 'email', 'url', 'tel', 'password', 'number', 'date', 'month', 'week', 'time', 'datetime-local']);

function activeElement(): Element {
  let el: Element | null = document.activeElement;
  while (el?.shadowRoot?.activeElement) el = el.shadowRoot.activeElement;
  return el ?? document.body;
}

function key(type: 'keydown' | 'keyup', keyName: string): void {
  const target = activeElement();
  const code = KEY_CODES[keyName] ?? (keyName.length === 1 ? (/[a-z]/i.test(keyName) ? `Key${keyName.toUpperCase()}` : /\d/.test(keyName) ? `Digit${keyName}` : '') : keyName);
  const init: KeyboardEventInit = { key: keyName, code, bubbles: true, cancelable: true, composed: true, view: window };
  const proceed = target.dispatchEvent(new KeyboardEvent(type, init));
  if (type !== 'keydown' || !proceed) return;
  if (keyName === 'Enter' || keyName.length === 1) {
    if (!target.dispatchEvent(new KeyboardEvent('keypress', init))) return;
  }
  // Default action of Enter in a form field: implicit submission.
  if (keyName === 'Enter' && target instanceof HTMLInputElement && IMPLICIT_SUBMIT_TYPES.has(target.type) && target.form) {
    const form = target.form;
    const submitter = [...form.elements].find(
      (e): e is HTMLButtonElement | HTMLInputElement =>
        (e instanceof HTMLButtonElement && e.type === 'submit') || (e instanceof HTMLInputElement && (e.type === 'submit' || e.type === 'image')),
    );
    if (submitter?.disabled) return;
    form.requestSubmit(submitter ?? null);
  }
}

// ── reading ─────────────────────────────────────────────────────────────────────────────────

function textValue(el: Element): string {
  const inner = el instanceof HTMLElement ? el.innerText : undefined;
  return normalizeText(inner !== undefined && inner.trim() !== '' ? inner : (el.textContent ?? ''));
}

function valueOf(el: Element, attribute: string | undefined): string | null {
  if (attribute === undefined) return textValue(el);
  if (attribute === 'value' && (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement)) return el.value;
  if (attribute === 'href' && (el instanceof HTMLAnchorElement || el instanceof HTMLAreaElement)) return el.href;
  if (attribute === 'src' && (el instanceof HTMLImageElement || el instanceof HTMLMediaElement || el instanceof HTMLIFrameElement)) return el.src;
  return el.getAttribute(attribute);
}

function extract(step: StepOf<'extract'>, matches: Element[]): unknown {
  const limit = step.limit ?? DEFAULT_EXTRACT_LIMIT;
  const one = (el: Element): unknown => {
    if (!step.fields) return valueOf(el, step.attribute);
    const obj: Record<string, unknown> = {};
    for (const [name, f] of Object.entries(step.fields)) {
      if (f.all) {
        const els = f.selector === undefined ? [el] : [...el.querySelectorAll(f.selector)];
        obj[name] = els.slice(0, limit).map((e) => valueOf(e, f.attribute));
      } else {
        const target = f.selector === undefined ? el : el.querySelector(f.selector);
        obj[name] = target ? valueOf(target, f.attribute) : null;
      }
    }
    return obj;
  };
  return step.all ? matches.slice(0, limit).map(one) : one(matches[0]!);
}

function compare(n: number, op: '>=' | '==' | '<=', count: number): boolean {
  return op === '>=' ? n >= count : op === '<=' ? n <= count : n === count;
}

// ── the executors ───────────────────────────────────────────────────────────────────────────

/** Runs one page step and returns its value (`extract`: the data; `download`: the URL; `screenshot`: a PNG `data:` URL). */
export async function runStep(step: Step, timeoutMs: number): Promise<unknown> {
  switch (step.type) {
    case 'click':
    case 'doubleClick': {
      const el = await findElement(step, timeoutMs, true);
      clickOn(el, step, step.type === 'click' ? 1 : 2);
      return null;
    }
    case 'hover': {
      const el = await findElement(step, timeoutMs, true);
      el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
      hoverOn(el, pointAt(el));
      return null;
    }
    case 'change': {
      const el = await findElement(step, timeoutMs, false);
      changeValue(el, step.value);
      return null;
    }
    case 'keyDown':
      key('keydown', step.key);
      return null;
    case 'keyUp':
      key('keyup', step.key);
      return null;
    case 'scroll': {
      if (step.selectors) {
        const el = await findElement({ selectors: step.selectors, frame: step.frame }, timeoutMs, false);
        el.scrollTo({ left: step.x ?? 0, top: step.y ?? 0, behavior: 'instant' });
      } else {
        window.scrollTo({ left: step.x ?? 0, top: step.y ?? 0, behavior: 'instant' });
      }
      return null;
    }
    case 'waitForElement': {
      const root = stepRoot(step.frame);
      const op = step.operator ?? '>=';
      const count = step.count ?? 1;
      const visible = step.visible ?? true;
      await waitFor(
        () => {
          let { elements } = queryAlternatives(root, step.selectors);
          if (visible) elements = elements.filter(isVisible);
          if (step.attributes) elements = elements.filter((el) => Object.entries(step.attributes ?? {}).every(([k, v]) => el.getAttribute(k) === v));
          if (step.properties) {
            elements = elements.filter((el) =>
              Object.entries(step.properties ?? {}).every(([k, v]) => k in el && JSON.stringify((el as unknown as Record<string, unknown>)[k]) === JSON.stringify(v)),
            );
          }
          return compare(elements.length, op, count) ? true : undefined;
        },
        timeoutMs,
        () => new PalisadeError('PAL_ERR_TIMEOUT', `waited ${timeoutMs} ms for ${op} ${count} ${visible ? 'visible ' : ''}element(s) matching ${step.selectors.map(describeSelector).join(' or ')}`),
      );
      return null;
    }
    case 'extract': {
      const root = stepRoot(step.frame);
      let matches = queryAlternatives(root, step.selectors).elements;
      if (matches.length === 0 && !step.all) {
        await findElement(step, timeoutMs, false);
        matches = queryAlternatives(root, step.selectors).elements;
      }
      if (matches.length === 0) return step.all ? [] : null;
      return extract(step, matches);
    }
    case 'assert': {
      const root = stepRoot(step.frame);
      const exists = step.exists ?? true;
      const holds = (): true | undefined => {
        const { elements } = queryAlternatives(root, step.selectors);
        if (!exists) return elements.length === 0 ? true : undefined;
        if (step.text === undefined) return elements.length > 0 ? true : undefined;
        const want = normalizeText(step.text);
        return elements.some((el) => textValue(el).includes(want)) ? true : undefined;
      };
      const what = exists
        ? step.text === undefined
          ? `an element matching ${step.selectors.map(describeSelector).join(' or ')} exists`
          : `an element matching ${step.selectors.map(describeSelector).join(' or ')} contains the text ${JSON.stringify(step.text.slice(0, 200))}`
        : `no element matches ${step.selectors.map(describeSelector).join(' or ')}`;
      await waitFor(holds, timeoutMs, () => new PalisadeError('PAL_ERR_ASSERTION_FAILED', `assertion failed: expected ${what}`));
      return null;
    }
    case 'download': {
      if (!step.selectors) throw new PalisadeError('PAL_ERR_VALIDATION', 'a download step without "url" needs "selectors"');
      const el = await findElement({ selectors: step.selectors, frame: step.frame }, timeoutMs, false);
      const url = el instanceof HTMLAnchorElement || el instanceof HTMLAreaElement ? el.href : valueOf(el, 'src') ?? el.getAttribute('href');
      if (!url) throw new PalisadeError('PAL_ERR_STEP_FAILED', `the element matched by ${step.selectors.map(describeSelector).join(' or ')} has no href or src`);
      const filename = el instanceof HTMLAnchorElement ? el.getAttribute('download') ?? '' : '';
      return { url: new URL(url, el.baseURI).href, filename };
    }
    case 'screenshot':
      // Only reached when Chrome refused `captureVisibleTab` (see content/screenshot.ts).
      return renderViewport(timeoutMs);
    default:
      throw new PalisadeError('PAL_ERR_STEP_REFUSED', `step "${step.type}" does not run in the page`);
  }
}
