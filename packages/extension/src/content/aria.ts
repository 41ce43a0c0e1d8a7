/**
 * @module content/aria — a small accessible-name and role computation for `aria/` selectors:
 * aria-labelledby, aria-label, associated `<label>`, `alt`, `title`, `placeholder`, and the text
 * content for roles named from content (buttons, links, headings, …). Not the full W3C algorithm.
 */

const NAME_FROM_CONTENT = new Set([
  'button', 'link', 'heading', 'option', 'menuitem', 'menuitemcheckbox', 'menuitemradio', 'tab', 'treeitem',
  'cell', 'columnheader', 'rowheader', 'checkbox', 'radio', 'switch', 'tooltip', 'listitem', 'row', 'gridcell',
]);

const squash = (t: string) => t.replace(/\s+/g, ' ').trim();

/** The element's role: its `role` attribute, or the implicit role of its tag. */
export function roleOf(el: Element): string | undefined {
  const explicit = el.getAttribute('role')?.trim().split(/\s+/)[0];
  if (explicit) return explicit.toLowerCase();
  const tag = el.tagName.toLowerCase();
  switch (tag) {
    case 'a':
    case 'area':
      return el.hasAttribute('href') ? 'link' : undefined;
    case 'button':
      return 'button';
    case 'summary':
      return 'button';
    case 'h1': case 'h2': case 'h3': case 'h4': case 'h5': case 'h6':
      return 'heading';
    case 'img':
      return el.getAttribute('alt') === '' ? 'presentation' : 'img';
    case 'input': {
      const type = (el.getAttribute('type') ?? 'text').toLowerCase();
      if (['button', 'submit', 'reset', 'image'].includes(type)) return 'button';
      if (type === 'checkbox') return 'checkbox';
      if (type === 'radio') return 'radio';
      if (type === 'range') return 'slider';
      if (type === 'number') return 'spinbutton';
      if (type === 'search') return el.hasAttribute('list') ? 'combobox' : 'searchbox';
      if (['text', 'email', 'tel', 'url', 'password', ''].includes(type)) return el.hasAttribute('list') ? 'combobox' : 'textbox';
      return undefined;
    }
    case 'textarea':
      return 'textbox';
    case 'select':
      return el.hasAttribute('multiple') || Number(el.getAttribute('size') ?? '0') > 1 ? 'listbox' : 'combobox';
    case 'option':
      return 'option';
    case 'ul': case 'ol':
      return 'list';
    case 'li':
      return 'listitem';
    case 'nav':
      return 'navigation';
    case 'main':
      return 'main';
    case 'form':
      return 'form';
    case 'table':
      return 'table';
    case 'tr':
      return 'row';
    case 'td':
      return 'cell';
    case 'th':
      return 'columnheader';
    case 'dialog':
      return 'dialog';
    case 'iframe':
      return 'iframe';
    default:
      return undefined;
  }
}

function textOf(el: Element): string {
  return squash(el instanceof HTMLElement ? (el.innerText || el.textContent || '') : (el.textContent ?? ''));
}

function labelsOf(el: Element): string | undefined {
  if (!(el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement || el instanceof HTMLButtonElement)) return undefined;
  const labels = el.labels ? [...el.labels] : [];
  if (labels.length === 0) return undefined;
  // A wrapping label's text includes the control's own value; use the label text without it.
  const text = labels.map((l) => {
    const clone = l.cloneNode(true) as HTMLElement;
    for (const c of clone.querySelectorAll('input, textarea, select')) c.remove();
    return squash(clone.textContent ?? '');
  });
  return squash(text.join(' ')) || undefined;
}

/** The accessible name of `el`, whitespace-normalised ('' if it has none). */
export function accessibleName(el: Element): string {
  const labelledby = el.getAttribute('aria-labelledby');
  if (labelledby) {
    const root = el.getRootNode() as Document | ShadowRoot;
    const parts = labelledby
      .split(/\s+/)
      .map((id) => (root.getElementById ? root.getElementById(id) : null) ?? document.getElementById(id))
      .filter((x): x is HTMLElement => x !== null)
      .map(textOf);
    const name = squash(parts.join(' '));
    if (name) return name;
  }
  const label = el.getAttribute('aria-label');
  if (label && squash(label)) return squash(label);
  const fromLabel = labelsOf(el);
  if (fromLabel) return fromLabel;
  if (el instanceof HTMLInputElement && ['button', 'submit', 'reset'].includes(el.type)) {
    return squash(el.value || (el.type === 'submit' ? 'Submit' : el.type === 'reset' ? 'Reset' : ''));
  }
  if (el instanceof HTMLImageElement || (el instanceof HTMLInputElement && el.type === 'image')) {
    const alt = el.getAttribute('alt');
    if (alt && squash(alt)) return squash(alt);
  }
  const role = roleOf(el);
  if (role !== undefined && NAME_FROM_CONTENT.has(role)) {
    const text = textOf(el);
    if (text) return text;
  }
  const title = el.getAttribute('title');
  if (title && squash(title)) return squash(title);
  const placeholder = el.getAttribute('placeholder');
  if (placeholder && squash(placeholder)) return squash(placeholder);
  return '';
}
