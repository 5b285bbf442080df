import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { cpuSeconds } from '@weft/protocol/proc';
import { promSample } from '@weft/protocol/prometheus';

// What the control benchmarks share: a real `weft-control serve` process, its memory, a bounded
// concurrency pool, bounded waits and percentiles.

/** Per person: a person's own devices see each other; members and shared servers see each other. */
export const PERSON_POLICY = (selfPorts: string) => `{
  "tagOwners": { "tag:server": ["ops@example.com"] },
  "acls": [
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:${selfPorts}"] },
    { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22,443"] },
  ],
}`;
/** The policy the allow-all runs change to: everyone still sees everyone. */
export const ALL_POLICY = '{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:22,443"] }] }';

const ROOT = join(import.meta.dirname, '../../..');
export const BIN = join(ROOT, 'control/dist/cli/main.js');

export interface Replica {
  child: ChildProcess;
  url: string;
  /** Its Prometheus endpoint (on loopback), for the memory breakdown (see memoryOf). */
  metricsUrl: string;
}

/** Starts `weft-control serve` on `db` and resolves with its URL once it listens. */
export async function startReplica(db: string, listen = '127.0.0.1:0'): Promise<Replica> {
  // WEFT_BENCH_NODE_ARGS: node options for control, e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile it.
  const nodeArgs = (process.env.WEFT_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(
    process.execPath,
    [...nodeArgs, BIN, 'serve', '--listen', listen, '--db', db, '--metrics-listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let logs = '';
  const [url, metricsUrl] = await new Promise<[string, string]>((resolve, reject) => {
    const onData = (d: Buffer) => {
      logs += d;
      const m = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(logs);
      const metrics = /metrics at (http:\/\/[0-9.]+:[0-9]+\/metrics)/.exec(logs);
      if (m && metrics) {
        logs = '';
        child.stderr?.off('data', onData);
        // Keep draining its log; kept in a file when WEFT_BENCH_LOG_DIR names a folder.
        const dir = process.env.WEFT_BENCH_LOG_DIR;
        if (dir) child.stderr?.pipe(createWriteStream(join(dir, `control-${child.pid}.log`)));
        else child.stderr?.resume();
        resolve([m[1] as string, metrics[1] as string]);
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', () => reject(new Error(`serve exited: ${logs}`)));
  });
  return { child, url, metricsUrl };
}

/** Below this share of a core over a second, a process counts as idle (its heartbeats, not work). */
const IDLE_SHARE = 0.1;

/**
 * Resolves, with when the idle second began, once every process of `pids` used under IDLE_SHARE of
 * a core over one second; with null if that has not happened within `timeoutMs`.
 */
export async function whenIdle(
  pids: readonly (number | undefined)[],
  timeoutMs: number,
): Promise<number | null> {
  const start = performance.now();
  for (;;) {
    const at = performance.now();
    const before = pids.map(cpuSeconds);
    await sleep(1_000);
    if (pids.every((pid, i) => cpuSeconds(pid) - (before[i] as number) < IDLE_SHARE)) return at;
    if (performance.now() - start > timeoutMs) return null;
  }
}

/** A replica's /metrics read once: a sample's value by its name and labels as written (NaN if absent). */
async function scrape(replica: Replica): Promise<(name: string, labels?: string) => number> {
  const text = await (await fetch(replica.metricsUrl)).text();
  return (name, labels) => promSample(text, name, labels) ?? Number.NaN;
}

/**
 * Where a replica's memory is, from its own default Prometheus metrics (MiB): its RSS when it
 * answered (the figures of one moment: a moment later the heap may have been collected or grown),
 * V8's heap in use and as reserved, and memory outside it (Buffers, native modules' allocations).
 */
export async function memoryOf(replica: Replica): Promise<string> {
  const value = await scrape(replica);
  const mib = (name: string) => {
    const bytes = value(name);
    return Number.isNaN(bytes) ? '?' : (bytes / 1048576).toFixed(0);
  };
  return `at its /metrics: RSS ${mib('process_resident_memory_bytes')}, V8 heap used ${mib('nodejs_heap_size_used_bytes')} of ${mib('nodejs_heap_size_total_bytes')}, external ${mib('nodejs_external_memory_bytes')} MiB`;
}

/** A replica's fan-out so far, from its /metrics: deltas written, how many of them later than 1 s, and their summed latency. */
export interface FanOutCount {
  count: number;
  over1s: number;
  sumS: number;
  /** Its open streams (weft_control_streams_open). */
  streams: number;
}

export async function fanOutOf(replica: Replica): Promise<FanOutCount> {
  const value = await scrape(replica);
  const count = value('weft_control_fanout_seconds_count');
  return {
    count,
    over1s: count - value('weft_control_fanout_seconds_bucket', 'le="1"'),
    sumS: value('weft_control_fanout_seconds_sum'),
    streams: value('weft_control_streams_open'),
  };
}

/** What a replica's fan-out did between two readings of fanOutOf. */
export function fanOutLine(before: FanOutCount, after: FanOutCount): string {
  const n = after.count - before.count;
  const mean = n > 0 ? ((after.sumS - before.sumS) / n) * 1000 : Number.NaN;
  return `${n} deltas written (mean ${mean.toFixed(0)} ms from the change, ${after.over1s - before.over1s} after 1 s), ${after.streams} streams`;
}

/** Runs `fn` over `items` with at most `width` at once. */
export async function pool<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

/** Registrations per source address: under control's default limit (120 a minute per address). */
const PER_ADDRESS = 100;

/** Load node i's loopback source address (127.1.x.y): a tailnet's machines come from many. */
export const sourceOf = (i: number) =>
  `127.1.${Math.floor(i / PER_ADDRESS / 250)}.${(Math.floor(i / PER_ADDRESS) % 250) + 1}`;

/**
 * A killed replica's nodes, and the others: by the replica each node's latest stream went to, not
 * the one it tried first. A node whose upgrade timed out there moved on to the next replica, so the
 * two differ after a herd (at 10,000 nodes, about 370 of the first replica's 3,334).
 */
export function splitByReplica<T extends { url: string }>(
  nodes: readonly T[],
  killedUrl: string,
): { cut: T[]; stayed: T[] } {
  return { cut: nodes.filter((n) => n.url === killedUrl), stayed: nodes.filter((n) => n.url !== killedUrl) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `test` until it holds; throws after `timeoutMs`. Resolves with the time it took. */
export async function waitFor(test: () => boolean, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (!test()) {
    if (performance.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms`);
    await sleep(20);
  }
  return performance.now() - start;
}

export function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}
