/** Limits and refusals that live in one module each, crossed directly. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_ISSUES, TaskSubmission, validator } from '@palisade/protocol';
import { loadRecipes } from '../../src/tasks/recipes.ts';

describe('validation issues', () => {
  it(`report at most MAX_ISSUES (${MAX_ISSUES}) problems for one value`, () => {
    const body: Record<string, unknown> = { recipe: 'a' };
    for (let i = 0; i < MAX_ISSUES + 10; i++) body[`extra${i}`] = i;
    assert.equal(validator(TaskSubmission).issues(body).length, MAX_ISSUES);
  });
});

describe('recipe registry', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'palisade-recipes-'));
  const recipe = (name: string) => ({ palisade: 1, name, title: 't', site: 'https://a.example', inputs: {}, steps: [{ type: 'navigate', url: 'https://a.example/' }] });

  it('refuses to start on an invalid recipe, naming the file and the problem', () => {
    const d = dir();
    try {
      writeFileSync(join(d, 'bad.json'), JSON.stringify({ ...recipe('bad'), steps: [{ type: 'customStep', name: 'x' }] }));
      assert.throws(() => loadRecipes([d]), (e: Error) => e.message.includes('bad.json') && /steps\/0/.test(e.message));
      writeFileSync(join(d, 'bad.json'), '{ not json');
      assert.throws(() => loadRecipes([d]), /bad\.json is invalid/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('refuses a name defined twice', () => {
    const a = dir();
    const b = dir();
    try {
      writeFileSync(join(a, 'x.json'), JSON.stringify(recipe('same')));
      writeFileSync(join(b, 'y.json'), JSON.stringify(recipe('same')));
      assert.throws(() => loadRecipes([a, b]), /"same" is defined twice/);
      assert.equal(loadRecipes([a]).get('same').name, 'same');
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });
});
