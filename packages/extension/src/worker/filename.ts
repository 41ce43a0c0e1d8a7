/**
 * @module worker/filename — turns an untrusted name (from a task or a URL) into a safe base name
 * for `chrome.downloads.download`: no path separators, no `..`, no control or bidi characters,
 * no reserved Windows names, at most 120 characters, the extension kept.
 */

/** Longest name produced. */
export const MAX_FILENAME_LENGTH = 120;
/** Used when nothing usable is left. */
export const FALLBACK_FILENAME = 'download';

const RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$/i;
// Control characters (C0, DEL, C1), bidi overrides/isolates and zero-width characters that disguise names.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
// Path separators and characters Windows refuses in names.
const UNSAFE = /[/\\<>:"|?*]/g;
const MAX_EXTENSION = 16;

/**
 * A safe base name for a download.
 * @example sanitizeFilename('../../etc/passwd') === 'etc_passwd'
 * @example sanitizeFilename('CON.txt') === '_CON.txt'
 */
export function sanitizeFilename(raw: string): string {
  let name = raw.normalize('NFC').replace(INVISIBLE, '');
  name = name.replace(UNSAFE, '_');
  // No `..` anywhere, no leading dots (hidden files, relative names), no trailing dots or spaces (Windows).
  name = name.replace(/\.{2,}/g, '.').replace(/^[.\s_]+/, '').replace(/[.\s]+$/, '');
  name = name.replace(/\s+/g, ' ').replace(/_{2,}/g, '_');
  if (name === '') return FALLBACK_FILENAME;

  const dot = name.lastIndexOf('.');
  let stem = dot > 0 ? name.slice(0, dot) : name;
  let ext = dot > 0 ? name.slice(dot) : '';
  if (ext.length > MAX_EXTENSION + 1) {
    stem = name;
    ext = '';
  }
  // Reserved device names are reserved with any extension, and before the first dot.
  const firstPart = stem.split('.')[0] ?? '';
  if (RESERVED.test(firstPart.trim())) stem = `_${stem}`;
  if (stem.length + ext.length > MAX_FILENAME_LENGTH) {
    stem = truncate(stem, MAX_FILENAME_LENGTH - ext.length).replace(/[.\s]+$/, '');
  }
  return stem + ext;
}

/** Cuts at a code point boundary (never half a surrogate pair). */
function truncate(text: string, max: number): string {
  let out = '';
  for (const ch of text) {
    if (out.length + ch.length > max) break;
    out += ch;
  }
  return out;
}

/** The last path segment of a URL, decoded, or `undefined` if it has none. */
export function filenameFromUrl(url: string): string | undefined {
  try {
    const path = new URL(url).pathname;
    const last = path.slice(path.lastIndexOf('/') + 1);
    if (last === '') return undefined;
    try {
      return decodeURIComponent(last);
    } catch {
      return last;
    }
  } catch {
    return undefined;
  }
}
