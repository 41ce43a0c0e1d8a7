/**
 * The built-in recipes in `recipes/` and the recorded flows in `test/fixtures/flows/` are valid
 * protocol documents: schema, names, declared placeholders, no code-running steps, and they bind
 * to concrete inputs that stay on their site.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import {
  Recipe,
  RecorderFlow,
  Steps,
  bindSteps,
  checkNavigation,
  checkStepUrls,
  interpolate,
  parse,
  parseOrigin,
  refuseCodeSteps,
  resolveInputs,
  validator,
  PalisadeError,
  type Recipe as RecipeT,
} from '../src/index.ts';
import { RECORDER_PLACEHOLDER_ORIGIN, loadRecorderFlow } from '../../../test/fixtures/site.ts';

const RECIPES_DIR = new URL('../../../recipes/', import.meta.url);
const FLOWS_DIR = new URL('../../../test/fixtures/flows/', import.meta.url);
const recipeValidator = validator(Recipe);
const stepsValidator = validator(Steps);
const flowValidator = validator(RecorderFlow);

const SAMPLE_SITE = 'http://127.0.0.1:8123';
const SAMPLE_INPUT: Record<string, string> = { site: SAMPLE_SITE, query: 'palisade <b>"x"</b>', prompt: 'a lighthouse at dusk, ${input.site}' };

const recipeFiles = readdirSync(RECIPES_DIR).filter((f) => f.endsWith('.json')).sort();

/** Every `${input.NAME}` in any string of `value`. */
function placeholders(value: unknown, out = new Set<string>()): Set<string> {
  if (typeof value === 'string') for (const m of value.matchAll(/\$\{input\.([A-Za-z_][A-Za-z0-9_]*)\}/g)) out.add(m[1]!);
  else if (Array.isArray(value)) for (const v of value) placeholders(v, out);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) placeholders(v, out);
  return out;
}

/** Problems with a recipe's placeholders: used but undeclared, or declared but unused. */
function placeholderProblems(recipe: RecipeT): string[] {
  const used = placeholders([recipe.site, recipe.steps]);
  const declared = new Set(Object.keys(recipe.inputs));
  return [
    ...[...used].filter((n) => !declared.has(n)).map((n) => `\${input.${n}} is not declared`),
    ...[...declared].filter((n) => !used.has(n)).map((n) => `input "${n}" is never used`),
  ];
}

/** The issue paths of the `PAL_ERR_VALIDATION` that `fn` throws. */
function issuePaths(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PalisadeError && e.code === 'PAL_ERR_VALIDATION', String(e));
    return (e.errors ?? []).map((i) => i.path);
  }
  assert.fail('expected PAL_ERR_VALIDATION');
}

function readRecipe(file: string): unknown {
  return JSON.parse(readFileSync(new URL(file, RECIPES_DIR), 'utf8'));
}

test('the built-in recipes are there', () => {
  assert.deepEqual(recipeFiles, ['image-prompt.json', 'search-extract.json']);
});

for (const file of recipeFiles) {
  test(`recipe ${file}`, async (t) => {
    const raw = readRecipe(file);
    const recipe = parse(recipeValidator, raw, `recipe ${file}`);

    await t.test('is named after its file', () => {
      assert.equal(`${recipe.name}.json`, file);
    });

    await t.test('declares every placeholder it uses and uses every input it declares', () => {
      assert.deepEqual(placeholderProblems(recipe), []);
    });

    await t.test('has no code-running steps', () => {
      assert.doesNotThrow(() => refuseCodeSteps((raw as { steps: unknown }).steps));
    });

    await t.test('runs on ${input.site}, an origin input', () => {
      assert.equal(recipe.site, '${input.site}');
      assert.equal(recipe.inputs.site?.format, 'origin');
      assert.notEqual(recipe.inputs.site?.required, false);
      assert.equal(recipe.inputs.site?.default, undefined);
    });

    await t.test('lists exactly its extract steps as outputs', () => {
      const extracts = recipe.steps.flatMap((s) => (s.type === 'extract' ? [s.name] : []));
      assert.deepEqual([...(recipe.outputs ?? [])].sort(), extracts.sort());
    });

    await t.test('names elements with Recorder-style alternatives (CSS and aria/)', () => {
      for (const [i, s] of recipe.steps.entries()) {
        if (!('selectors' in s) || s.selectors === undefined) continue;
        for (const sel of s.selectors) assert.ok(Array.isArray(sel) && sel.length >= 1, `step ${i}: each alternative is an array`);
        if (s.type === 'click' || s.type === 'change') {
          const firsts = s.selectors.map((sel) => (Array.isArray(sel) ? sel[0]! : sel));
          assert.ok(firsts.some((x) => x.startsWith('aria/')), `step ${i}: has an aria/ alternative`);
          assert.ok(firsts.some((x) => !/^(aria|xpath|pierce|text)\//.test(x)), `step ${i}: has a CSS alternative`);
        }
      }
    });

    await t.test('binds to sample inputs: valid steps, values inserted verbatim, every URL on the site', () => {
      const values = resolveInputs(recipe, Object.fromEntries(Object.keys(recipe.inputs).filter((k) => k in SAMPLE_INPUT).map((k) => [k, SAMPLE_INPUT[k]!])));
      const site = parseOrigin(interpolate(recipe.site, values));
      assert.equal(site, SAMPLE_SITE);
      const bound = bindSteps(recipe.steps, values);
      assert.ok(stepsValidator.check(bound), JSON.stringify(stepsValidator.issues(bound)));
      // Values are inserted verbatim and not substituted again: the prompt's literal "${input.site}" survives.
      const leftovers = [...placeholders(bound)];
      assert.deepEqual(leftovers, 'prompt' in recipe.inputs ? ['site'] : []);
      assert.doesNotThrow(() => checkStepUrls(bound, site));
      assert.ok(bound.some((s) => s.type === 'navigate' && s.url.startsWith(`${SAMPLE_SITE}/`)));
    });

    await t.test('refuses inputs that break its declared rules', () => {
      const required = Object.entries(recipe.inputs).filter(([, spec]) => spec.default === undefined).map(([k]) => `/input/${k}`);
      assert.deepEqual(issuePaths(() => resolveInputs(recipe, {})), required);
      assert.deepEqual(issuePaths(() => resolveInputs(recipe, { site: SAMPLE_SITE, nope: 'x' })).filter((p) => p === '/input/nope'), ['/input/nope']);
    });
  });
}

test('search-extract extracts {title, url, snippet} of every result', () => {
  const recipe = parse(recipeValidator, readRecipe('search-extract.json'));
  const extract = recipe.steps.find((s) => s.type === 'extract');
  assert.ok(extract && extract.type === 'extract');
  assert.equal(extract.all, true);
  assert.equal(extract.limit, 10);
  assert.deepEqual(extract.fields, { title: { selector: 'a' }, url: { selector: 'a', attribute: 'href' }, snippet: { selector: '.snippet' } });
  assert.equal(recipe.inputs.path?.default, '/search');
  assert.throws(() => resolveInputs(recipe, { site: SAMPLE_SITE, query: 'x', path: '/a?b=c' }), PalisadeError);
});

test('image-prompt waits for idle with an image, then extracts and downloads it', () => {
  const recipe = parse(recipeValidator, readRecipe('image-prompt.json'));
  const types = recipe.steps.map((s) => s.type);
  assert.deepEqual(types, ['navigate', 'click', 'change', 'click', 'waitForElement', 'extract', 'download']);
  const wait = recipe.steps[4]!;
  assert.ok(wait.type === 'waitForElement');
  assert.deepEqual(wait.selectors[0], ['[data-state="idle"] img[data-generated]']);
  const download = recipe.steps[6]!;
  assert.ok(download.type === 'download');
  assert.equal(download.filename, '${input.filename}');
  assert.equal(resolveInputs(recipe, { site: SAMPLE_SITE, prompt: 'p' }).filename, 'generated.png');
  assert.throws(() => resolveInputs(recipe, { site: SAMPLE_SITE, prompt: 'p', filename: '../evil.png' }), PalisadeError);
});

test('the placeholder check catches an undeclared input and an unused one', () => {
  const recipe = parse(recipeValidator, readRecipe('search-extract.json'));
  const broken: RecipeT = structuredClone(recipe);
  broken.steps.push({ type: 'change', selectors: [['#q']], value: '${input.missing}' });
  broken.inputs.spare = { default: 'x' };
  assert.deepEqual(placeholderProblems(broken), ['${input.missing} is not declared', 'input "spare" is never used']);
});

test('a recipe with a code-running step is refused', () => {
  const raw = readRecipe('search-extract.json') as { steps: unknown[] };
  raw.steps.push({ type: 'waitForExpression', expression: 'true' });
  assert.equal(recipeValidator.check(raw), false);
  assert.throws(() => refuseCodeSteps(raw.steps), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_STEP_REFUSED');
});

test('recorded flows validate against RecorderFlow', () => {
  const files = readdirSync(FLOWS_DIR).filter((f) => f.endsWith('.recorder.json'));
  assert.deepEqual(files, ['search.recorder.json']);
  for (const f of files) {
    const raw: unknown = JSON.parse(readFileSync(new URL(f, FLOWS_DIR), 'utf8'));
    assert.ok(flowValidator.check(raw), `${f}: ${JSON.stringify(flowValidator.issues(raw))}`);
    assert.doesNotThrow(() => refuseCodeSteps((raw as { steps: unknown }).steps));
  }
});

test('search.recorder.json is a Recorder export that runs on the fixture site once its origin is set', () => {
  const text = readFileSync(new URL('search.recorder.json', FLOWS_DIR), 'utf8');
  assert.ok(text.includes(RECORDER_PLACEHOLDER_ORIGIN));
  // Unreplaced, the placeholder origin is not a URL at all, so the flow cannot run by accident.
  const raw = parse(flowValidator, JSON.parse(text));
  const nav = raw.steps.find((s) => s.type === 'navigate');
  assert.ok(nav && nav.type === 'navigate');
  assert.throws(() => checkNavigation(nav.url, 'http://127.0.0.1:8123'), PalisadeError);

  const origin = 'http://127.0.0.1:8123';
  const flow = parse(flowValidator, loadRecorderFlow('search', origin));
  assert.deepEqual(flow.steps.map((s) => s.type), ['setViewport', 'navigate', 'click', 'change', 'keyDown', 'keyUp', 'waitForElement', 'waitForElement']);
  assert.doesNotThrow(() => checkStepUrls(flow.steps, origin));
  assert.ok(!JSON.stringify(flow).includes('PORT'));

  const [viewport, navigate, click, change, keyDown, keyUp] = flow.steps;
  assert.deepEqual(viewport, { type: 'setViewport', width: 1280, height: 720, deviceScaleFactor: 1, isMobile: false, hasTouch: false, isLandscape: false });
  assert.deepEqual(navigate, { type: 'navigate', url: `${origin}/recorder`, assertedEvents: [{ type: 'navigation', url: `${origin}/recorder`, title: 'Recorder fixture' }] });
  const qSelectors = [['aria/Search'], ['#q'], ['xpath///*[@id="q"]'], ['pierce/#q']];
  assert.deepEqual(click, { type: 'click', target: 'main', selectors: qSelectors, offsetY: 13, offsetX: 85 });
  assert.deepEqual(change, { type: 'change', value: 'palisade', selectors: qSelectors, target: 'main' });
  assert.ok(keyDown?.type === 'keyDown' && keyDown.key === 'Enter');
  assert.equal(keyDown.assertedEvents?.[0]?.url, `${origin}/recorder/results?q=palisade`);
  assert.deepEqual(keyUp, { type: 'keyUp', key: 'Enter', target: 'main' });
});
