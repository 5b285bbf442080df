import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createApiKey, createPreauthKey, createUser } from '../cli/admin.js';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { type MapReader, TsTestClient } from '../testing/tailscale-client.js';
import { FanOut } from './fan-out.js';
import { pct, pool, rssMiB, sleep, sourceOf, startReplica } from './load-kit.js';

// `npm run bench -- control-vs-headscale [--nodes N]`: the same load, from the same TypeScript
// Tailscale-protocol client (ts2021 Noise + HTTP/2, as tailscaled speaks it), against
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
const VERSION = 130; // Tailscale v1.102's capability version
const run = promisify(execFile);

interface Server {
  url: string;
  pid: number | undefined;
  authKey: string;
  /** Deletes a node the way its admin would. */
  remove(node: { id: number; name: string }): Promise<void>;
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

// ---------- the load

interface LoadNode {
  client: TsTestClient;
  reader: MapReader | null;
  name: string;
}

type Json = Record<string, unknown>;

/** The node's own entry from its map (there once its stream is complete). */
function selfOf(node: LoadNode): Json {
  const self = node.reader?.self;
  if (!self) throw new Error(`${node.name} has no map yet`);
  return self;
}
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

async function until(test: () => boolean, ms: number): Promise<boolean> {
  const start = performance.now();
  while (!test()) {
    if (performance.now() - start > ms) return false;
    await sleep(20);
  }
  return true;
}

/** What tailscaled sends about itself with every map request. */
const hostinfo = (name: string) => ({
  Hostname: name,
  OS: 'linux',
  IPNVersion: '1.102.5-bench',
  NetInfo: { PreferredDERP: 900 },
});

class Load {
  current: FanOut<MapReader> | null = null;
  readonly nodes: LoadNode[] = [];
  constructor(readonly server: Server) {}

  add(i: number): LoadNode {
    const node = {
      client: new TsTestClient(this.server.url, VERSION, sourceOf(i)),
      reader: null,
      name: `node-${i}`,
    };
    this.nodes[i] = node;
    return node;
  }

  async register(node: LoadNode): Promise<void> {
    const r = await node.client.register({ Auth: { AuthKey: this.server.authKey } }, node.name);
    if (r.MachineAuthorized !== true) throw new Error(`${node.name} not authorized: ${JSON.stringify(r)}`);
  }

  async stream(i: number): Promise<void> {
    const node = this.nodes[i] as LoadNode;
    const reader = await node.client.map({
      Hostinfo: {
        Hostname: node.name,
        OS: 'linux',
        IPNVersion: '1.102.5-bench',
        NetInfo: { PreferredDERP: 900 },
      },
      Endpoints: [`198.51.100.${1 + (i % 250)}:${41641 + Math.floor(i / 250)}`],
    });
    reader.onChange = () => this.current?.changed(i, reader, performance.now());
    node.reader = reader;
  }

  /** Runs `act` and times `reached` on every node of `expect`; adds p50/p99/max rows to `col`. */
  async measure(
    col: Column,
    what: string,
    expect: number[],
    reached: (r: MapReader) => boolean,
    act: () => Promise<void>,
  ) {
    const fan = new FanOut(expect, reached, performance.now());
    this.current = fan;
    const acted = await bounded(act(), CLI_TIMEOUT_MS);
    const all = acted !== 'timeout' && (await until(() => fan.done, EVENT_TIMEOUT_MS));
    this.current = null;
    const s = fan.times().sort((a, b) => a - b);
    const ended = this.nodes.filter((x) => x?.reader?.ended).length;
    console.log(
      `  ${what.padEnd(16)} reached ${s.length}/${fan.expectedCount}${acted === 'timeout' ? `; its action did not finish within ${CLI_TIMEOUT_MS / 1000} s` : ''}; ${ended} map streams ended by the server`,
    );
    col.set(`${what} p50 (ms)`, all ? pct(s, 50) : 'timeout');
    col.set(`${what} p99 (ms)`, all ? pct(s, 99) : 'timeout');
    col.set(`${what} max (ms)`, all ? (s.at(-1) as number) : 'timeout');
  }

  close() {
    for (const n of this.nodes) n?.client.close();
  }
}

const ROWS = [
  'registration (ms)',
  'connect (ms)',
  'join p50 (ms)',
  'join p99 (ms)',
  'join max (ms)',
  'endpoint p50 (ms)',
  'endpoint p99 (ms)',
  'endpoint max (ms)',
  'delete p50 (ms)',
  'delete p99 (ms)',
  'delete max (ms)',
  'RSS after connect (MiB)',
];

async function measureServer(
  name: string,
  n: number,
  start: (dir: string) => Promise<Server>,
): Promise<Column> {
  const col: Column = new Map();
  const dir = mkdtempSync(join(tmpdir(), `weft-vs-headscale-${name}-`));
  let server: Server | null = null;
  let load: Load | null = null;
  try {
    console.log(`\n${name}: ${n} nodes`);
    server = await start(dir);
    const live = new Load(server);
    load = live;
    const present = Array.from({ length: n }, (_, i) => i);
    for (const i of present) live.add(i);

    // All N register (32 at once), then all N open their map streams.
    let t = performance.now();
    if (
      (await bounded(
        pool(live.nodes, 32, (x) => live.register(x)),
        PHASE_TIMEOUT_MS,
      )) === 'timeout'
    )
      return col;
    col.set('registration (ms)', performance.now() - t);
    console.log(`  registration     ${n} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    const complete = () => live.nodes.every((x) => x.reader?.self && x.reader.peers.size >= n - 1);
    const opened = await bounded(
      pool(present, 32, (i) => live.stream(i)),
      PHASE_TIMEOUT_MS,
    );
    if (opened === 'timeout' || !(await until(complete, PHASE_TIMEOUT_MS))) return col;
    col.set('connect (ms)', performance.now() - t);
    console.log(
      `  connect          all ${n} maps complete in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    await sleep(1_000); // let the last online/endpoint fan-outs settle
    col.set('RSS after connect (MiB)', rssMiB(server.pid));

    const others = (but: number[]) => live.nodes.map((_, i) => i).filter((i) => !but.includes(i));

    // A join: a new node registers and opens its stream; every other map must list it.
    const joiner = live.add(n);
    const joinerKey = joiner.client.nodeKey;
    await live.measure(
      col,
      'join',
      others([n]),
      (r) => [...r.peers.values()].some((p) => p.Key === joinerKey),
      async () => {
        await live.register(joiner);
        await live.stream(n);
      },
    );

    // An endpoint change: node 1's "lite" map request (no stream, no peers) with a new endpoint.
    const mover = live.nodes[1] as LoadNode;
    const moverId = selfOf(mover).ID as number;
    const endpoint = '198.51.100.77:41641';
    await live.measure(
      col,
      'endpoint',
      others([1, n]),
      (r) => ((r.peers.get(moverId)?.Endpoints as string[] | undefined) ?? []).includes(endpoint),
      async () => {
        const res = await (await mover.client.connection()).post('/machine/map', {
          Version: VERSION,
          NodeKey: mover.client.nodeKey,
          DiscoKey: mover.client.discoKey,
          OmitPeers: true,
          Stream: false,
          Hostinfo: hostinfo(mover.name),
          Endpoints: [endpoint],
        });
        if (res.status !== 200) throw new Error(`endpoint update: ${res.status} ${res.body}`);
      },
    );

    // A delete by the admin: every other map must drop it.
    const victim = live.nodes[4] as LoadNode;
    const self = selfOf(victim);
    const victimId = self.ID as number;
    await live.measure(
      col,
      'delete',
      others([4, n]),
      (r) => !r.peers.has(victimId),
      () => (server as Server).remove({ id: victimId, name: (self.Name as string).split('.')[0] as string }),
    );
  } finally {
    load?.close();
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

function parseNodes(argv: string[]): number {
  if (argv.length === 0) return 200;
  if (argv.length !== 2 || argv[0] !== '--nodes') throw new Error('usage: control-vs-headscale [--nodes N]');
  const n = Number(argv[1]);
  if (!Number.isInteger(n) || n < 8 || n > 5_000) throw new Error('--nodes: 8..5000');
  return n;
}

const n = parseNodes(process.argv.slice(2));
const version = (await run(HEADSCALE, ['version'], { timeout: CLI_TIMEOUT_MS })).stdout.trim().split('\n')[0];
console.log(
  `control-vs-headscale: node ${process.version}, headscale ${version}, ${n} nodes, one reusable key, allow-all, SQLite, loopback; cores ${cpus().length}`,
);
const weft = await measureServer('weft-control', n, startWeft);
const headscale = await measureServer('headscale', n, startHeadscale);
console.log(`\n${table(weft, headscale)}`);
process.exit(0);
