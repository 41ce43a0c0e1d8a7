/**
 * Fuzzes the HTTP API and the agent WebSocket endpoint with generated inputs, against a real
 * Palisade server in a child process (see bench/fuzz/fuzz.ts), and prints what it found.
 *
 *   node bench/fuzz/run.ts [--surface http|ws|all] [--count 10000] [--seed S] [--concurrency 8] [--limits lifted|default] [--json FILE]
 *   node bench/fuzz/run.ts --surface http --seed S --only 123,456     # replay inputs, printed in full
 *
 * `--write` puts the figures of the run in docs/FUZZING.md (between its `fuzz:SURFACE` markers).
 * `--heap-snapshots DIR` writes heap snapshots of the server after the warm-up and at the end.
 *
 * `--count` is per surface. The seed defaults to the time; every finding prints its seed and index.
 * `--limits lifted` (default) turns the server's rate limits off so inputs reach the handlers (they
 * all come from one address); `--limits default` keeps the shipped limits, to fuzz the limiter too.
 * Exits 1 when a rule was broken (known findings, listed in bench/fuzz/oracle.ts, aside).
 */
import { parseArgs } from 'node:util';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { machine, table } from '../lib.ts';
import { runSurface, problems, formatFinding, type Surface, type SurfaceResult } from './fuzz.ts';
import { KNOWN } from './oracle.ts';

const { values } = parseArgs({
  options: {
    surface: { type: 'string', default: 'all' }, count: { type: 'string', default: '10000' }, seed: { type: 'string' },
    concurrency: { type: 'string', default: '8' }, only: { type: 'string' }, json: { type: 'string' }, progress: { type: 'string', default: '10' },
    limits: { type: 'string', default: 'lifted' }, write: { type: 'boolean', default: false }, 'heap-snapshots': { type: 'string' },
  },
});
const surfaces: Surface[] = values.surface === 'all' ? ['http', 'ws'] : [values.surface as Surface];
if (!surfaces.every((s) => s === 'http' || s === 'ws')) throw new Error('--surface takes http, ws or all');
const seed = values.seed ?? String(Date.now());
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const only = values.only?.split(',').map(Number);
if (!Number.isInteger(count) || count < 1) throw new Error('--count takes a positive integer');
const limits = values.limits as 'lifted' | 'default';
if (limits !== 'lifted' && limits !== 'default') throw new Error('--limits takes lifted or default');

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

function summary(r: SurfaceResult): string {
  const m = r.memory;
  const lines = [
    `${r.surface}: ${r.done} inputs in ${r.seconds.toFixed(1)} s (${r.rate.toFixed(0)}/s), seed ${JSON.stringify(r.seed)}, concurrency ${r.concurrency}, rate limits ${r.limits}${r.framesSent !== undefined ? `, ${r.framesSent} frames written` : ''}`,
    `  memory (after a full GC): start rss ${mib(m.start.rss)} heap ${mib(m.start.heapUsed)} · after warm-up rss ${mib(m.warm.rss)} heap ${mib(m.warm.heapUsed)} · end rss ${mib(m.end.rss)} heap ${mib(m.end.heapUsed)} · drift warm→end heap ${m.heapDriftPct.toFixed(1)} %, rss ${m.rssDriftPct.toFixed(1)} % · fds ${m.start.fds} → ${m.end.fds}`,
    `  canaries: /healthz p50 ${r.canary.http.p50.toFixed(1)} ms p99 ${r.canary.http.p99.toFixed(1)} ms max ${r.canary.http.max.toFixed(1)} ms (${r.canary.http.n}, ${r.canary.http.failures} failed) · agent ping p50 ${r.canary.ws.p50.toFixed(1)} ms p99 ${r.canary.ws.p99.toFixed(1)} ms max ${r.canary.ws.max.toFixed(1)} ms (${r.canary.ws.n}, ${r.canary.ws.failures} failed)`,
    `  outcomes: ${Object.entries(r.outcomes).slice(0, 40).map(([k, n]) => `${k} ×${n}`).join(', ')}`,
  ];
  for (const [id, k] of Object.entries(r.known)) lines.push(`  known finding ${id}: ×${k.count} (${KNOWN.find((x) => x.id === id)?.title ?? ''})`);
  const p = problems(r);
  lines.push(p.length === 0 ? '  ✔ no crash, no 5xx, no broken rule' : `  ✖ ${p.join('; ')}`);
  if (r.serverErrors.length > 0) lines.push(`  server error log (${r.serverErrors.length} lines), first: ${r.serverErrors.slice(0, 3).join('\n    ')}`);
  return lines.join('\n');
}

/** Replaces each surface's generated section of docs/FUZZING.md (`fuzz:SURFACE` markers) with this run's figures. */
function writeResults(rs: SurfaceResult[]): void {
  const doc = new URL('../../docs/FUZZING.md', import.meta.url);
  let text = existsSync(doc) ? readFileSync(doc, 'utf8') : '# Fuzzing\n';
  const m = (b: number) => (b / 2 ** 20).toFixed(1);
  for (const r of rs) {
    const start = `<!-- fuzz:${r.surface}:start -->`;
    const end = `<!-- fuzz:${r.surface}:end -->`;
    const cmd = `node bench/fuzz/run.ts --surface ${r.surface} --count ${count} --seed ${seed} --concurrency ${concurrency}${limits === 'default' ? ' --limits default' : ''}`;
    const body = [
      `Command: \`${cmd}\` · ${machine()} · finished ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      '',
      table(['inputs', 'time', 'rate', 'crash', 'broken rules (not known)', 'known findings hit'], [[
        `${r.done.toLocaleString('en')}${r.framesSent !== undefined ? ` (${r.framesSent.toLocaleString('en')} frames written)` : ''}`, `${(r.seconds / 60).toFixed(1)} min`, `${r.rate.toFixed(0)}/s`,
        r.crashed ? `yes (exit ${r.crashed.code})` : 'none', Object.entries(r.kinds).map(([k, n]) => `${k} ×${n}`).join(', ') || 'none',
        Object.entries(r.known).map(([k, v]) => `${k} ×${v.count.toLocaleString('en')}`).join(', ') || 'none',
      ]]),
      '',
      table(['server process', 'start (fixtures made)', 'after warm-up (10 %)', 'end', 'drift warm-up → end', 'max seen'], [
        ['RSS (MiB)', m(r.memory.start.rss), m(r.memory.warm.rss), m(r.memory.end.rss), `${r.memory.rssDriftPct.toFixed(1)} %`, m(Math.max(...r.memory.trace.map((p) => p.rss)))],
        ['heap used after a full GC (MiB)', m(r.memory.start.heapUsed), m(r.memory.warm.heapUsed), m(r.memory.end.heapUsed), `${r.memory.heapDriftPct.toFixed(1)} %`, ''],
        ['open file descriptors', String(r.memory.start.fds), String(r.memory.warm.fds), String(r.memory.end.fds), '', String(Math.max(...r.memory.trace.map((p) => p.fds)))],
      ]),
      '',
      `Heap used after a full GC at every tenth of the run (MiB): ${r.memory.gc.map((p) => m(p.heapUsed)).join(' → ')}; RSS at the same points (MiB): ${r.memory.gc.map((p) => m(p.rss)).join(' → ')}.`,
      '',
      `Canaries every 250 ms: \`GET /healthz\` p50 ${r.canary.http.p50.toFixed(1)} ms, p99 ${r.canary.http.p99.toFixed(1)} ms, max ${r.canary.http.max.toFixed(1)} ms; a well-behaved agent's ping p50 ${r.canary.ws.p50.toFixed(1)} ms, p99 ${r.canary.ws.p99.toFixed(1)} ms, max ${r.canary.ws.max.toFixed(1)} ms; ${r.canary.http.failures + r.canary.ws.failures} failures (${r.canary.http.n + r.canary.ws.n} probes).`,
      '',
      `Outcomes: ${Object.entries(r.outcomes).slice(0, 30).map(([k, n]) => `${k} ×${n.toLocaleString('en')}`).join(', ')}.`,
    ].join('\n');
    const i = text.indexOf(start);
    const j = text.indexOf(end);
    const block = `${start}\n${body}\n${end}`;
    text = i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(doc, text);
}

process.stderr.write(`fuzz · ${machine()}\n`);
const results: SurfaceResult[] = [];
for (const surface of surfaces) {
  results.push(await runSurface({ surface, seed, count, concurrency, only, limits, progressEvery: Number(values.progress), heapSnapshots: values['heap-snapshots'] }));
}
for (const r of results) {
  process.stdout.write(`\n${summary(r)}\n`);
  for (const f of r.findings.slice(0, 10)) process.stdout.write(`${formatFinding(f)}\n`);
  for (const [, k] of Object.entries(r.known)) process.stdout.write(`${formatFinding(k.example)}\n`);
}
if (values.json) writeFileSync(values.json, JSON.stringify({ machine: machine(), results }, null, 1));
if (values.write && !only) writeResults(results);
process.exit(results.some((r) => problems(r).length > 0) ? 1 : 0);
