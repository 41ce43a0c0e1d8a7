import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeSelector, normalizeText, parseChain, parseSelector } from '../../src/content/selectors.ts';

test('plain CSS', () => {
  assert.deepEqual(parseSelector('#q'), { kind: 'css', value: '#q' });
  assert.deepEqual(parseSelector('form > input[name="q"]'), { kind: 'css', value: 'form > input[name="q"]' });
});

test('aria/ with and without a role', () => {
  assert.deepEqual(parseSelector('aria/Search products'), { kind: 'aria', name: 'Search products', role: undefined });
  assert.deepEqual(parseSelector('aria/Show details[role="button"]'), { kind: 'aria', name: 'Show details', role: 'button' });
  assert.deepEqual(parseSelector("aria/Go[role='link']"), { kind: 'aria', name: 'Go', role: 'link' });
  assert.deepEqual(parseSelector('aria/Next[role=Button]'), { kind: 'aria', name: 'Next', role: 'button' });
  // Brackets that are not a role stay part of the name.
  assert.deepEqual(parseSelector('aria/Items [3]'), { kind: 'aria', name: 'Items [3]', role: undefined });
  assert.deepEqual(parseSelector('aria/  Spaced   name '), { kind: 'aria', name: 'Spaced name', role: undefined });
});

test('text/, xpath/, pierce/', () => {
  assert.deepEqual(parseSelector('text/Add to  cart'), { kind: 'text', value: 'Add to cart' });
  assert.deepEqual(parseSelector('xpath///*[@id="q"]'), { kind: 'xpath', value: '//*[@id="q"]' });
  assert.deepEqual(parseSelector('pierce/#shadow-btn'), { kind: 'pierce', value: '#shadow-btn' });
});

test('a prefix is only recognised at the start', () => {
  assert.deepEqual(parseSelector('div.aria/x'), { kind: 'css', value: 'div.aria/x' });
  assert.deepEqual(parseSelector('Text/x'), { kind: 'css', value: 'Text/x' });
});

test('a chain is parsed part by part; a string is a one-part chain', () => {
  assert.deepEqual(parseChain(['#frame', 'aria/Frame button']), [
    { kind: 'css', value: '#frame' },
    { kind: 'aria', name: 'Frame button', role: undefined },
  ]);
  assert.equal(parseChain('#q').length, 1);
});

test('describeSelector names what was tried', () => {
  assert.equal(describeSelector('#q'), '"#q"');
  assert.equal(describeSelector(['#host', 'pierce/button']), '["#host" > "pierce/button"]');
  assert.equal(normalizeText('  a \n\t b  '), 'a b');
});
