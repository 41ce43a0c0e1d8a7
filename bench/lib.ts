/** Shared helpers for benchmarks: percentiles, machine description, markdown output. */
import { cpus, totalmem } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export function percentiles(samples: number[]): { p50: number; p99: number; p999: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** One line: CPU model, cores, memory, Node version, date. */
export function machine(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? 'unknown CPU'} × ${c.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}

export function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

const DOC = new URL('../docs/BENCHMARKS.md', import.meta.url);

/** Replaces (or appends) the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` in docs/BENCHMARKS.md. */
export function writeSection(name: string, title: string, body: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n## ${title}\n\n${body.trim()}\n${end}`;
  let doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n\nFigures measured on the project machine (2 cores, noisy): every benchmark compares against a baseline measured in the same run and reports ratios.\n';
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  doc = i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(DOC, doc);
}
