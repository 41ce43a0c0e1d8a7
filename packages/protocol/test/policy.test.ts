import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError } from '../src/errors.ts';
import { checkNavigation, isGranted, originToPattern, parseOrigin } from '../src/url.ts';
import { bindSteps, interpolate, resolveInputs } from '../src/interpolate.ts';
import { checkStepUrls, refuseCodeSteps } from '../src/policy.ts';
import { parse, validator } from '../src/validate.ts';
import { Step, RecorderFlow, REFUSED_STEP_TYPES } from '../src/steps.ts';
import { TaskSubmission } from '../src/task.ts';
import { AgentFrame } from '../src/frames.ts';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PalisadeError);
    return e.code;
  }
  return 'no error';
};

describe('url policy', () => {
  it('accepts http(s) origins only, normalised', () => {
    assert.equal(parseOrigin('HTTPS://Example.COM:443'), 'https://example.com');
    assert.equal(parseOrigin('http://127.0.0.1:8080/'), 'http://127.0.0.1:8080');
    for (const bad of ['javascript:alert(1)', 'data:text/html,x', 'file:///etc/passwd', 'chrome://settings', 'ftp://x.example', 'chrome-extension://abc']) {
      assert.equal(code(() => parseOrigin(bad)), 'PAL_ERR_URL_REFUSED', bad);
    }
    assert.equal(code(() => parseOrigin('https://a.example/path')), 'PAL_ERR_VALIDATION');
    assert.equal(code(() => parseOrigin('https://user:pw@a.example')), 'PAL_ERR_URL_REFUSED');
    assert.equal(code(() => parseOrigin('not a url')), 'PAL_ERR_VALIDATION');
  });

  it('navigation stays on the site; every other scheme is refused', () => {
    assert.equal(checkNavigation('https://a.example/x?q=1', 'https://a.example'), 'https://a.example/x?q=1');
    for (const bad of ['javascript:alert(1)', ' JavaScript:alert(1)', 'data:,x', 'file:///x', 'chrome://version', 'about:blank', 'blob:https://a.example/1', 'https://b.example/', 'https://a.example:444/', 'http://a.example/']) {
      assert.equal(code(() => checkNavigation(bad, 'https://a.example')), 'PAL_ERR_URL_REFUSED', bad);
    }
  });

  it('grants are exact origins; patterns are Chrome match patterns', () => {
    assert.equal(isGranted('https://a.example', ['https://a.example']), true);
    assert.equal(isGranted('https://a.example:8443', ['https://a.example']), false);
    assert.equal(originToPattern('http://127.0.0.1:8080'), 'http://127.0.0.1/*');
  });
});

describe('interpolation', () => {
  it('substitutes data verbatim and never evaluates', () => {
    assert.equal(interpolate('q=${input.q}&x=${input.q}', { q: '${input.q}' }), 'q=${input.q}&x=${input.q}');
    assert.equal(interpolate('${input.a}', { a: '`${process.exit()}`' }), '`${process.exit()}`');
    assert.equal(code(() => interpolate('${input.missing}', {})), 'PAL_ERR_VALIDATION');
    const steps = bindSteps([{ type: 'change', selectors: [['#q']], value: '${input.q}' }], { q: 'hello' });
    assert.deepEqual(steps, [{ type: 'change', selectors: [['#q']], value: 'hello' }]);
  });

  it('checks inputs against the recipe: unknown, required, maxLength, pattern, defaults', () => {
    const recipe = { inputs: { q: { maxLength: 5 }, n: { pattern: '^[0-9]+$', default: '3' }, opt: { required: false } } };
    assert.deepEqual(resolveInputs(recipe, { q: 'abc' }), { q: 'abc', n: '3' });
    assert.equal(code(() => resolveInputs(recipe, {})), 'PAL_ERR_VALIDATION');
    assert.equal(code(() => resolveInputs(recipe, { q: 'toolong' })), 'PAL_ERR_VALIDATION');
    assert.equal(code(() => resolveInputs(recipe, { q: 'a', n: 'x' })), 'PAL_ERR_VALIDATION');
    assert.equal(code(() => resolveInputs(recipe, { q: 'a', zzz: '1' })), 'PAL_ERR_VALIDATION');
  });
});

describe('step policy', () => {
  it('refuses code-running steps by index', () => {
    assert.equal(code(() => refuseCodeSteps([{ type: 'click' }, { type: 'waitForExpression', expression: '1' }])), 'PAL_ERR_STEP_REFUSED');
    assert.equal(code(() => refuseCodeSteps([{ type: 'customStep', name: 'x' }])), 'PAL_ERR_STEP_REFUSED');
    assert.equal(code(() => refuseCodeSteps([{ type: 'click' }])), 'no error');
  });
  it('refuses navigate and download URLs off the site', () => {
    assert.equal(code(() => checkStepUrls([{ type: 'navigate', url: 'javascript:x' }], 'https://a.example')), 'PAL_ERR_URL_REFUSED');
    assert.equal(code(() => checkStepUrls([{ type: 'download', name: 'f', url: 'https://b.example/f.png' }], 'https://a.example')), 'PAL_ERR_URL_REFUSED');
    assert.equal(code(() => checkStepUrls([{ type: 'navigate', url: 'https://a.example/' }], 'https://a.example')), 'no error');
  });
});

describe('schemas', () => {
  it('refuse unknown fields everywhere with a path', () => {
    const v = validator(TaskSubmission);
    try {
      parse(v, { recipe: 'a', extra: 1 }, 'task');
      assert.fail('accepted an unknown field');
    } catch (e) {
      assert.ok(e instanceof PalisadeError);
      assert.equal(e.code, 'PAL_ERR_VALIDATION');
      assert.ok(e.errors?.some((i) => i.path === '/extra'));
    }
    assert.equal(validator(Step).check({ type: 'click', selectors: ['#a'], onclick: 'x' }), false);
    assert.equal(validator(AgentFrame).check({ type: 'ping', t: 1, x: 1 }), false);
  });
  it('accept every Recorder step shape', () => {
    const flow = {
      title: 'x', timeout: 5000, selectorAttribute: 'data-testid',
      steps: [
        { type: 'setViewport', width: 800, height: 600, deviceScaleFactor: 1, isMobile: false, hasTouch: false, isLandscape: false },
        { type: 'emulateNetworkConditions', download: 50000, upload: 50000, latency: 2000 },
        { type: 'navigate', url: 'https://a.example/', assertedEvents: [{ type: 'navigation', url: 'https://a.example/', title: 'A' }] },
        { type: 'click', target: 'main', selectors: [['aria/Search'], ['#q'], ['xpath///*[@id="q"]'], ['pierce/#q'], ['text/Go']], offsetX: 1, offsetY: 2 },
        { type: 'doubleClick', selectors: [['#q']], offsetX: 1, offsetY: 2, duration: 50, button: 'primary', deviceType: 'mouse' },
        { type: 'hover', selectors: [['#q']] },
        { type: 'change', target: 'main', selectors: [['#q']], value: 'x' },
        { type: 'keyDown', target: 'main', key: 'Enter' },
        { type: 'keyUp', target: 'main', key: 'Enter' },
        { type: 'scroll', target: 'main', x: 0, y: 100 },
        { type: 'waitForElement', selectors: [['li']], count: 2, operator: '>=', visible: true },
        { type: 'close' },
      ],
    };
    const v = validator(RecorderFlow);
    assert.deepEqual(v.issues(flow), []);
    assert.equal(v.check(flow), true);
  });
  it('bound sizes: at most 500 steps, strings bounded', () => {
    const v = validator(TaskSubmission);
    assert.equal(v.check({ site: 'https://a.example', steps: Array.from({ length: 501 }, () => ({ type: 'close' })) }), false);
    assert.equal(v.check({ site: 'https://a.example', steps: [{ type: 'navigate', url: 'x'.repeat(2049) }] }), false);
  });
});

describe('origin inputs', () => {
  it('are normalised, and a javascript: origin is refused as a URL', () => {
    const recipe = { inputs: { site: { format: 'origin' as const } } };
    assert.deepEqual(resolveInputs(recipe, { site: 'HTTPS://A.example:443' }), { site: 'https://a.example' });
    assert.equal(code(() => resolveInputs(recipe, { site: 'javascript:alert(1)' })), 'PAL_ERR_URL_REFUSED');
    assert.equal(code(() => resolveInputs(recipe, { site: 'https://a.example/path' })), 'PAL_ERR_VALIDATION');
  });
});

describe('binding budget', () => {
  it('refuses inputs that would blow the steps up, before building the string', () => {
    const placeholders = '${input.a}'.repeat(200);
    const steps = [{ type: 'change' as const, selectors: [placeholders], value: placeholders }];
    const big = 'x'.repeat(65_536);
    const before = process.memoryUsage().heapUsed;
    assert.equal(code(() => bindSteps(steps, { a: big })), 'PAL_ERR_VALIDATION');
    assert.ok(process.memoryUsage().heapUsed - before < 64 * 1024 * 1024, 'no gigabyte string was built');
    assert.equal(code(() => bindSteps(steps, { a: 'short' })), 'no error');
  });
});

describe('issues in tagged unions', () => {
  it('name the field inside the step, or say the type is unknown', () => {
    const issues = validator(TaskSubmission).issues({ site: 'https://a.example', steps: [{ type: 'click', selectors: ['a'], onclick: 1 }, { type: 'nope' }] });
    assert.deepEqual(issues.map((i) => i.path), ['/steps/0/onclick', '/steps/1/type']);
    assert.match(issues[1]!.message, /unknown type "nope"; expected one of navigate, click/);
  });
});

describe('step types', () => {
  it('are read off the Step union: all 16, none of them refused', async () => {
    const { STEP_TYPES } = await import('../src/steps.ts');
    assert.equal(STEP_TYPES.length, 16);
    assert.ok(STEP_TYPES.includes('emulateNetworkConditions') && STEP_TYPES.includes('extract'));
    assert.ok(!STEP_TYPES.some((t) => (REFUSED_STEP_TYPES as readonly string[]).includes(t)));
  });
});
