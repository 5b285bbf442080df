import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { DesiredState } from '@weft/protocol';
import { disjointRects, formatAddrSpan, formatPortSpan, prefixSpan } from '../linux/intervals.js';
import { renderTable } from '../linux/nft.js';
import { filterBomb } from './filter-bomb.js';

// `npm run bench -- helper-filter`: the ~48 KB filter of bench/filter-bomb.ts, refused by the element
// bound of linux/nft.ts, against the unbounded rendering it replaced (cut the rectangles per port
// protocol and write every element). Each runs in its own process, so its peak RSS is its own.

const STATE: DesiredState = {
  interface: {
    name: 'wg0',
    privateKey: Buffer.alloc(32, 1).toString('base64'),
    listenPort: 0,
    addresses: ['100.64.0.1/32'],
    mtu: 1280,
  },
  peers: [],
  routes: [],
  filter: filterBomb(),
};

interface Figures {
  ms: number;
  heapMB: number;
  peakRssMB: number;
  outcome: string;
}

function measure(run: () => string): Figures {
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  const outcome = run();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return {
    ms,
    heapMB: (process.memoryUsage().heapUsed - heap0) / 2 ** 20,
    peakRssMB: process.resourceUsage().maxRSS / 1024,
    outcome,
  };
}

const variants: Record<string, () => string> = {
  refused: () => {
    try {
      renderTable(STATE);
      return 'rendered (not refused!)';
    } catch (e) {
      return `refused: ${(e as Error).message.slice(0, 60)}…`;
    }
  },
  unbounded: () => {
    const rule = STATE.filter?.[0];
    if (rule === undefined) throw new Error('no rule');
    const rects = rule.dst.map((d) => ({
      addr: prefixSpan(d.prefix).span,
      ports: { first: BigInt(d.ports.first), last: BigInt(d.ports.last) },
    }));
    const lines: string[] = [];
    for (const proto of rule.protos) {
      for (const r of disjointRects(rects))
        lines.push(`\t\t\t${formatAddrSpan(4, r.addr)} . ${proto} . ${formatPortSpan(r.ports)},`);
    }
    const file = lines.join('\n');
    return `rendered ${lines.length} elements, ${(file.length / 2 ** 20).toFixed(1)} MiB of rules`;
  },
};

const child = process.argv[2] === '--child' ? process.argv[3] : undefined;
if (child !== undefined) {
  const run = variants[child];
  if (run === undefined) throw new Error(`unknown variant ${child}`);
  process.stdout.write(JSON.stringify(measure(run)));
} else {
  const self = fileURLToPath(import.meta.url);
  const requestBytes = JSON.stringify({ id: 1, op: 'apply', state: STATE }).length;
  console.log(`helper-filter: one apply request of ${requestBytes} bytes (node ${process.version})`);
  const results: Record<string, Figures> = {};
  for (const name of Object.keys(variants)) {
    const out = spawnSync(process.execPath, [self, '--child', name], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`${name} failed: ${out.stderr}`);
    results[name] = JSON.parse(out.stdout) as Figures;
    const r = results[name] as Figures;
    console.log(
      `  ${name.padEnd(10)} ${r.ms.toFixed(1).padStart(8)} ms  heap +${r.heapMB.toFixed(1).padStart(6)} MiB  ` +
        `peak RSS ${r.peakRssMB.toFixed(0).padStart(4)} MiB  ${r.outcome}`,
    );
  }
  const { refused, unbounded } = results as { refused: Figures; unbounded: Figures };
  console.log(
    `  ratio unbounded/refused: time ${(unbounded.ms / refused.ms).toFixed(0)}x, ` +
      `peak RSS ${(unbounded.peakRssMB / refused.peakRssMB).toFixed(1)}x (one run; figures are noisy)`,
  );
  console.log(`  command: node ${self}`);
}
