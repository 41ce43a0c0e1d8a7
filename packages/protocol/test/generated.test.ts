import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { render, COMPILED } from '../scripts/generate-checks.ts';
import * as compiled from '../src/generated/checks.js';

describe('ahead-of-time compiled checks', () => {
  it('are up to date with the schemas (regenerate with node packages/protocol/scripts/generate-checks.ts)', () => {
    const { js, dts } = render();
    assert.equal(readFileSync(new URL('../src/generated/checks.js', import.meta.url), 'utf8'), js);
    assert.equal(readFileSync(new URL('../src/generated/checks.d.ts', import.meta.url), 'utf8'), dts);
  });

  it('agree with the interpreter on valid and invalid samples', () => {
    const samples: Record<string, unknown[]> = {
      Step: [{ type: 'close' }, { type: 'close', x: 1 }, { type: 'navigate', url: 'https://a.example/' }, { type: 'navigate' }, { type: 'waitForExpression', expression: '1' }, null, 'x'],
      AgentFrame: [{ type: 'ping', t: 1 }, { type: 'ping', t: '1' }, { type: 'task.accept', taskId: 'abc' }, { type: 'task.accept', taskId: 'a b' }],
      ServerFrame: [
        { type: 'pong', t: 1 }, { type: 'task.cancel', taskId: 'x', reason: 'r' }, { type: 'task.cancel', taskId: 'x' },
        { type: 'task.dispatch', taskId: 'x', site: 'https://a.example', steps: [{ type: 'hover', selectors: ['a'] }], deadline: 1 },
        { type: 'task.dispatch', taskId: 'x', site: 'https://a.example', steps: [{ type: 'hover' }], deadline: 1 },
      ],
      TaskSubmission: [
        { recipe: 'a' }, { recipe: 'A!' }, { site: 'https://a.example', steps: [{ type: 'close' }] }, { steps: [] },
        { site: 'https://a.example', steps: [{ type: 'click', selectors: [['#a'], ['aria/B']] }, { type: 'close', extra: 1 }] },
        { site: 'https://a.example', steps: [{ type: 'toString' }] }, { site: 'https://a.example', steps: [{ type: 'constructor' }] },
        { site: 'https://a.example', steps: [['navigate']] }, { site: 'https://a.example', steps: [{ type: 'navigate', url: 'x'.repeat(2049) }] },
      ],
      Steps: [[{ type: 'close' }], [], [{ type: 'nope' }], [null], [{ type: 'extract', name: 'n', selectors: ['a'], fields: { t: { selector: 'b' } } }]],
      RecorderFlow: [{ title: 't', steps: [{ type: 'setViewport', width: 1, height: 1 }] }, { title: 't', steps: [{ type: 'setViewport', width: 0, height: 1 }] }],
    };
    for (const [name, values] of Object.entries(samples)) {
      const check = (compiled as Record<string, (v: unknown) => boolean>)[`check${name}`]!;
      for (const v of values) assert.equal(check(v), Value.Check(COMPILED[name]!, v), `${name} ${JSON.stringify(v)}`);
    }
  });
});
