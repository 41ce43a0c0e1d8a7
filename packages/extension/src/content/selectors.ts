/**
 * @module content/selectors — the selector engine of the Recorder format: plain CSS, `aria/Name`
 * (optionally `aria/Name[role="button"]`), `text/…`, `xpath/…`, `pierce/…`; an array is a chain,
 * each part looked up inside the previous match's open shadow root or same-origin iframe document.
 * Parsing is pure; resolving reads the DOM only. Nothing is evaluated.
 */
import { accessibleName, roleOf } from './aria.ts';

/** One parsed selector part. */
export type ParsedSelector =
  | { kind: 'css'; value: string }
  | { kind: 'pierce'; value: string }
  | { kind: 'text'; value: string }
  | { kind: 'xpath'; value: string }
  | { kind: 'aria'; name: string; role: string | undefined };

const ARIA_ROLE = /^(.*?)\s*\[\s*role\s*=\s*(["']?)([A-Za-z-]+)\2\s*\]$/s;

/**
 * Parses one selector part.
 * @example parseSelector('aria/Search[role="button"]') // { kind: 'aria', name: 'Search', role: 'button' }
 */
export function parseSelector(raw: string): ParsedSelector {
  if (raw.startsWith('aria/')) {
    const rest = raw.slice(5);
    const m = ARIA_ROLE.exec(rest);
    if (m) return { kind: 'aria', name: normalizeText(m[1] ?? ''), role: (m[3] ?? '').toLowerCase() };
    return { kind: 'aria', name: normalizeText(rest), role: undefined };
  }
  if (raw.startsWith('text/')) return { kind: 'text', value: normalizeText(raw.slice(5)) };
  if (raw.startsWith('xpath/')) return { kind: 'xpath', value: raw.slice(6) };
  if (raw.startsWith('pierce/')) return { kind: 'pierce', value: raw.slice(7) };
  return { kind: 'css', value: raw };
}

/** A selector given as a string or a chain; always returns the chain. */
export function parseChain(selector: string | readonly string[]): ParsedSelector[] {
  return (typeof selector === 'string' ? [selector] : selector).map(parseSelector);
}

/** A readable form of a selector for error messages. */
export function describeSelector(selector: string | readonly string[]): string {
  return typeof selector === 'string' ? JSON.stringify(selector) : `[${selector.map((s) => JSON.stringify(s)).join(' > ')}]`;
}

/** Collapses runs of whitespace and trims. */
export function normalizeText(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

type Root = Document | ShadowRoot | Element;

/** Every element under `root`, including inside open shadow roots. */
export function* deepElements(root: Root): Generator<Element> {
  const start = root instanceof Element ? root : undefined;
  if (start?.shadowRoot) yield* deepElements(start.shadowRoot);
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* deepElements(el.shadowRoot);
  }
}

const SKIP_TEXT = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'HEAD', 'TITLE']);

function matchPart(root: Root, part: ParsedSelector): Element[] {
  switch (part.kind) {
    case 'css':
      return [...root.querySelectorAll(part.value)];
    case 'pierce': {
      const out: Element[] = [];
      for (const el of deepElements(root)) if (el.matches(part.value)) out.push(el);
      return out;
    }
    case 'xpath': {
      const doc = root instanceof Document ? root : (root.ownerDocument ?? document);
      const snap = doc.evaluate(part.value, root, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
      const out: Element[] = [];
      for (let i = 0; i < snap.snapshotLength; i++) {
        const n = snap.snapshotItem(i);
        if (n instanceof Element) out.push(n);
      }
      return out;
    }
    case 'text': {
      if (part.value === '') return [];
      // The smallest elements whose text contains the value: no child element contains it too.
      const hits: Element[] = [];
      for (const el of deepElements(root)) {
        if (SKIP_TEXT.has(el.tagName)) continue;
        if (!normalizeText(el.textContent ?? '').includes(part.value)) continue;
        const children = el.shadowRoot ? [...el.children, ...el.shadowRoot.children] : [...el.children];
        if (children.some((c) => !SKIP_TEXT.has(c.tagName) && normalizeText(c.textContent ?? '').includes(part.value))) continue;
        hits.push(el);
      }
      return hits;
    }
    case 'aria': {
      const out: Element[] = [];
      for (const el of deepElements(root)) {
        if (el.closest('[aria-hidden="true"]') || (el instanceof HTMLElement && el.hidden)) continue;
        if (part.role !== undefined && roleOf(el) !== part.role) continue;
        if (accessibleName(el) === part.name) out.push(el);
      }
      return out;
    }
  }
}

/** The root the next part of a chain is looked up in: the element's open shadow root or its same-origin iframe document. */
function innerRoot(el: Element): Root | undefined {
  if (el.shadowRoot) return el.shadowRoot;
  if (el instanceof HTMLIFrameElement || el instanceof HTMLFrameElement) {
    try {
      return el.contentDocument ?? undefined; // null for cross-origin frames
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * Every element one selector (string or chain) matches under `root`. For a chain, the last part's
 * matches inside the first match of each earlier part.
 */
export function querySelectorChain(root: Root, selector: string | readonly string[]): Element[] {
  const parts = parseChain(selector);
  let scope: Root = root;
  for (const [i, part] of parts.entries()) {
    const found = matchPart(scope, part);
    if (i === parts.length - 1) return found;
    const first = found[0];
    const inner = first ? innerRoot(first) : undefined;
    if (!inner) return [];
    scope = inner;
  }
  return [];
}

/** Matches of the first alternative that matches anything (Recorder semantics), with that alternative. */
export function queryAlternatives(root: Root, selectors: readonly (string | readonly string[])[]): { elements: Element[]; selector: string | readonly string[] | undefined } {
  for (const s of selectors) {
    let found: Element[];
    try {
      found = querySelectorChain(root, s);
    } catch {
      continue; // an invalid CSS or XPath expression in one alternative: try the next
    }
    if (found.length > 0) return { elements: found, selector: s };
  }
  return { elements: [], selector: undefined };
}
