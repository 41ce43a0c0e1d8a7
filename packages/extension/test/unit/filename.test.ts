import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FALLBACK_FILENAME, MAX_FILENAME_LENGTH, filenameFromUrl, sanitizeFilename } from '../../src/worker/filename.ts';

test('keeps an ordinary name unchanged', () => {
  assert.equal(sanitizeFilename('report-2024.pdf'), 'report-2024.pdf');
  assert.equal(sanitizeFilename('Résumé final.docx'), 'Résumé final.docx');
});

test('removes path separators and parent references', () => {
  for (const raw of ['../../etc/passwd', '..\\..\\windows\\system32\\cmd.exe', '/abs/path/x.txt', 'a/../b.txt', '....//x']) {
    const out = sanitizeFilename(raw);
    assert.doesNotMatch(out, /[/\\]/, raw);
    assert.ok(!out.includes('..'), `${raw} → ${out}`);
    assert.ok(!out.startsWith('.'), `${raw} → ${out}`);
  }
  assert.equal(sanitizeFilename('../../etc/passwd'), 'etc_passwd');
});

test('removes control, bidi-override and zero-width characters', () => {
  assert.equal(sanitizeFilename('a\u0000b\u001fc\u007f.txt'), 'abc.txt');
  // U+202E would display "invoice‮fdp.exe" as "invoiceexe.pdf".
  assert.equal(sanitizeFilename('invoice\u202efdp.exe'), 'invoicefdp.exe');
  assert.equal(sanitizeFilename('zero\u200bwidth.txt'), 'zerowidth.txt');
});

test('replaces characters Windows refuses', () => {
  assert.equal(sanitizeFilename('a<b>c:d"e|f?g*h.txt'), 'a_b_c_d_e_f_g_h.txt');
});

test('prefixes reserved Windows device names, with or without extension', () => {
  assert.equal(sanitizeFilename('CON'), '_CON');
  assert.equal(sanitizeFilename('con.txt'), '_con.txt');
  assert.equal(sanitizeFilename('LPT1.tar.gz'), '_LPT1.tar.gz');
  assert.equal(sanitizeFilename('nul'), '_nul');
  assert.equal(sanitizeFilename('console.txt'), 'console.txt');
});

test('strips trailing dots and spaces, leading dots', () => {
  assert.equal(sanitizeFilename('name.txt. . '), 'name.txt');
  assert.equal(sanitizeFilename('.bashrc'), 'bashrc');
});

test('bounds the length to 120 and keeps the extension', () => {
  const out = sanitizeFilename(`${'x'.repeat(300)}.pdf`);
  assert.equal(out.length, MAX_FILENAME_LENGTH);
  assert.ok(out.endsWith('.pdf'));
  // Never cuts a surrogate pair in half.
  const emoji = sanitizeFilename(`${'😀'.repeat(100)}.png`);
  assert.ok(emoji.length <= MAX_FILENAME_LENGTH);
  assert.ok(emoji.endsWith('.png'));
  assert.ok(emoji.isWellFormed());
});

test('a very long "extension" is treated as part of the name', () => {
  const out = sanitizeFilename(`a.${'b'.repeat(200)}`);
  assert.equal(out.length, MAX_FILENAME_LENGTH);
});

test('falls back when nothing usable is left', () => {
  assert.equal(sanitizeFilename(''), FALLBACK_FILENAME);
  assert.equal(sanitizeFilename('../..'), FALLBACK_FILENAME);
  assert.equal(sanitizeFilename('\u0000\u0001'), FALLBACK_FILENAME);
});

test('filenameFromUrl takes the decoded last path segment', () => {
  assert.equal(filenameFromUrl('https://a.example/files/report%20final.txt?x=1'), 'report final.txt');
  assert.equal(filenameFromUrl('https://a.example/'), undefined);
  assert.equal(filenameFromUrl('not a url'), undefined);
});
