import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import type { EntryStats } from './run.js';

// Collects every entry point's counts (each test file runs in its own worker) and prints the
// summary table once all have run.

declare module 'vitest' {
  export interface ProvidedContext {
    fuzzStatsFile: string;
  }
}

export default function setup(project: TestProject) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-fuzz-'));
  const file = join(dir, 'stats.ndjson');
  project.provide('fuzzStatsFile', file);
  return () => {
    let lines: string[] = [];
    try {
      lines = readFileSync(file, 'utf8').trim().split('\n').filter(Boolean);
    } catch {
      // no entry point ran
    }
    rmSync(dir, { recursive: true, force: true });
    console.log(summaryTable(lines.map((l) => JSON.parse(l) as EntryStats)));
  };
}

export function summaryTable(rows: EntryStats[]): string {
  const head = ['entry point', 'inputs', 'accepted', 'accepted-but-invalid', 'crashes', 'seconds'];
  const body = rows.map((r) => [
    r.entry,
    String(r.tried),
    String(r.accepted),
    String(r.acceptedInvalid),
    String(r.crashes),
    (r.ms / 1000).toFixed(1),
  ]);
  const total = rows.reduce((s, r) => s + r.tried, 0);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd : c.padStart).call(c, widths[i] as number)).join('  ');
  return [
    '',
    'fuzz summary',
    line(head),
    ...body.map(line),
    `${total} inputs in ${rows.length} entry points`,
  ].join('\n');
}
