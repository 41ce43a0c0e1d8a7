/**
 * @module bench/validation — schema validation cost of one protocol message (budget: ≤ 5 µs p99).
 *
 * Four representative messages, each checked by (a) the protocol's interpreting `validator()` (the
 * baseline; no generated code), (b) the checks compiled ahead of time into
 * `packages/protocol/src/generated/checks.js` — what the server and the extension run — and (c)
 * TypeBox's run-time `TypeCompiler.Compile`, for reference (Palisade does not use it). After a warm-up, every single check is timed on its own with
 * `process.hrtime.bigint()`; p50/p99/p99.9 are reported in µs, next to the cost of the timer itself.
 *
 * `node bench/validation.bench.ts [--iterations N] [--write]` prints markdown tables; `--write`
 * also replaces the section between `<!-- bench:validation:start -->` and `<!-- bench:validation:end -->`
 * in `docs/BENCHMARKS.md` (through `bench/lib.ts`).
 */
import { loadavg } from 'node:os';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { machine, writeSection } from './lib.ts';
import * as aot from '../packages/protocol/src/generated/checks.js';
import { AgentFrame, DownloadStep, ServerFrame, Step as StepSchema, TaskSubmission, validator, type Step } from '../packages/protocol/src/index.ts';

/** The budget from ARCHITECTURE.md. */
export const BUDGET_P99_US = 5;
const DEFAULT_ITERATIONS = 200_000;
const WARMUP_ITERATIONS = 20_000;

const SITE = 'https://images.example.com';
const q = [['aria/Search'], ['#q'], ['input[type="search"]'], ['xpath///*[@id="q"]'], ['pierce/#q']];

/** A realistic mix of steps, cycled to the length wanted. */
const STEP_CYCLE: Step[] = [
  { type: 'setViewport', width: 1280, height: 720, deviceScaleFactor: 1, isMobile: false, hasTouch: false, isLandscape: false },
  { type: 'navigate', url: `${SITE}/search`, assertedEvents: [{ type: 'navigation', url: `${SITE}/search`, title: 'Search' }] },
  { type: 'click', target: 'main', selectors: q, offsetX: 85, offsetY: 13 },
  { type: 'change', target: 'main', selectors: q, value: 'a lighthouse at dusk, oil on canvas' },
  { type: 'keyDown', target: 'main', key: 'Enter' },
  { type: 'keyUp', target: 'main', key: 'Enter' },
  { type: 'waitForElement', target: 'main', selectors: [['li[data-result]'], ['#results > li']], timeout: 15_000, operator: '>=', count: 1 },
  { type: 'extract', target: 'main', name: 'results', selectors: [['li[data-result]']], all: true, limit: 10, fields: { title: { selector: 'a' }, url: { selector: 'a', attribute: 'href' }, snippet: { selector: '.snippet' } } },
  { type: 'download', target: 'main', name: 'image-file', selectors: [['a[download][data-generated]'], ['aria/Download image']], filename: 'generated.png' },
  { type: 'screenshot', name: 'final' },
];
const steps = (n: number): Step[] => Array.from({ length: n }, (_, i) => STEP_CYCLE[i % STEP_CYCLE.length]!);

interface Case {
  name: string;
  schemaName: string;
  schema: TSchema;
  message: unknown;
}

/** The messages measured, with the schema each is checked against on the wire. */
export const CASES: Case[] = [
  {
    name: 'TaskSubmission, 10 inline steps',
    schemaName: 'TaskSubmission',
    schema: TaskSubmission,
    message: { steps: steps(10), site: SITE, input: { query: 'a lighthouse at dusk' }, idempotencyKey: 'order-2024-11-23-0001', timeoutMs: 120_000 },
  },
  {
    name: 'task.progress frame',
    schemaName: 'AgentFrame',
    schema: AgentFrame,
    message: { type: 'task.progress', taskId: 'tsk_01JD3Z8Q4W5E6R7T8Y9U0I1O2P', step: 3, stepType: 'change', status: 'done', elapsedMs: 182.4 },
  },
  {
    name: 'task.dispatch frame, 20 steps',
    schemaName: 'ServerFrame',
    schema: ServerFrame,
    message: { type: 'task.dispatch', taskId: 'tsk_01JD3Z8Q4W5E6R7T8Y9U0I1O2P', site: SITE, steps: steps(20), deadline: 1_732_370_000_000 },
  },
  {
    name: 'task.result frame, 10 extracted results',
    schemaName: 'AgentFrame',
    schema: AgentFrame,
    message: {
      type: 'task.result',
      taskId: 'tsk_01JD3Z8Q4W5E6R7T8Y9U0I1O2P',
      outcome: 'succeeded',
      result: {
        outputs: {
          results: Array.from({ length: 10 }, (_, i) => ({ title: `Result ${i + 1}`, url: `${SITE}/item/${i + 1}`, snippet: `Snippet of result ${i + 1} for the query.` })),
          image: { url: `${SITE}/images/647c3a6520b87d38.png`, alt: 'Generated image: a lighthouse at dusk' },
        },
        artifacts: [{ name: 'image-file', kind: 'download', filename: 'generated.png', mimeType: 'image/png', bytes: 48_213 }],
        timings: { totalMs: 4210.5, steps: steps(7).map((s, index) => ({ index, type: s.type, ms: 100 + index * 37.5 })) },
      },
    },
  },
];

/**
 * Where the time goes: one step checked against the `Step` union (the interpreter tries the
 * variants in order; `download` is the 14th of 15) and against its own variant.
 */
export const DIAGNOSTIC_CASES: Case[] = [
  { name: 'one download step', schemaName: 'Step (union)', schema: StepSchema, message: STEP_CYCLE[8] },
  { name: 'one download step', schemaName: 'DownloadStep', schema: DownloadStep, message: STEP_CYCLE[8] },
];

/** One measured row. */
export interface Row {
  message: string;
  schema: string;
  validator: string;
  bytes: number;
  p50: number;
  p99: number;
  p999: number;
}

/** Nearest-rank percentile of sorted `ns`, in µs. */
function percentileUs(sorted: Float64Array, p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]! / 1000;
}

/** Times `check(message)` `iterations` times, each on its own; returns the sorted durations in ns. */
function measure(check: (v: unknown) => boolean, message: unknown, iterations: number): Float64Array {
  let ok = true;
  for (let i = 0; i < WARMUP_ITERATIONS; i++) ok = check(message) && ok;
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    const r = check(message);
    const t1 = process.hrtime.bigint();
    samples[i] = Number(t1 - t0);
    ok = r && ok;
  }
  if (!ok) throw new Error('a representative message failed validation: the benchmark would measure the error path');
  return samples.sort();
}

/** Runs every case under both validators. */
export function run(iterations = DEFAULT_ITERATIONS): { rows: Row[]; diagnostics: Row[]; timerP50: number; timerP99: number; load: number } {
  const load = loadavg()[0] ?? 0;
  const empty = measure(() => true, null, iterations);
  return { rows: measureCases(CASES, iterations), diagnostics: measureCases(DIAGNOSTIC_CASES, iterations), timerP50: percentileUs(empty, 50), timerP99: percentileUs(empty, 99), load };
}

function measureCases(cases: readonly Case[], iterations: number): Row[] {
  const rows: Row[] = [];
  for (const c of cases) {
    const interpreting = validator(c.schema);
    const compiled = TypeCompiler.Compile(c.schema);
    const ahead = (aot as Record<string, ((v: unknown) => boolean) | undefined>)[`check${c.schemaName.replace(' (union)', '')}`];
    // Both must agree that the message is valid and that a broken one is not.
    const broken = { ...(c.message as object), unexpected: true };
    if (!interpreting.check(c.message) || !compiled.Check(c.message) || interpreting.check(broken) || compiled.Check(broken)) {
      throw new Error(`${c.name}: validators disagree with the fixture: ${JSON.stringify(interpreting.issues(c.message))}`);
    }
    const bytes = Buffer.byteLength(JSON.stringify(c.message));
    if (ahead && (!ahead(c.message) || ahead(broken))) throw new Error(`${c.name}: the ahead-of-time check disagrees with the fixture`);
    const checks: [string, (v: unknown) => boolean][] = [['protocol validator() (interpreting)', (v: unknown) => interpreting.check(v)]];
    if (ahead) checks.push(['ahead-of-time compiled (used by server and extension)', ahead]);
    checks.push(['run-time TypeCompiler.Compile (reference)', (v: unknown) => compiled.Check(v)]);
    for (const [label, check] of checks) {
      const s = measure(check, c.message, iterations);
      rows.push({ message: c.name, schema: c.schemaName, validator: label, bytes, p50: percentileUs(s, 50), p99: percentileUs(s, 99), p999: percentileUs(s, 99.9) });
    }
  }
  return rows;
}

const fmt = (us: number): string => (us < 10 ? us.toFixed(2) : us.toFixed(1));

/** The markdown table of `rows`. */
export function table(rows: readonly Row[]): string {
  const lines = [
    `| message | schema | validator | JSON bytes | p50 µs | p99 µs | p99.9 µs | p99 ≤ ${BUDGET_P99_US} µs |`,
    '| --- | --- | --- | ---: | ---: | ---: | ---: | :---: |',
  ];
  for (const r of rows) {
    lines.push(`| ${r.message} | ${r.schema} | ${r.validator} | ${r.bytes} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.p999)} | ${r.p99 <= BUDGET_P99_US ? 'yes' : '**no**'} |`);
  }
  return lines.join('\n');
}

/** The body of the `validation` section of docs/BENCHMARKS.md. */
function section(result: ReturnType<typeof run>, iterations: number): string {
  const over = result.rows.filter((r) => r.p99 > BUDGET_P99_US);
  return `- command: \`node bench/validation.bench.ts --write\`
- ${machine()}; 1-minute load average at start ${result.load.toFixed(2)}
- ${iterations.toLocaleString('en')} timed checks per row after ${WARMUP_ITERATIONS.toLocaleString('en')} warm-up checks; each check timed on its own with \`process.hrtime.bigint()\`
- the timer itself costs p50 ${fmt(result.timerP50)} µs / p99 ${fmt(result.timerP99)} µs (an empty timed call), included in every number below

${table(result.rows)}

Where the time goes — one step, checked against the \`Step\` union and against its own variant:

${table(result.diagnostics)}

${over.length === 0 ? 'Every message is within budget under every validator.' : `Over budget (p99):\n\n${over.map((r) => `- ${r.message}, ${r.validator}: ${fmt(r.p99)} µs`).join('\n')}`}`;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const at = args.indexOf('--iterations');
  const iterations = at >= 0 ? Number(args[at + 1]) : DEFAULT_ITERATIONS;
  if (!Number.isInteger(iterations) || iterations < 1) throw new Error('--iterations takes a positive integer');
  const result = run(iterations);
  process.stdout.write(`${table(result.rows)}\n\n${table(result.diagnostics)}\n\ntimer overhead: p50 ${fmt(result.timerP50)} µs, p99 ${fmt(result.timerP99)} µs (${iterations} iterations per row, node ${process.version})\n`);
  if (args.includes('--write')) {
    writeSection('validation', `Schema validation of one protocol message (budget ≤ ${BUDGET_P99_US} µs p99)`, section(result, iterations));
    process.stdout.write('updated docs/BENCHMARKS.md\n');
  }
}
