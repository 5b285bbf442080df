import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs as parseArgsOf, promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { rssBytes } from '@weft/protocol/proc';
import { createApiKey, createPreauthKey, createUser } from '../cli/admin.js';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { TsTestClient } from '../testing/tailscale-client.js';
import { memoryOf, pct, sleep, sourceOf, startReplica } from './load-kit.js';
import {
  type Command,
  type LoadNode,
  now,
  openMap,
  type Reached,
  register,
  type WorkerSetup,
} from './ts-load-worker.js';

// `npm run bench -- control-vs-headscale [--nodes N] [--workers W]`: the same load, from the same
// TypeScript Tailscale-protocol client (ts2021 Noise + HTTP/2, as tailscaled speaks it, its nodes
// spread over W load threads: ts-load-worker.ts), against
// `weft-control serve` and then against headscale (built from its Go module by
// scripts/setup-tailscale.sh), both on SQLite on loopback, with one reusable pre-auth key and
// allow-all. Per server: N registrations, N map streams until every map holds all N-1 peers, then a
// join, an endpoint change (a "lite" map request with new Endpoints) and a delete (weft's admin
// API, headscale's CLI), each timed until every other node's map shows it (p50/p99/max), and the
// server's RSS. Prints both columns and headscale/weft per row. Every wait is bounded: a server
// that does not get there in time gets "timeout" in its column.

const GO_BIN = process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin';
const HEADSCALE = join(GO_BIN, 'headscale');
const PHASE_TIMEOUT_MS = 600_000;
const EVENT_TIMEOUT_MS = 120_000;
const CLI_TIMEOUT_MS = 60_000;
const QUIET_MS = 2_000;
const VERSION = 130; // Tailscale v1.102's capability version
const run = promisify(execFile);

interface Server {
  url: string;
  pid: number | undefined;
  authKey: string;
  /** Deletes a node the way its admin would. */
  remove(node: { id: number; name: string }): Promise<void>;
  /** Where its memory is, when it can say (weft's /metrics: heap and external). */
  memory?: () => Promise<string>;
  stop(): void;
}

async function startWeft(dir: string): Promise<Server> {
  const db = join(dir, 'control.db');
  const store = new Store((await openDatabase(db)).db);
  await createUser(store, 'bench', 'bench@example.com');
  const authKey = await createPreauthKey(store, { user: 'bench', reusable: true, expiration: '1d' });
  const apiKey = await createApiKey(store, '1d');
  await store.destroy();
  const replica = await startReplica(db);
  return {
    url: replica.url,
    pid: replica.child.pid,
    authKey,
    remove: async ({ name }) => {
      const res = await fetch(`${replica.url}/api/v1/nodes/${name}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${apiKey}` },
        signal: AbortSignal.timeout(CLI_TIMEOUT_MS),
      });
      if (res.status !== 200) throw new Error(`delete: ${res.status} ${await res.text()}`);
    },
    memory: () => memoryOf(replica),
    stop: () => replica.child.kill('SIGKILL'),
  };
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** headscale's configuration: loopback only, no DERP it could reach, no logtail, no DNS changes. */
function headscaleConfig(dir: string, host: string, ports: [number, number, number]): string {
  const [http, grpc, metrics] = ports;
  return `server_url: http://${host}:${http}
listen_addr: ${host}:${http}
grpc_listen_addr: ${host}:${grpc}
metrics_listen_addr: ${host}:${metrics}
noise:
  private_key_path: ${dir}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: false
  urls: []
  paths:
    - ${dir}/derp.yaml
  auto_update_enabled: false
disable_check_updates: true
database:
  type: sqlite
  sqlite:
    path: ${dir}/headscale.db
    write_ahead_log: true
log:
  level: warn
policy:
  mode: file
  path: ""
dns:
  magic_dns: false
  override_local_dns: false
  base_domain: bench.weft.test
  nameservers:
    global: []
unix_socket: ${dir}/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
`;
}

/** One DERP region whose only node is a closed loopback port: headscale needs a map to start. */
const DERP_MAP = (host: string) => `regions:
  900:
    regionid: 900
    regioncode: none
    regionname: nothing reachable
    nodes:
      - name: 900a
        regionid: 900
        hostname: ${host}
        ipv4: ${host}
        stunport: -1
        derpport: 9
`;

async function startHeadscale(dir: string): Promise<Server> {
  const host = '127.0.0.2';
  const ports: [number, number, number] = [await freePort(host), await freePort(host), await freePort(host)];
  const config = join(dir, 'config.yaml');
  writeFileSync(join(dir, 'derp.yaml'), DERP_MAP(host));
  writeFileSync(config, headscaleConfig(dir, host, ports));
  const child: ChildProcess = spawn(HEADSCALE, ['-c', config, 'serve'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logDir = process.env.WEFT_BENCH_LOG_DIR;
  if (logDir) child.stderr?.pipe(createWriteStream(join(logDir, `headscale-${child.pid}.log`)));
  else child.stderr?.resume();
  const cli = async (...args: string[]) =>
    (await run(HEADSCALE, ['-c', config, ...args], { timeout: CLI_TIMEOUT_MS })).stdout;
  const url = `http://${host}:${ports[0]}`;
  const up = async () => (await fetch(`${url}/health`).catch(() => null))?.status === 200;
  const start = performance.now();
  while (!(await up())) {
    if (child.exitCode !== null || performance.now() - start > CLI_TIMEOUT_MS) {
      child.kill('SIGKILL');
      throw new Error(`headscale did not start (exit ${child.exitCode}); WEFT_BENCH_LOG_DIR keeps its log`);
    }
    await sleep(100);
  }
  await cli('users', 'create', 'bench');
  const users = JSON.parse(await cli('users', 'list', '-o', 'json')) as { id: number; name: string }[];
  const user = users.find((u) => u.name === 'bench');
  const key = JSON.parse(
    await cli(
      'preauthkeys',
      'create',
      '--user',
      String(user?.id),
      '--reusable',
      '--expiration',
      '24h',
      '-o',
      'json',
    ),
  ) as { key: string };
  return {
    url,
    pid: child.pid,
    authKey: key.key,
    remove: async ({ id }) => {
      await cli('nodes', 'delete', '--identifier', String(id), '--force');
    },
    stop: () => child.kill('SIGKILL'),
  };
}

/**
 * WEFT_BENCH_HEAP_SNAPSHOT=DIR, with WEFT_BENCH_NODE_ARGS='--heapsnapshot-signal=SIGUSR2
 * --diagnostic-dir=DIR': once its changes are timed, control writes a heap snapshot into DIR (a full
 * garbage collection first), and its memory is printed again: what is live, not what awaits the
 * collector.
 */
const SNAPSHOT_DIR = process.env.WEFT_BENCH_HEAP_SNAPSHOT;

async function heapSnapshot(server: Server): Promise<void> {
  const dir = SNAPSHOT_DIR as string;
  const before = new Set(readdirSync(dir));
  process.kill(server.pid as number, 'SIGUSR2');
  let size = -1;
  for (const start = performance.now(); performance.now() - start < CLI_TIMEOUT_MS; await sleep(1000)) {
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (file === undefined) continue;
    const now = statSync(join(dir, file)).size;
    if (now > 0 && now === size) {
      console.log(`  heap snapshot    ${join(dir, file)}`);
      break;
    }
    size = now;
  }
  console.log(`  memory after GC  ${await server.memory?.()}`);
}

// ---------- the load

type Json = Record<string, unknown>;
type Result = number | 'timeout';
/** Row label to value (ms, or MiB for RSS). */
type Column = Map<string, Result>;

/** Resolves with `p`'s value, or 'timeout' when it takes longer than `ms`. */
async function bounded<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A load thread: commands in, one answer per command. */
class LoadWorker {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  constructor(
    setup: WorkerSetup,
    readonly owns: ReadonlySet<number>,
  ) {
    this.worker = new Worker(new URL('./ts-load-worker.js', import.meta.url), { workerData: setup });
    this.worker.on('message', (m: { id: number; value?: unknown; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error !== undefined) w?.reject(new Error(m.error));
      else w?.resolve(m.value);
    });
    this.worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  ask<T = null>(command: Command): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, command });
    });
  }

  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

/** The N nodes over `workers` threads (node i on thread i mod workers), and the joiner on this one. */
class Load {
  readonly workers: LoadWorker[];
  joiner: LoadNode | null = null;
  constructor(
    readonly server: Server,
    readonly n: number,
    workers: number,
  ) {
    this.workers = Array.from({ length: workers }, (_, w) => {
      const indices = Array.from({ length: n }, (_, i) => i).filter((i) => i % workers === w);
      return new LoadWorker(
        { url: server.url, authKey: server.authKey, version: VERSION, indices },
        new Set(indices),
      );
    });
  }

  /** Every thread's answer to the same command. */
  all(command: Command): Promise<unknown[]> {
    return Promise.all(this.workers.map((w) => w.ask(command)));
  }

  owner(i: number): LoadWorker {
    return this.workers[i % this.workers.length] as LoadWorker;
  }

  /** Runs `act` and times `reached` on every node but `except`; adds p50/p99/max rows to `col`. */
  async measure(col: Column, what: string, except: number[], reached: Reached, act: () => Promise<void>) {
    const expect = Array.from({ length: this.n }, (_, i) => i).filter((i) => !except.includes(i));
    await this.all({ type: 'watch', expect, reached, t0: now() });
    const acted = await bounded(act(), CLI_TIMEOUT_MS);
    const all =
      acted !== 'timeout' && (await bounded(this.all({ type: 'watched' }), EVENT_TIMEOUT_MS)) !== 'timeout';
    const answers = (await this.all({ type: 'unwatch' })) as { times: number[]; ended: number }[];
    const s = answers.flatMap((a) => a.times).sort((a, b) => a - b);
    const ended = answers.reduce((sum, a) => sum + a.ended, 0);
    console.log(
      `  ${what.padEnd(16)} reached ${s.length}/${expect.length}${acted === 'timeout' ? `; its action did not finish within ${CLI_TIMEOUT_MS / 1000} s` : ''}; ${ended} map streams ended by the server`,
    );
    col.set(`${what} p50 (ms)`, all ? pct(s, 50) : 'timeout');
    col.set(`${what} p99 (ms)`, all ? pct(s, 99) : 'timeout');
    col.set(`${what} max (ms)`, all ? (s.at(-1) as number) : 'timeout');
  }

  async self(i: number): Promise<Json> {
    const self = await this.owner(i).ask<Json | null>({ type: 'self', index: i });
    if (self === null) throw new Error(`node-${i} has no map yet`);
    return self;
  }

  async close() {
    this.joiner?.client.close();
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

const ROWS = [
  'registration (ms)',
  'connect (ms)',
  'settled after connect (ms)',
  'join p50 (ms)',
  'join p99 (ms)',
  'join max (ms)',
  'endpoint p50 (ms)',
  'endpoint p99 (ms)',
  'endpoint max (ms)',
  'delete p50 (ms)',
  'delete p99 (ms)',
  'delete max (ms)',
  'RSS after settling (MiB)',
];

async function measureServer(
  name: string,
  n: number,
  workers: number,
  start: (dir: string) => Promise<Server>,
): Promise<Column> {
  const col: Column = new Map();
  const dir = mkdtempSync(join(tmpdir(), `weft-vs-headscale-${name}-`));
  let server: Server | null = null;
  let load: Load | null = null;
  try {
    console.log(`\n${name}: ${n} nodes, ${workers} load threads`);
    server = await start(dir);
    const live = new Load(server, n, workers);
    load = live;
    // Registrations and stream openings: 32 at once in all.
    const width = Math.max(1, Math.ceil(32 / workers));

    let t = performance.now();
    if ((await bounded(live.all({ type: 'register', width }), PHASE_TIMEOUT_MS)) === 'timeout') return col;
    col.set('registration (ms)', performance.now() - t);
    console.log(`  registration     ${n} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    const opened = await bounded(
      (async () => {
        await live.all({ type: 'stream', width });
        await live.all({ type: 'complete', peers: n - 1 });
      })(),
      PHASE_TIMEOUT_MS,
    );
    if (opened === 'timeout') return col;
    col.set('connect (ms)', performance.now() - t);
    console.log(
      `  connect          all ${n} maps complete in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    // Every node coming online is a patch to every other: at N = 1,000 that storm still drains for
    // seconds after the maps are complete, and a change timed then would wait behind it. The
    // changes are timed once no map message has arrived for QUIET_MS (keep-alives aside).
    t = performance.now();
    const quiet = await bounded(live.all({ type: 'quiet', ms: QUIET_MS }), EVENT_TIMEOUT_MS);
    const settled = performance.now() - t - (quiet === 'timeout' ? 0 : QUIET_MS);
    col.set('settled after connect (ms)', quiet === 'timeout' ? 'timeout' : settled);
    console.log(
      `  settled          ${quiet === 'timeout' ? `not quiet within ${EVENT_TIMEOUT_MS / 1000} s` : `last connect fan-out ${(settled / 1000).toFixed(1)} s after connect`}`,
    );
    // More whole maps than nodes: streams the server sent a whole map again (weft: a resync after
    // a backlog), each up to N peers.
    if (quiet !== 'timeout') {
      const whole = (quiet as number[]).reduce((sum, w) => sum + w, 0);
      console.log(`  whole maps       ${whole} sent to the ${n} nodes up to then`);
    }
    col.set('RSS after settling (MiB)', rssBytes(server.pid) / 2 ** 20);
    if (server.memory) console.log(`  memory           ${await server.memory()}`);

    // A join: a new node registers and opens its stream; every other map must list it.
    const joiner: LoadNode = {
      client: new TsTestClient(server.url, VERSION, sourceOf(n)),
      reader: null,
      name: `node-${n}`,
    };
    live.joiner = joiner;
    const authKey = server.authKey;
    await live.measure(col, 'join', [], { kind: 'has-key', key: joiner.client.nodeKey }, async () => {
      await register(joiner, authKey);
      await openMap(joiner, n);
    });

    // An endpoint change: node 1's "lite" map request (no stream, no peers) with a new endpoint.
    const moverId = (await live.self(1)).ID as number;
    const endpoint = '198.51.100.77:41641';
    await live.measure(col, 'endpoint', [1], { kind: 'endpoint', id: moverId, endpoint }, () =>
      live.owner(1).ask({ type: 'move', index: 1, endpoints: [endpoint] }),
    );

    // A delete by the admin: every other map must drop it.
    const self = await live.self(4);
    const victimId = self.ID as number;
    await live.measure(col, 'delete', [4], { kind: 'gone', id: victimId }, () =>
      (server as Server).remove({ id: victimId, name: (self.Name as string).split('.')[0] as string }),
    );
    if (SNAPSHOT_DIR && server.memory) await heapSnapshot(server);
  } finally {
    await load?.close();
    server?.stop();
    rmSync(dir, { recursive: true, force: true });
    console.log(
      `  load average     ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );
  }
  return col;
}

/** The table: one row per measure, both columns, headscale/weft. */
function table(weft: Column, headscale: Column): string {
  const cell = (v: Result | undefined) =>
    v === undefined ? 'timeout' : typeof v === 'number' ? v.toFixed(0) : v;
  const ratio = (a: Result | undefined, b: Result | undefined) =>
    typeof a === 'number' && typeof b === 'number' && a > 0 ? (b / a).toFixed(2) : '—';
  const lines = ['| measure | weft | headscale | headscale/weft |', '| --- | --- | --- | --- |'];
  for (const row of ROWS) {
    const w = weft.get(row);
    const h = headscale.get(row);
    lines.push(`| ${row} | ${cell(w)} | ${cell(h)} | ${ratio(w, h)} |`);
  }
  return lines.join('\n');
}

const USAGE = 'usage: control-vs-headscale [--nodes N] [--workers W] [--only weft|headscale]';
const SERVERS = ['weft', 'headscale'] as const;

/**
 * --nodes N (default 200), --workers W (default one load thread per 500 nodes, at most 4), --only
 * one server (to profile it without waiting for the other; the table then has one column).
 */
function parseArgs(argv: string[]): { n: number; workers: number; only: string | undefined } {
  const { values, positionals } = parseArgsOf({
    args: argv,
    options: { nodes: { type: 'string' }, workers: { type: 'string' }, only: { type: 'string' } },
    strict: true,
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new Error(USAGE);
  const n = Number(values.nodes ?? 200);
  if (!Number.isInteger(n) || n < 8 || n > 5_000) throw new Error('--nodes: 8..5000');
  const workers = Number(values.workers ?? Math.min(4, Math.ceil(n / 500)));
  if (!Number.isInteger(workers) || workers < 1 || workers > 16) throw new Error('--workers: 1..16');
  if (values.only !== undefined && !(SERVERS as readonly string[]).includes(values.only)) {
    throw new Error(`--only: ${SERVERS.join(' or ')}`);
  }
  return { n, workers, only: values.only };
}

const { n, workers, only } = parseArgs(process.argv.slice(2));
const version = (await run(HEADSCALE, ['version'], { timeout: CLI_TIMEOUT_MS })).stdout.trim().split('\n')[0];
console.log(
  `control-vs-headscale: node ${process.version}, headscale ${version}, ${n} nodes, one reusable key, allow-all, SQLite, loopback; cores ${cpus().length}`,
);
const weft: Column =
  only === 'headscale' ? new Map() : await measureServer('weft-control', n, workers, startWeft);
const headscale: Column =
  only === 'weft' ? new Map() : await measureServer('headscale', n, workers, startHeadscale);
console.log(`\n${table(weft, headscale)}`);
process.exit(0);
