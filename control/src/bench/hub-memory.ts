import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mapTokenAfter, type StreamServerMessage } from '@weft/protocol';
import { NetmapHub, type StreamSession } from '../netmap/hub.js';
import { wireLength, wireOf } from '../netmap/message-text.js';
import { pacedFlush } from '../netmap/paced-flush.js';
import { PolicyVisibility, wildcardSourcesOf } from '../netmap/policy-visibility.js';
import type { VisibilityPolicy } from '../netmap/visibility.js';
import { parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { TEST_RANGES, testNode } from '../testing/nodes.js';
import { ALL_POLICY, PERSON_POLICY } from './load-kit.js';

// `npm run bench -- hub-memory [N…] [--shared-only]`: control's netmap hub in-process, N nodes
// loaded and each connected with a stream that counts what it is sent and keeps nothing, under
// allow-all and per-person (the control-load bench's tailnets): the memory it keeps (after two
// full garbage collections), the bytes of its sent records, the connect's time, and the time from a
// policy change (to the control-load bench's policy for the mode) to the end of the flush that
// sends every node its delta; then every stream connected again as a killed replica's nodes do (the
// old stream left open), first each with the token of the map it holds (a resume), then each
// without one (a whole map): per connect, as µs. Each row runs in a
// process of its own (node --expose-gc), with the records shared per class of visibility as control
// does and, unless --shared-only, with a record per stream as before (the policies' share keys
// dropped), for the same N in the same run.

type Mode = 'allow-all' | 'per-person';
type Records = 'shared' | 'per-stream';

interface Row {
  nodes: number;
  mode: Mode;
  records: Records;
  connectMs: number;
  rssMiB: number;
  heapMiB: number;
  externalMiB: number;
  recordKiB: number;
  classMapKiB: number;
  sentMiB: number;
  policyMs: number;
  policySentMiB: number;
  resumeUs: number;
  fullUs: number;
}

/** A stream that counts the bytes it is sent and keeps only the token of the map it would hold. */
class Session implements StreamSession {
  bytes = 0;
  token: string | null = null;
  constructor(readonly nodeId: string) {}
  send(message: StreamServerMessage): void {
    this.bytes += wireLength(wireOf(message));
    this.token = mapTokenAfter(message);
  }
  close(): void {}
}

/** Per person: three devices; one node in fifty a shared server (as control-load). Allow-all: one user. */
function tailnet(n: number, mode: Mode): NodeRecord[] {
  return Array.from({ length: n }, (_, i) => {
    if (mode === 'per-person' && i % 50 === 0) return testNode(i, null, { tags: ['tag:server'] });
    const person = mode === 'allow-all' ? 0 : Math.floor(i / 3);
    return testNode(i, { name: `p${person}`, email: `p${person}@example.com` });
  });
}

/** `policy` without its share keys: every stream keeps a record of its own, as before classes. */
function perStream(policy: VisibilityPolicy): VisibilityPolicy {
  return {
    visibilityOf: (node, nodes) => {
      const { shared: _shared, ...own } = policy.visibilityOf(node, nodes);
      return own;
    },
    affectedBy: (changed, nodes) => policy.affectedBy(changed, nodes),
    ...(policy.approvedRoutes ? { approvedRoutes: policy.approvedRoutes.bind(policy) } : {}),
  };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));
const MiB = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

function collect(): NodeJS.MemoryUsage {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with node --expose-gc');
  gc();
  gc();
  return process.memoryUsage();
}

async function one(n: number, mode: Mode, records: Records): Promise<Row> {
  const visibility = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
  if (mode === 'per-person') visibility.setPolicy(parsePolicy(PERSON_POLICY('*')));
  const paced = pacedFlush();
  /** When the latest flush ended: a change's deltas are serialised and sent there. */
  let flushed = 0;
  const hub = new NetmapHub(
    records === 'shared' ? visibility : perStream(visibility),
    TEST_RANGES,
    undefined,
    (flush) =>
      paced(() => {
        flush();
        flushed = performance.now();
      }),
  );
  hub.update(tailnet(n, mode));
  const sessions: Session[] = [];
  const start = performance.now();
  for (const node of hub.records()) {
    const session = new Session(node.id);
    hub.connect(session);
    sessions.push(session);
    // Streams arrive from the network: the event loop turns between them, and flushes run.
    if (sessions.length % 50 === 0) await turn();
  }
  const connectMs = performance.now() - start;
  // The paced flush waits at most 500 ms after a long one.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const sent = sessions.reduce((sum, s) => sum + s.bytes, 0);
  const memory = collect();
  const recordBytes = hub.recordBytes();
  const classMapBytes = hub.classMapBytes();

  const policyStart = performance.now();
  hub.policyChanged(
    visibility.setPolicy(parsePolicy(mode === 'allow-all' ? ALL_POLICY : PERSON_POLICY('22'))),
  );
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const policyMs = flushed - policyStart;
  const policySent = sessions.reduce((sum, s) => sum + s.bytes, 0) - sent;
  const resumeUs = await reconnectAll(hub, sessions, true);
  const fullUs = await reconnectAll(hub, sessions, false);
  return {
    nodes: n,
    mode,
    records,
    connectMs: Math.round(connectMs),
    rssMiB: MiB(memory.rss),
    heapMiB: MiB(memory.heapUsed),
    externalMiB: MiB(memory.external),
    recordKiB: Math.round(recordBytes / 1024),
    classMapKiB: Math.round(classMapBytes / 1024),
    sentMiB: MiB(sent),
    policyMs: Math.round(policyMs),
    policySentMiB: MiB(policySent),
    resumeUs,
    fullUs,
  };
}

/**
 * Connects every stream again, the old one left open (as control sees a reconnect before the
 * close), with the token of the map it holds or without; µs per connect, the turns aside. Throws
 * when a stream given its token is not resumed: the figure would be a whole map's.
 */
async function reconnectAll(hub: NetmapHub, sessions: Session[], withToken: boolean): Promise<number> {
  let elapsed = 0;
  for (let i = 0; i < sessions.length; i++) {
    const before = sessions[i] as Session;
    const session = new Session(before.nodeId);
    const start = performance.now();
    hub.connect(session, withToken ? (before.token ?? undefined) : undefined);
    elapsed += performance.now() - start;
    if (withToken && session.token !== before.token) throw new Error(`${before.nodeId} was not resumed`);
    sessions[i] = session;
    if (i % 50 === 49) await turn();
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  return Math.round((elapsed * 1000) / sessions.length);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--one') {
    const [, n, mode, records] = argv;
    console.log(JSON.stringify(await one(Number(n), mode as Mode, records as Records)));
    return;
  }
  const sizes = argv.filter((a) => /^\d+$/.test(a)).map(Number);
  const kinds: Records[] = argv.includes('--shared-only') ? ['shared'] : ['shared', 'per-stream'];
  console.log(
    '| N | policy | records | connect | RSS | heap used | external | sent records | class maps | connect sent | policy change (sent) | resume | whole map |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const n of sizes.length > 0 ? sizes : [2_000, 6_000, 10_000]) {
    for (const mode of ['allow-all', 'per-person'] as const) {
      for (const records of kinds) {
        const child = spawnSync(
          process.execPath,
          ['--expose-gc', fileURLToPath(import.meta.url), '--one', String(n), mode, records],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 },
        );
        if (child.status !== 0) {
          console.log(`| ${n} | ${mode} | ${records} | failed (exit ${child.status ?? child.signal}) |`);
          continue;
        }
        const r = JSON.parse(child.stdout) as Row;
        console.log(
          `| ${r.nodes} | ${r.mode} | ${r.records} | ${(r.connectMs / 1000).toFixed(1)} s | ${r.rssMiB} MiB | ${r.heapMiB} MiB | ${r.externalMiB} MiB | ${r.recordKiB} KiB | ${r.classMapKiB} KiB | ${r.sentMiB} MiB | ${r.policyMs} ms (${r.policySentMiB} MiB) | ${r.resumeUs} µs | ${r.fullUs} µs |`,
        );
      }
    }
  }
}

await main();
