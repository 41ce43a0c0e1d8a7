/**
 * @module content/screenshot — draws the visible viewport of the page, inside the content script.
 *
 * Why it exists: Chrome lets an extension capture a tab (`chrome.tabs.captureVisibleTab`) only with
 * the `<all_urls>` host permission or an `activeTab` grant (the user clicked the toolbar button),
 * and the other capture paths need `debugger` or `tabCapture`. Palisade holds none of these by
 * design, so when Chrome refuses, the worker asks the content script — which may read the DOM of a
 * granted site — to redraw the page itself.
 *
 * How: the DOM (flat tree: open and closed shadow roots, slots) is rebuilt in an inert document
 * (no browsing context: nothing loads, no custom element runs), element by element, with a curated
 * set of computed style properties set on each copy's `style` (properties equal to their initial
 * value, or — for inherited ones — to the parent's, are left out; an SVG `<style>` resets every
 * HTML element to `all: unset` so nothing of the user-agent sheet leaks in). Scripts, styles and
 * hidden elements are dropped; iframes, embeds and videos become plain placeholder boxes; form
 * values are kept (password values are masked); same-origin images are fetched and inlined as
 * `data:` URLs. The copy is serialised with `XMLSerializer` into an SVG `<foreignObject>` of the
 * viewport's size, shifted by the scroll offset, loaded into an `Image` from a `data:image/svg+xml`
 * URL and drawn onto a canvas at device pixel ratio 1. Nothing is parsed back into the page and
 * nothing is evaluated.
 *
 * Limits (fidelity): cross-origin images are left blank; canvas, video, iframe and plugin content
 * is not drawn; fonts are those available to an image (system fonts; page web fonts do not load);
 * `::before`/`::after` are drawn only when their `content` is a plain string; sticky elements are
 * drawn at their in-flow position and inner scroll positions are not reproduced; form controls the
 * page left unstyled get plain CSS borders instead of the native look. (The page's
 * Content-Security-Policy does not apply: the image is loaded from the content script's isolated
 * world.) Bounds: at most
 * {@link MAX_ELEMENTS} elements (past it the rest is left out; on pages with more elements than
 * that, subtrees outside the viewport are reduced to their box), at most {@link MAX_IMAGE_BYTES}
 * of inlined images (past it images are left blank), and the step's time limit.
 */
import { PalisadeError } from '@palisade/protocol';

/** Most elements copied into one rendering. */
export const MAX_ELEMENTS = 5000;
/** Most bytes of images inlined into one rendering (each use of an image counts). */
export const MAX_IMAGE_BYTES = 2 * 1024 * 1024;

const XHTML = 'http://www.w3.org/1999/xhtml';
const SVG_NS = 'http://www.w3.org/2000/svg';
/** Background under the page when neither the root nor the body paints one. */
const CANVAS_DEFAULT = 'rgb(255, 255, 255)';
/** Fill of the boxes that stand for content that is not drawn (iframes, video, plugins). */
const PLACEHOLDER_FILL = 'rgb(229, 229, 229)';

/** Non-inherited properties copied when they differ from their initial value (Chrome's serialisation). */
const BOX: Record<string, string> = {
  display: 'inline', position: 'static', top: 'auto', right: 'auto', bottom: 'auto', left: 'auto', 'z-index': 'auto',
  float: 'none', clear: 'none', 'box-sizing': 'content-box', width: 'auto', height: 'auto', 'min-width': '0px',
  'min-height': '0px', 'max-width': 'none', 'max-height': 'none', 'margin-top': '0px', 'margin-right': '0px',
  'margin-bottom': '0px', 'margin-left': '0px', 'padding-top': '0px', 'padding-right': '0px', 'padding-bottom': '0px',
  'padding-left': '0px', 'border-top-width': '0px', 'border-right-width': '0px', 'border-bottom-width': '0px',
  'border-left-width': '0px', 'border-top-style': 'none', 'border-right-style': 'none', 'border-bottom-style': 'none',
  'border-left-style': 'none', 'border-top-left-radius': '0px', 'border-top-right-radius': '0px',
  'border-bottom-right-radius': '0px', 'border-bottom-left-radius': '0px', 'overflow-x': 'visible', 'overflow-y': 'visible',
  'flex-direction': 'row', 'flex-wrap': 'nowrap', 'flex-grow': '0', 'flex-shrink': '1', 'flex-basis': 'auto',
  'align-items': 'normal', 'align-self': 'auto', 'align-content': 'normal', 'justify-content': 'normal',
  'justify-items': 'normal', 'justify-self': 'auto', order: '0', 'row-gap': 'normal', 'column-gap': 'normal',
  'grid-template-columns': 'none', 'grid-template-rows': 'none', 'grid-template-areas': 'none', 'grid-auto-flow': 'row',
  'grid-auto-columns': 'auto', 'grid-auto-rows': 'auto', 'grid-column-start': 'auto', 'grid-column-end': 'auto',
  'grid-row-start': 'auto', 'grid-row-end': 'auto', 'vertical-align': 'baseline', transform: 'none', translate: 'none',
  rotate: 'none', scale: 'none', opacity: '1', 'background-color': 'rgba(0, 0, 0, 0)', 'background-image': 'none',
  'background-size': 'auto', 'background-position-x': '0%', 'background-position-y': '0%', 'background-repeat': 'repeat',
  'background-clip': 'border-box', 'background-origin': 'padding-box', 'box-shadow': 'none', 'text-decoration-line': 'none',
  'text-decoration-style': 'solid', 'text-decoration-thickness': 'auto', 'text-overflow': 'clip', 'object-fit': 'fill',
  'object-position': '50% 50%', 'clip-path': 'none', filter: 'none', 'mix-blend-mode': 'normal', isolation: 'auto',
  'table-layout': 'auto', 'caption-side': 'top', appearance: 'none', 'aspect-ratio': 'auto', 'column-count': 'auto',
  'column-width': 'auto', '-webkit-line-clamp': 'none', '-webkit-box-orient': 'horizontal',
};
/** Non-inherited properties whose initial value is `currentcolor`, copied only when they show and differ from `color`. */
const CURRENT_COLOR: Record<string, string> = {
  'border-top-color': 'border-top-style', 'border-right-color': 'border-right-style', 'border-bottom-color': 'border-bottom-style',
  'border-left-color': 'border-left-style', 'outline-color': 'outline-style', 'text-decoration-color': 'text-decoration-line',
};
/** Outline geometry: copied only when an outline shows. */
const OUTLINE = ['outline-style', 'outline-width', 'outline-offset'];
/** Inherited properties: copied when they differ from the parent's (always on the root). */
const INHERITED = [
  'color', 'font-family', 'font-size', 'font-weight', 'font-style', 'font-variant-caps', 'font-variant-ligatures',
  'font-variant-numeric', 'font-stretch', 'font-feature-settings', 'font-kerning', 'line-height', 'letter-spacing',
  'word-spacing', 'text-align', 'text-align-last', 'text-indent', 'text-transform', 'text-shadow', 'white-space',
  'white-space-collapse', 'text-wrap-mode', 'word-break', 'overflow-wrap', 'hyphens', 'tab-size', 'visibility',
  'list-style-type', 'list-style-position', 'border-collapse', 'border-spacing', 'direction', 'writing-mode',
  'text-underline-offset', '-webkit-text-fill-color', '-webkit-text-stroke-width', '-webkit-text-stroke-color',
  'color-scheme', 'fill', 'stroke', 'stroke-width', 'fill-opacity', 'stroke-opacity', 'fill-rule', 'stroke-linecap',
  'stroke-linejoin', 'stroke-dasharray',
];
const ALL_PROPS = [...Object.keys(BOX), ...Object.keys(CURRENT_COLOR), 'outline-width', 'outline-offset', 'transform-origin', ...INHERITED];

/** HTML elements never copied (their effect is already in the computed styles, or they draw nothing). */
const SKIPPED = new Set(['script', 'style', 'link', 'meta', 'template', 'noscript', 'title', 'head', 'base', 'source', 'track', 'param']);
/** HTML elements drawn as an empty box of their size. */
const PLACEHOLDERS = new Set(['iframe', 'frame', 'object', 'embed', 'video', 'audio', 'portal', 'fencedframe']);
/** HTML attributes that change how an element draws (styles come from the computed values instead). */
const HTML_ATTRIBUTES = new Set([
  'type', 'colspan', 'rowspan', 'span', 'start', 'reversed', 'dir', 'lang', 'open', 'placeholder', 'size', 'multiple',
  'cols', 'rows', 'disabled', 'readonly', 'width', 'height', 'max', 'min', 'low', 'high', 'optimum', 'label',
]);
/** Characters XML does not allow (they would make the SVG unreadable). */
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g;

type Values = Record<string, string>;

/** Options of {@link snapshotViewport}; defaults are the module's bounds. */
export interface SnapshotOptions {
  /** Time (epoch ms) after which no more elements are copied. */
  cloneDeadline: number;
  /** Time (epoch ms) after which no more images are fetched. */
  imageDeadline: number;
  maxElements?: number;
  maxImageBytes?: number;
}

/** The serialised viewport and what was left out. */
export interface Snapshot {
  svg: string;
  width: number;
  height: number;
  /** The colour under the page (the root's or body's background). */
  background: string;
  /** Elements copied (pseudo-elements count). */
  elements: number;
  /** Elements were left out (element cap or time limit). */
  truncated: boolean;
  imagesInlined: number;
  imagesSkipped: number;
  imageBytes: number;
}

interface ImageUse {
  url: string;
  apply(dataUrl: string | undefined): void;
}

/** Reads the computed values of every copied property. */
function read(cs: CSSStyleDeclaration): Values {
  const v: Values = {};
  for (const p of ALL_PROPS) v[p] = cs.getPropertyValue(p);
  return v;
}

/** `url("page#frag")` → `url("#frag")`: references into the page's own SVG definitions stay valid in the copy. */
function localUrls(value: string): string {
  return value.replace(/url\("([^"]*)"\)/g, (whole, url: string) => {
    const hash = url.indexOf('#');
    return hash >= 0 ? `url("${url.slice(hash)}")` : whole;
  });
}

/** The text of a `content` value that is one CSS string, else `undefined` (counters, attr(), images). */
function contentText(content: string): string | undefined {
  const m = /^"((?:[^"\\]|\\.)*)"$/s.exec(content);
  return m ? m[1]!.replace(/\\(.)/gs, '$1') : undefined;
}

function clean(text: string): string {
  return text.replace(XML_INVALID, '');
}

function intersects(r: DOMRect, width: number, height: number): boolean {
  return r.right >= 0 && r.bottom >= 0 && r.left <= width && r.top <= height;
}

/** Rebuilds the flat tree of the page in `out`. */
class Cloner {
  elements = 0;
  truncated = false;
  readonly images: ImageUse[] = [];
  readonly #win: Window;
  readonly #out: Document;
  readonly #max: number;
  readonly #deadline: number;
  readonly #prune: boolean;
  readonly #scroll: { x: number; y: number; width: number; height: number };

  constructor(win: Window, out: Document, max: number, deadline: number) {
    this.#win = win;
    this.#out = out;
    this.#max = max;
    this.#deadline = deadline;
    // Only a page bigger than the cap loses its off-screen subtrees (they could hold positioned content that shows).
    this.#prune = win.document.getElementsByTagName('*').length > max;
    this.#scroll = { x: win.scrollX, y: win.scrollY, width: win.innerWidth, height: win.innerHeight };
  }

  #full(): boolean {
    if (this.elements >= this.#max || Date.now() > this.#deadline) this.truncated = true;
    return this.truncated;
  }

  #create(ns: string, name: string): Element {
    try {
      return this.#out.createElementNS(ns, name);
    } catch {
      return this.#out.createElementNS(ns === SVG_NS ? SVG_NS : XHTML, ns === SVG_NS ? 'g' : 'span');
    }
  }

  /** The copy of `el` (and its subtree), or `null` when it draws nothing or the cap is reached. */
  element(el: Element, parent: Values | null, inSvg: boolean): Element | null {
    if (this.#full()) return null;
    const ns = el.namespaceURI ?? XHTML;
    const tag = el.localName;
    if (ns === XHTML && SKIPPED.has(tag)) return null;
    const cs = this.#win.getComputedStyle(el);
    if (cs.display === 'none') return ns === SVG_NS && tag === 'svg' && !inSvg ? this.#hiddenSvg(el) : null;
    this.elements++;
    const values = read(cs);
    if (ns === XHTML && PLACEHOLDERS.has(tag)) return this.#placeholder(values, parent);

    const copy = this.#create(ns, tag);
    if (ns === SVG_NS) this.#svgAttributes(el, copy);
    else for (const a of el.attributes) if (HTML_ATTRIBUTES.has(a.name) && !(tag === 'input' && a.name === 'value')) copy.setAttribute(a.name, clean(a.value));
    if (inSvg) this.#svgStyle(copy, values, parent);
    else this.#apply(copy, values, parent, el);
    this.#formState(el, copy);
    if (el instanceof HTMLTextAreaElement) return copy; // its value is its text

    const rect = el.getBoundingClientRect();
    const visible = intersects(rect, this.#scroll.width, this.#scroll.height);
    if (el instanceof HTMLImageElement) {
      const src = el.currentSrc || el.src;
      if (src && visible) this.images.push({ url: src, apply: (d) => d !== undefined && copy.setAttribute('src', d) });
      return copy;
    }
    if (this.#prune && !visible && (cs.position === 'static' || cs.position === 'relative')) return copy; // its box, not its content

    const before = inSvg ? null : this.#pseudo(el, '::before', values);
    if (before) copy.append(before);
    const childInSvg = ns === SVG_NS && tag !== 'foreignObject';
    for (const child of this.#children(el)) {
      if (this.truncated) break;
      if (child.nodeType === Node.TEXT_NODE) {
        copy.append(this.#out.createTextNode(clean((child as Text).data)));
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        const c = this.element(child as Element, values, childInSvg);
        if (c) copy.append(c);
      }
    }
    const after = inSvg || this.truncated ? null : this.#pseudo(el, '::after', values);
    if (after) copy.append(after);
    return copy;
  }

  /** Children in the flat tree: a shadow root's content instead of the light children, a slot's assigned nodes. */
  #children(el: Element): Node[] {
    if (el instanceof HTMLSlotElement) {
      const assigned = el.assignedNodes();
      return assigned.length > 0 ? assigned : [...el.childNodes];
    }
    const open = el.shadowRoot ?? (typeof chrome !== 'undefined' && typeof chrome.dom?.openOrClosedShadowRoot === 'function' && el instanceof HTMLElement ? chrome.dom.openOrClosedShadowRoot(el) : null);
    return [...(open ?? el).childNodes];
  }

  /** A hidden `<svg>` may hold the symbols and gradients visible icons use: copied as it is, still hidden. */
  #hiddenSvg(el: Element): Element | null {
    if (!el.querySelector('symbol, defs')) return null;
    const copy = (node: Element): Element | null => {
      if (this.#full()) return null;
      this.elements++;
      const c = this.#create(node.namespaceURI ?? SVG_NS, node.localName);
      this.#svgAttributes(node, c);
      for (const child of node.childNodes) {
        if (child.nodeType === Node.TEXT_NODE) c.append(this.#out.createTextNode(clean((child as Text).data)));
        else if (child.nodeType === Node.ELEMENT_NODE) {
          const cc = copy(child as Element);
          if (cc) c.append(cc);
        }
      }
      return c;
    };
    const root = copy(el);
    if (root) {
      root.removeAttribute('style');
      (root as SVGElement).style.setProperty('display', 'none');
    }
    return root;
  }

  #svgAttributes(el: Element, copy: Element): void {
    for (const a of el.attributes) {
      const name = a.localName.toLowerCase();
      if (name.startsWith('on')) continue;
      if ((name === 'href' || name === 'src') && !a.value.startsWith('#')) continue;
      try {
        copy.setAttributeNS(a.namespaceURI, a.name, clean(a.value));
      } catch {
        // an attribute name XML cannot carry: left out
      }
    }
  }

  /** An empty box of the element's size and borders: what is inside is not drawn. */
  #placeholder(values: Values, parent: Values | null): Element {
    const box = this.#out.createElementNS(XHTML, 'div');
    this.#apply(box, values, parent, null);
    const s = (box as HTMLElement).style;
    if (values.display === 'inline') s.setProperty('display', 'inline-block');
    if (values['background-color'] === BOX['background-color']) s.setProperty('background-color', PLACEHOLDER_FILL);
    return box;
  }

  /** Sets on `copy` the values that differ from what it would get anyway. */
  #apply(copy: Element, v: Values, parent: Values | null, el: Element | null): void {
    const s = (copy as HTMLElement).style;
    const set = (p: string, value: string) => s.setProperty(p, value);
    for (const [p, initial] of Object.entries(BOX)) {
      const value = v[p];
      if (value === undefined || value === '' || value === initial) continue;
      if (p === 'background-image') {
        this.#backgroundImage(copy, value, el);
        continue;
      }
      set(p, p === 'clip-path' || p === 'filter' ? localUrls(value) : value);
    }
    for (const [p, shownBy] of Object.entries(CURRENT_COLOR)) {
      const value = v[p];
      if (value && value !== v.color && v[shownBy] !== 'none') set(p, value);
    }
    if (v['outline-style'] && v['outline-style'] !== 'none') for (const p of [...OUTLINE, 'outline-color']) if (v[p]) set(p, v[p]!);
    if (v.transform !== 'none' || v.translate !== 'none' || v.rotate !== 'none' || v.scale !== 'none') if (v['transform-origin']) set('transform-origin', v['transform-origin']);
    for (const p of INHERITED) {
      const value = v[p];
      if (value && (parent === null || parent[p] !== value)) set(p, p === 'fill' || p === 'stroke' ? localUrls(value) : value);
    }
    if (v.position === 'fixed' && el !== null) {
      // The copy's containing block is the whole document (shifted by the scroll), not the viewport.
      const top = parseFloat(v.top ?? '');
      const left = parseFloat(v.left ?? '');
      const r = el.getBoundingClientRect();
      set('top', `${(Number.isFinite(top) ? top : r.top - parseFloat(v['margin-top'] ?? '0')) + this.#scroll.y}px`);
      set('left', `${(Number.isFinite(left) ? left : r.left - parseFloat(v['margin-left'] ?? '0')) + this.#scroll.x}px`);
      set('bottom', 'auto');
      set('right', 'auto');
    }
  }

  /** Inside an inline SVG: only the inherited paint and text properties (geometry is in the attributes). */
  #svgStyle(copy: Element, v: Values, parent: Values | null): void {
    const s = (copy as SVGElement).style;
    for (const p of INHERITED) {
      const value = v[p];
      if (value && (parent === null || parent[p] !== value)) s.setProperty(p, p === 'fill' || p === 'stroke' ? localUrls(value) : value);
    }
    if (v.opacity && v.opacity !== '1') s.setProperty('opacity', v.opacity);
  }

  /** `url(...)` layers are inlined (same origin, within budget) or dropped. */
  #backgroundImage(copy: Element, value: string, el: Element | null): void {
    const urls = [...value.matchAll(/url\("([^"]*)"\)/g)].map((m) => m[1]!);
    const s = (copy as HTMLElement).style;
    if (urls.length === 0) {
      s.setProperty('background-image', value);
      return;
    }
    const shown = el === null || intersects(el.getBoundingClientRect(), this.#scroll.width, this.#scroll.height);
    const resolved = new Map<string, string | undefined>();
    let pending = urls.length;
    const finish = () => {
      const out = value.replace(/url\("([^"]*)"\)/g, (_w, u: string) => {
        const d = resolved.get(u);
        return d === undefined ? 'none' : `url("${d}")`;
      });
      if (out.replace(/none|,|\s/g, '') !== '') s.setProperty('background-image', out);
    };
    if (!shown) return;
    for (const url of urls) {
      this.images.push({
        url,
        apply: (d) => {
          resolved.set(url, d);
          if (--pending === 0) finish();
        },
      });
    }
  }

  /** Form state lives in properties, not attributes: written as attributes the copy shows. */
  #formState(el: Element, copy: Element): void {
    if (el instanceof HTMLInputElement) {
      if (el.type === 'checkbox' || el.type === 'radio') {
        if (el.checked) copy.setAttribute('checked', '');
      } else if (el.type === 'password') {
        copy.setAttribute('value', '•'.repeat(Math.min(el.value.length, 64)));
      } else if (el.type !== 'file') {
        copy.setAttribute('value', clean(el.value));
      }
    } else if (el instanceof HTMLTextAreaElement) {
      copy.textContent = clean(el.value);
    } else if (el instanceof HTMLOptionElement) {
      if (el.selected) copy.setAttribute('selected', '');
    }
  }

  /** `::before`/`::after` with a plain string `content`, as a span. */
  #pseudo(el: Element, which: '::before' | '::after', parent: Values): Element | null {
    if (el instanceof HTMLInputElement || el instanceof HTMLImageElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) return null;
    const cs = this.#win.getComputedStyle(el, which);
    const content = cs.getPropertyValue('content');
    if (content === 'none' || content === 'normal' || cs.display === 'none') return null;
    const text = contentText(content);
    if (text === undefined || this.#full()) return null;
    this.elements++;
    const span = this.#out.createElementNS(XHTML, 'span');
    this.#apply(span, read(cs), parent, null);
    if (text !== '') span.append(this.#out.createTextNode(clean(text)));
    return span;
  }
}

/** Fetches a same-origin image (at most `max` bytes) as a `data:` URL, else `undefined`. */
async function fetchImage(url: string, origin: string, max: number, signal: AbortSignal): Promise<string | undefined> {
  if (url.startsWith('data:')) return url.length <= max ? url : undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.origin !== origin || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) return undefined;
  try {
    const res = await fetch(parsed.href, { credentials: 'same-origin', cache: 'force-cache', redirect: 'error', signal });
    const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (!res.ok || !type.startsWith('image/') || !res.body) {
      await res.body?.cancel();
      return undefined;
    }
    if (Number(res.headers.get('content-length') ?? '0') > max) {
      await res.body.cancel();
      return undefined;
    }
    const chunks: Uint8Array<ArrayBuffer>[] = [];
    let size = 0;
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel();
        return undefined;
      }
      chunks.push(value);
    }
    return await blobToDataUrl(new Blob(chunks, { type }));
  } catch {
    return undefined;
  }
}

function blobToDataUrl(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result));
    r.onerror = () => reject(r.error ?? new Error('could not read the image'));
    r.readAsDataURL(blob);
  });
}

/** Inlines images in document order until the byte budget or the time runs out. */
async function inlineImages(uses: ImageUse[], origin: string, budget: number, deadline: number): Promise<{ inlined: number; skipped: number; bytes: number }> {
  const cache = new Map<string, string | undefined>();
  let bytes = 0;
  let inlined = 0;
  let skipped = 0;
  for (const use of uses) {
    const remaining = deadline - Date.now();
    if (budget - bytes <= 0 || remaining <= 0) {
      use.apply(undefined);
      skipped++;
      continue;
    }
    let data = cache.get(use.url);
    if (!cache.has(use.url)) {
      data = await fetchImage(use.url, origin, budget - bytes, AbortSignal.timeout(remaining));
      cache.set(use.url, data);
    }
    // Counted per use: each use puts the whole data URL into the SVG again.
    if (data !== undefined && bytes + data.length <= budget) {
      bytes += data.length;
      inlined++;
      use.apply(data);
    } else {
      skipped++;
      use.apply(undefined);
    }
  }
  return { inlined, skipped, bytes };
}

function canvasBackground(win: Window): string {
  const transparent = (c: string) => c === '' || c === 'transparent' || /^rgba\(.*,\s*0\)$/.test(c);
  const root = win.document.documentElement ? win.getComputedStyle(win.document.documentElement).backgroundColor : '';
  if (!transparent(root)) return root;
  const body = win.document.body ? win.getComputedStyle(win.document.body).backgroundColor : '';
  return transparent(body) ? CANVAS_DEFAULT : body;
}

/** Copies the visible page into a self-contained SVG document (no drawing yet). */
export async function snapshotViewport(opts: SnapshotOptions, win: Window = window): Promise<Snapshot> {
  const doc = win.document;
  const root = doc.documentElement;
  if (!root) throw new PalisadeError('PAL_ERR_STEP_FAILED', 'the page has no document to draw');
  const width = Math.max(1, Math.round(win.innerWidth));
  const height = Math.max(1, Math.round(win.innerHeight));
  const out = doc.implementation.createHTMLDocument('');
  const cloner = new Cloner(win, out, opts.maxElements ?? MAX_ELEMENTS, opts.cloneDeadline);
  const page = cloner.element(root, null, false);
  // The root element's margins do not collapse with its children's in a real page; nor in the copy.
  if (page instanceof HTMLElement && page.style.getPropertyValue('display') === 'block') page.style.setProperty('display', 'flow-root');
  const images = await inlineImages(cloner.images, win.location.origin, opts.maxImageBytes ?? MAX_IMAGE_BYTES, opts.imageDeadline);

  const svg = out.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const reset = out.createElementNS(SVG_NS, 'style');
  // Nothing of the user-agent sheet applies to the copies: each carries its computed values.
  reset.textContent = `@namespace h url(${XHTML}); h|* { all: unset; }`;
  const fo = out.createElementNS(SVG_NS, 'foreignObject');
  fo.setAttribute('x', '0');
  fo.setAttribute('y', '0');
  fo.setAttribute('width', String(width));
  fo.setAttribute('height', String(height));
  // The document, shifted by the scroll offset; it is the containing block of absolute and fixed boxes.
  const stage = out.createElementNS(XHTML, 'div') as HTMLElement;
  stage.style.setProperty('display', 'flow-root'); // margins of the page never collapse through it
  stage.style.setProperty('position', 'relative');
  stage.style.setProperty('width', `${Math.max(root.scrollWidth, width)}px`);
  stage.style.setProperty('height', `${Math.max(root.scrollHeight, height)}px`);
  stage.style.setProperty('transform', `translate(${-win.scrollX}px, ${-win.scrollY}px)`);
  stage.style.setProperty('transform-origin', '0 0');
  if (page) stage.append(page);
  fo.append(stage);
  svg.append(reset, fo);
  const text = new XMLSerializer().serializeToString(svg).toWellFormed();
  return {
    svg: text,
    width,
    height,
    background: canvasBackground(win),
    elements: cloner.elements,
    truncated: cloner.truncated,
    imagesInlined: images.inlined,
    imagesSkipped: images.skipped,
    imageBytes: images.bytes,
  };
}

/** Draws a snapshot and returns it as a PNG `data:` URL; `PAL_ERR_STEP_FAILED` when Chrome cannot. */
export async function drawSnapshot(shot: Snapshot, deadline: number): Promise<string> {
  const img = new Image(shot.width, shot.height);
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(shot.svg)}`;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      img.decode(),
      new Promise<never>((_r, reject) => {
        timer = setTimeout(() => reject(new PalisadeError('PAL_ERR_TIMEOUT', 'drawing the page took longer than the step timeout')), Math.max(0, deadline - Date.now()));
      }),
    ]);
  } catch (e) {
    if (e instanceof PalisadeError) throw e;
    throw new PalisadeError('PAL_ERR_STEP_FAILED', `could not draw the page: its copy did not load as an SVG image (${(e as Error).message})`);
  } finally {
    clearTimeout(timer);
  }
  try {
    const canvas = new OffscreenCanvas(shot.width, shot.height);
    const ctx = canvas.getContext('2d');
    if (!ctx) throw new Error('no 2D context');
    ctx.fillStyle = shot.background;
    ctx.fillRect(0, 0, shot.width, shot.height);
    ctx.drawImage(img, 0, 0, shot.width, shot.height);
    return await blobToDataUrl(await canvas.convertToBlob({ type: 'image/png' }));
  } catch (e) {
    const tainted = (e as { name?: string }).name === 'SecurityError';
    throw new PalisadeError('PAL_ERR_STEP_FAILED', tainted ? 'could not draw the page: Chrome tainted the canvas' : `could not draw the page: ${(e as Error).message}`);
  }
}

/** The `screenshot` step in the page: the viewport as a PNG `data:` URL, within `timeoutMs`. */
export async function renderViewport(timeoutMs: number): Promise<string> {
  const start = Date.now();
  const shot = await snapshotViewport({ cloneDeadline: start + timeoutMs * 0.4, imageDeadline: start + timeoutMs * 0.7 });
  return drawSnapshot(shot, start + timeoutMs);
}
