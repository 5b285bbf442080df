import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import {
  backoffDelayMs,
  CONTROL_KEY_PATH,
  generateKeyPair,
  MACHINE_AUTH_HEADER,
  machineSigner,
  nodeKeyPossessionProof,
  REGISTER_PATH,
  STREAM_PATH,
  STREAM_RETRY,
  streamHandshakeTimeoutMs,
  streamPath,
} from '@weft/protocol';
import { cpuSeconds, rssBytes } from '@weft/protocol/proc';
import pg from 'pg';
import WebSocket from 'ws';
import { createApiKey, createPreauthKey, createUser } from '../cli/admin.js';
import { setPolicyText } from '../cli/policy.js';
import { isPostgresUrl } from '../db/location.js';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { ConnectQueue } from '../server/connect-queue.js';
import {
  ALL_POLICY,
  BIN,
  type FanOutCount,
  fanOutLine,
  fanOutOf,
  memoryOf,
  PERSON_POLICY,
  pct,
  pool,
  type Replica,
  sleep,
  sourceOf,
  splitByReplica,
  startReplica,
  waitFor,
  whenIdle,
} from './load-kit.js';
import { OPEN, StreamClient } from './stream-client.js';

// `npm run bench -- control-load [--nodes N] [--policy allow-all|per-person] [--replicas R --db postgres://…]`
// N real nodes against real `weft-control serve` processes: each registers over HTTP with a
// pre-auth key (signed with its machine key, proving its node key) and holds a signed WebSocket
// stream, from this one load process (no WireGuard). Prints the connect time, control's RSS, the
// time for a join, an endpoint change, a delete and a policy change to reach every node they
// affect (p50/p99/max), and the time for all N to be back after control restarts (with several
// replicas: after one is SIGKILLed, and how many nodes ended with a wrong map: lost messages).
// Registrations come from many loopback source addresses (127.1.x.y), as a tailnet's machines
// come from many addresses, so the per-address registration limit applies as it would.

const EVENT_TIMEOUT_MS = 120_000;
/** A message's head: its type and token (MapToken: at most 64 characters) come first. */
const HEAD_BYTES = 128;
const MESSAGE_HEAD = /^\{"type":"(\w+)"(?:,"mapToken":"([A-Za-z0-9._-]+)")?/;
const BACK_TIMEOUT_MS = 300_000;
const STALL_MS = 60_000;
/** This load process opens due connections for at most this long per event-loop turn (see Load.dialing). */
const DIAL_TURN_MS = 5;
/** What a queued connection does when the queue is closed (never: this load does not close it). */
const NOTHING = () => {};
/** No message on any stream for this long: the connect's fan-out has ended. */
const QUIET_MS = 2_000;

type Mode = 'allow-all' | 'per-person';

interface Args {
  nodes: number;
  modes: Mode[];
  replicas: number;
  db: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { nodes: 1_000, modes: ['allow-all', 'per-person'], replicas: 1, db: null };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    const flag = argv[i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--nodes') args.nodes = Number(value);
    else if (flag === '--policy') args.modes = [value as Mode];
    else if (flag === '--replicas') args.replicas = Number(value);
    else if (flag === '--db') args.db = value;
    else throw new Error(`unknown argument ${flag}`);
    i++;
  }
  if (!Number.isInteger(args.nodes) || args.nodes < 8 || args.nodes > 20_000)
    throw new Error('--nodes: 8..20000');
  if (!args.modes.every((m) => m === 'allow-all' || m === 'per-person'))
    throw new Error('--policy: allow-all|per-person');
  if (args.replicas > 1 && (args.db === null || !isPostgresUrl(args.db)))
    throw new Error('--replicas needs --db postgres://… (a server where the bench may create databases)');
  return args;
}

// ---------- the tailnet under test

interface Plan {
  /** Owner of node i: a person's index, or -1 for a shared server. */
  owner: number[];
}

/** Per person: three devices; one node in fifty is a shared server. Allow-all: one user. */
function plan(n: number, mode: Mode): Plan {
  const owner: number[] = [];
  for (let i = 0; i < n; i++) owner.push(mode === 'allow-all' ? 0 : i % 50 === 0 ? -1 : Math.floor(i / 3));
  return { owner };
}

/** Who must hear of a change to a node owned by `o` (besides itself). */
function affected(p: Plan, mode: Mode, o: number, self: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < p.owner.length; i++) {
    if (i === self) continue;
    // Per person: a person's own devices see each other; servers and members see each other.
    const server = p.owner[i] === -1;
    if (mode === 'allow-all' || (!server && p.owner[i] === o) || server !== (o === -1)) out.push(i);
  }
  return out;
}

// ---------- the load: nodes

interface Node {
  index: number;
  machine: ReturnType<typeof generateKeyPair>;
  nodeKey: ReturnType<typeof generateKeyPair>;
  name: string;
  id: string;
  source: string;
  ws: StreamClient | null;
  /** Replica index this node tries first; it moves on when that one is gone. */
  prefer: number;
  /** Set when the latest connection's map arrived: a whole map, or a resume of the one it holds. */
  mapAt: number;
  /** The latest connection began with a resume (its token matched), not a whole map. */
  resumed: boolean;
  /** The token of the map it holds (the latest message's, read from its head), given on reconnect. */
  mapToken: string | null;
  generation: number;
  /** Upgrades in a row that control did not answer in time (the engine's streamHandshakeTimeoutMs). */
  timeouts: number;
  /** Told to log out (deleted): like the engine, it does not connect again. */
  loggedOut: boolean;
  /** Signs this node's requests; made once (real nodes sign on their own machines, not on the load's cores). */
  sign: ReturnType<typeof machineSigner> | null;
  /** The latest connection's replica. */
  url: string;
  /** When the latest connection was tried, its TCP connection was up and its upgrade answered (performance.now(); 0: not yet). */
  triedAt: number;
  connectedAt: number;
  upgradedAt: number;
  messages: number;
  firstHead: string;
}

function signed(node: Node, controlKey: string, method: string, path: string, body: string): string {
  node.sign ??= machineSigner(node.machine.privateKey, controlKey);
  return node.sign({ method, path, body });
}

function post(url: string, path: string, body: string, headers: Record<string, string>, source: string) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const u = new URL(url);
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path,
        method: 'POST',
        localAddress: source,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function register(node: Node, url: string, controlKey: string, authKey: string): Promise<void> {
  const nodeKeyProof = nodeKeyPossessionProof({
    nodePrivateKey: node.nodeKey.privateKey,
    controlPublicKey: controlKey,
    machineKey: node.machine.publicKey,
  });
  const body = JSON.stringify({
    nodeKey: node.nodeKey.publicKey,
    os: 'linux',
    nodeKeyProof,
    hostname: node.name,
    authKey,
  });
  const sig = signed(node, controlKey, 'POST', REGISTER_PATH, body);
  const res = await post(url, REGISTER_PATH, body, { [MACHINE_AUTH_HEADER]: sig }, node.source);
  if (res.status !== 200) throw new Error(`registration of ${node.name}: ${res.status} ${res.text}`);
  const reply = JSON.parse(res.text) as { node: { id: string; name: string } };
  node.id = reply.node.id;
  node.name = reply.node.name;
}

interface Event {
  t0: number;
  match: (msg: Delta, node: Node) => boolean;
  times: Map<number, number>;
}
type Delta = {
  type: string;
  peersUpserted?: { id: string; name: string; endpoints: string[] }[];
  peersRemoved?: string[];
  packetFilter?: unknown;
};

/** Why connect attempts failed since the counters were last reset (the restart's herd). */
interface Attempts {
  started: number;
  /** Attempts that ended without their map (whole or resumed), by the error's code or the HTTP status. */
  failed: Map<string, number>;
  /** Back-off waits started, and their total. */
  waits: number;
  waitedMs: number;
}

const noAttempts = (): Attempts => ({ started: 0, failed: new Map(), waits: 0, waitedMs: 0 });

/** Messages read by every node since it was made, by type: how many, and their bytes. */
class Received {
  private readonly byType = new Map<string, { count: number; bytes: number }>();

  add(type: string, bytes: number): void {
    const t = this.byType.get(type);
    if (t === undefined) this.byType.set(type, { count: 1, bytes });
    else {
      t.count++;
      t.bytes += bytes;
    }
  }

  toString(): string {
    const mib = (b: number) => (b / 2 ** 20).toFixed(0);
    return [...this.byType].map(([type, t]) => `${t.count} ${type} (${mib(t.bytes)} MiB)`).join(', ');
  }
}

class Load {
  event: Event | null = null;
  stopping = false;
  attempts = noAttempts();
  received = new Received();
  /** When any stream last had a message (performance.now()). */
  lastMessageAt = 0;
  constructor(
    readonly nodes: Node[],
    readonly urls: () => string[],
    readonly controlKey: string,
    /** The live replicas, in the order of `urls`: where a slow event's time went (their CPU, fan-out). */
    readonly replicas: () => readonly Replica[],
  ) {}

  /** Opens (and keeps open, reconnecting with jittered back-off) the node's signed stream. */
  connect(node: Node, attempt = 0): void {
    const urls = this.urls();
    const generation = ++node.generation;
    const url = urls[(node.prefer + attempt) % urls.length];
    if (url === undefined) {
      // No replica up at this moment (a restart): the engine would be refused, and back off.
      this.retry(node, attempt);
      return;
    }
    // As the engine: the token of the map it holds, so control can resume it.
    const path = streamPath(node.mapToken);
    const sig = signed(node, this.controlKey, 'GET', path, '');
    node.url = url;
    node.triedAt = performance.now();
    node.connectedAt = 0;
    node.upgradedAt = 0;
    node.messages = 0;
    node.firstHead = '';
    this.attempts.started++;
    let why = 'closed';
    const answered = () => {
      clearTimeout(handshake);
      node.timeouts = 0;
    };
    /** Whether a message with this head is read whole: a delta while a change is being timed here. */
    const timing = (type: string | undefined) =>
      type !== 'full' && type !== 'resume' && this.event !== null && !this.event.times.has(node.index);
    const ws = new StreamClient(url, path, { [MACHINE_AUTH_HEADER]: sig }, node.source, HEAD_BYTES, {
      // Up is not accepted: the kernel completes a connection before control accepts it, so one up
      // and not yet answered waits in control's accept queue or in control (see herdSteps).
      connected: () => {
        if (node.generation === generation) node.connectedAt = performance.now();
      },
      upgrade: () => {
        answered();
        if (node.generation === generation) node.upgradedAt = performance.now();
      },
      keep: (head) => timing(MESSAGE_HEAD.exec(head.toString())?.[1]),
      message: (headBytes, length, body) => {
        // A full map (the whole tailnet in allow-all) is only counted, not parsed nor kept: the load
        // process must keep up with N of them on a restart. Its type and token are the head's first keys.
        const head = headBytes.toString();
        const [, type, token] = MESSAGE_HEAD.exec(head) ?? [];
        this.lastMessageAt = performance.now();
        this.received.add(type ?? '?', length);
        if (node.generation === generation) {
          if (node.messages++ === 0) node.firstHead = head.slice(0, 16);
        }
        // As the engine: a message without a token leaves none (its peers may not be control's record).
        node.mapToken = token ?? null;
        if (type === 'full' || type === 'resume') {
          node.mapAt = performance.now();
          node.resumed = type === 'resume';
          attempt = 0;
          return;
        }
        // A deleted node's stream says so and closes; retrying, it was refused (401) until the run ended.
        if (type === 'logout') node.loggedOut = true;
        const ev = this.event;
        if (ev === null || body === null || ev.times.has(node.index)) return;
        const msg = JSON.parse(body.toString()) as Delta;
        if (msg.type === 'delta' && ev.match(msg, node)) ev.times.set(node.index, performance.now() - ev.t0);
      },
      refused: (status) => {
        answered();
        why = `HTTP ${status}`;
      },
      error: (err) => {
        // The first cause wins: terminating after an HTTP answer reports an error of its own.
        if (why === 'closed') why = err.code ?? err.message;
      },
      close: () => {
        clearTimeout(handshake);
        if (this.stopping || node.generation !== generation || node.loggedOut) return;
        if (node.mapAt === 0) this.attempts.failed.set(why, (this.attempts.failed.get(why) ?? 0) + 1);
        const steady = node.mapAt > 0 && performance.now() - node.mapAt >= STREAM_RETRY.steadyMs;
        node.mapAt = 0;
        this.retry(node, attempt, steady);
      },
    });
    node.ws = ws;
    // As the engine's MapSession: an upgrade control has not answered in time is given up, and each
    // such give-up in a row makes the next wait longer.
    const handshake = setTimeout(() => {
      node.timeouts++;
      why = 'handshake timeout';
      ws.terminate();
    }, streamHandshakeTimeoutMs(node.timeouts));
  }

  /** Connects again after the back-off of the engine's control client (`steady`: see MapSession). */
  private retry(node: Node, attempt: number, steady = false): void {
    const wait = backoffDelayMs(attempt, STREAM_RETRY, Math.random, steady);
    this.attempts.waits++;
    this.attempts.waitedMs += wait;
    setTimeout(() => this.dialing.add(() => this.connect(node, attempt + 1), NOTHING), wait);
  }

  /**
   * Connections due, opened DIAL_TURN_MS of them per event-loop turn, as control queues its connects.
   * A herd's thousands of back-off timers fall due within 250 ms, and this one process takes about
   * half a millisecond to open each (a killed replica's 3,334: two seconds of its CPU): opened
   * straight from the timers, once behind each timers phase opened every one that fell due during
   * the one before (hundreds), and the upgrade requests of connections already up waited for it (I/O
   * waits for the timers phase), so control idled, then took them in bursts. A fleet's nodes each
   * send theirs as soon as their own connection is up.
   */
  private readonly dialing = new ConnectQueue(DIAL_TURN_MS, (err) => {
    throw err;
  });

  /** Starts an event, runs `act`, and waits until every node in `expect` has seen it. */
  async measure(what: string, expect: number[], match: Event['match'], act: () => Promise<void>) {
    const replicas = this.replicas();
    const fanOutBefore = await Promise.all(replicas.map(fanOutOf));
    const cpuBefore = replicas.map((r) => cpuSeconds(r.child.pid));
    // This process's own stalls: a late delivery it was too busy to read is the bench's, not control's.
    const stalls = monitorEventLoopDelay({ resolution: 10 });
    stalls.enable();
    const ev: Event = { t0: performance.now(), match, times: new Map() };
    this.event = ev;
    await act();
    const actMs = performance.now() - ev.t0;
    const deadline = performance.now() + EVENT_TIMEOUT_MS;
    while (expect.some((i) => !ev.times.has(i)) && performance.now() < deadline) await sleep(20);
    this.event = null;
    const eventMs = performance.now() - ev.t0;
    stalls.disable();
    const cpu = replicas.map((r, i) => cpuSeconds(r.child.pid) - (cpuBefore[i] as number));
    const fanOutAfter = await Promise.all(replicas.map(fanOutOf));
    const times = expect.map((i) => ev.times.get(i)).filter((t): t is number => t !== undefined);
    report(what, times, expect.length);
    console.log(
      `    the action ${actMs.toFixed(0)} ms; this load process's longest stall ${(stalls.max / 1e6).toFixed(0)} ms`,
    );
    // With replicas, by the replica a node streams from: the writer's own nodes against the
    // others', which hear of the change through the database's change feed.
    if (replicas.length > 1)
      for (let r = 0; r < replicas.length; r++) {
        const prefer = new Map(this.nodes.map((x) => [x.index, x.prefer]));
        const mine = expect.filter((i) => prefer.get(i) === r);
        const got = mine.map((i) => ev.times.get(i)).filter((t): t is number => t !== undefined);
        report(`  on replica ${r}`, got, mine.length);
      }
    // Per replica, from its own metrics: when it wrote the deltas, against when they were read here.
    for (const [r, before] of fanOutBefore.entries())
      console.log(
        `    replica ${r}: ${fanOutLine(before, fanOutAfter[r] as FanOutCount)}; CPU ${(((cpu[r] as number) / (eventMs / 1000)) * 100).toFixed(0)}% of a core over the ${eventMs.toFixed(0)} ms`,
      );
  }

  /** Waits until every node of `which` (default: all) has had its map (whole or resumed) since `since`. */
  allBack(since: number, which: readonly Node[] = this.nodes): Promise<number> {
    // Ends early when none has come back for STALL_MS: a stuck herd says who is missing, not a timeout.
    let back = -1;
    let movedAt = performance.now();
    return waitFor(() => {
      const now = which.filter((n) => n.mapAt > since).length;
      if (now !== back) {
        back = now;
        movedAt = performance.now();
      } else if (performance.now() - movedAt > STALL_MS)
        throw new Error(
          `${which.length - now} not back, none for ${STALL_MS} ms:\n${notBack(which, since, this.urls())}`,
        );
      return now === which.length;
    }, BACK_TIMEOUT_MS);
  }
}

function attemptsLine(a: Attempts): string {
  const failed = [...a.failed].map(([why, count]) => `${count} ${why}`).join(', ');
  return `${a.started} attempts (failed: ${failed || 'none'}); ${a.waits} back-off waits, mean ${(a.waitedMs / Math.max(1, a.waits) / 1000).toFixed(1)} s`;
}

function report(what: string, times: number[], expected: number): void {
  const s = [...times].sort((a, b) => a - b);
  const f = (x: number) => `${x.toFixed(0)} ms`;
  console.log(
    `  ${what.padEnd(16)} reached ${times.length}/${expected}  first ${f(s[0] ?? Number.NaN)}  p50 ${f(pct(s, 50))}  p99 ${f(pct(s, 99))}  max ${f(s.at(-1) ?? Number.NaN)}`,
  );
}

// ---------- one run

async function tempDatabase(args: Args): Promise<{ db: string; drop: () => Promise<void> }> {
  if (args.db === null) {
    const dir = mkdtempSync(join(tmpdir(), 'weft-control-load-'));
    return { db: join(dir, 'control.db'), drop: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `weft_bench_${randomBytes(5).toString('hex')}`;
  const admin = async (q: string) => {
    const c = new pg.Client({ connectionString: args.db as string });
    await c.connect();
    try {
      await c.query(q);
    } finally {
      await c.end();
    }
  };
  await admin(`create database ${name}`);
  const u = new URL(args.db);
  u.pathname = `/${name}`;
  return { db: u.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) };
}

async function run(args: Args, mode: Mode): Promise<void> {
  const n = args.nodes;
  const { db, drop } = await tempDatabase(args);
  const store = new Store((await openDatabase(db)).db);
  const replicas: Replica[] = [];
  let load: Load | null = null;
  try {
    console.log(
      `\n${n} nodes, ${mode}, ${args.replicas} replica(s), ${isPostgresUrl(db) ? 'PostgreSQL' : 'SQLite'}`,
    );
    const p = plan(n + 1, mode);
    const persons = Math.max(...p.owner) + 1;
    const keys: string[] = [];
    for (let u = 0; u < persons; u++) {
      await createUser(store, `p${u}`, `p${u}@example.com`);
      keys.push(await createPreauthKey(store, { user: `p${u}`, reusable: true, expiration: '1d' }));
    }
    await createUser(store, 'ops', 'ops@example.com');
    const serverKey = await createPreauthKey(store, {
      user: 'ops',
      reusable: true,
      expiration: '1d',
      tags: 'tag:server',
    });
    if (mode === 'per-person') {
      const set = await setPolicyText(store, PERSON_POLICY('*'), 'bench');
      if (!set.ok) throw new Error(`policy: ${JSON.stringify(set.issues)}`);
    }
    const apiKey = await createApiKey(store, '1d');

    for (let r = 0; r < args.replicas; r++) replicas.push(await startReplica(db));
    const urls = () => replicas.map((r) => r.url);
    const controlKey = (
      (await (await fetch(`${replicas[0]?.url}${CONTROL_KEY_PATH}`)).json()) as { publicKey: string }
    ).publicKey;

    // node n (the last of the plan) is held back: it is the one that joins during the run.
    const nodes: Node[] = Array.from({ length: n + 1 }, (_, i) => ({
      index: i,
      machine: generateKeyPair(),
      nodeKey: generateKeyPair(),
      name: `node-${i}`,
      id: '',
      source: sourceOf(i),
      ws: null,
      prefer: i % args.replicas,
      mapAt: 0,
      resumed: false,
      mapToken: null,
      generation: 0,
      timeouts: 0,
      loggedOut: false,
      sign: null,
      url: '',
      triedAt: 0,
      connectedAt: 0,
      upgradedAt: 0,
      messages: 0,
      firstHead: '',
    }));
    const keyOf = (i: number) => (p.owner[i] === -1 ? serverKey : (keys[p.owner[i] as number] as string));
    const present = nodes.slice(0, n);
    load = new Load(present, urls, controlKey, () => replicas);
    const live = load;

    let t = performance.now();
    await pool(present, 32, (node) =>
      register(node, urls()[node.prefer] as string, controlKey, keyOf(node.index)),
    );
    const registerMs = performance.now() - t;
    t = performance.now();
    const firstHerd = herdTimeline(live, present, t - 1, () => replicas.at(-1)?.child.pid, urls);
    for (const node of present) live.connect(node);
    const connectMs = await live.allBack(t - 1).finally(() => firstHerd.stop());
    console.log(`  first connect   ${attemptsLine(live.attempts)}`);
    // The connect's own fan-out ends after the last full map: with replicas, each learns the others'
    // nodes are online through the change feed, a reload after the herd that tells its own nodes
    // (seconds of work at 2,000 nodes). Changes are measured once no message has come for QUIET_MS,
    // not in that tail.
    const settleFrom = performance.now();
    await waitFor(() => performance.now() - live.lastMessageAt > QUIET_MS, EVENT_TIMEOUT_MS);
    const settledMs = Math.max(0, live.lastMessageAt - settleFrom);
    // That reload's work can outlast its messages (2,000 nodes: none came after the last full map,
    // yet replica 0 was busy 2.3 s more): the replicas' CPU is waited for too.
    const idleAt = await whenIdle(
      replicas.map((r) => r.child.pid),
      EVENT_TIMEOUT_MS,
    );
    const rss = replicas.map((r) => (rssBytes(r.child.pid) / 2 ** 20).toFixed(0));
    const memory = await Promise.all(replicas.map(memoryOf));
    console.log(
      `  registration    ${n} in ${(registerMs / 1000).toFixed(1)} s (${(n / (registerMs / 1000)).toFixed(0)}/s)`,
    );
    console.log(
      `  connect         all ${n} streams with their full map in ${(connectMs / 1000).toFixed(1)} s`,
    );
    console.log(`  control RSS     ${rss.join(' + ')} MiB (${memory.join('; ')})`);
    console.log(
      `  settled         last message ${(settledMs / 1000).toFixed(1)} s, ${idleAt === null ? `a replica still busy ${EVENT_TIMEOUT_MS / 1000} s` : `every replica idle ${((idleAt - settleFrom) / 1000).toFixed(1)} s`} after the last full map`,
    );

    const perStream = present.map((x) => x.messages).sort((a, b) => a - b);
    console.log(
      `  read            ${live.received}; messages per stream p50 ${pct(perStream, 50)}, max ${perStream.at(-1)}`,
    );

    // A join: the new node registers (it is offline, so peers add it as such).
    const joiner = nodes[n] as Node;
    await live.measure(
      'join',
      affected(p, mode, p.owner[n] as number, n),
      (m) => m.peersUpserted?.some((v) => v.name === joiner.name) === true,
      () => register(joiner, urls()[0] as string, controlKey, keyOf(n)),
    );

    // An endpoint change, reported on a node's own stream.
    const mover = present[1] as Node;
    const endpoint = '198.51.100.77:41641';
    await live.measure(
      'endpoint change',
      affected(p, mode, p.owner[1] as number, 1).filter((i) => i !== n),
      (m) => m.peersUpserted?.some((v) => v.id === mover.id && v.endpoints.includes(endpoint)) === true,
      async () => mover.ws?.send(JSON.stringify({ type: 'endpoints', endpoints: [endpoint] })),
    );

    // A delete through the admin API.
    const victim = present[4] as Node;
    await live.measure(
      'delete',
      affected(p, mode, p.owner[4] as number, 4).filter((i) => i !== n),
      (m) => m.peersRemoved?.includes(victim.id) === true,
      async () => {
        const res = await fetch(`${urls()[0]}/api/v1/nodes/${victim.name}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${apiKey}` },
        });
        if (res.status !== 200) throw new Error(`delete: ${res.status} ${await res.text()}`);
      },
    );
    live.nodes.splice(live.nodes.indexOf(victim), 1);

    // A policy change, written by the admin CLI's code on its own connection (the change feed).
    const members = present.filter((x) => x !== victim && (mode === 'allow-all' || p.owner[x.index] !== -1));
    await live.measure(
      'policy change',
      members.map((x) => x.index),
      (m) => m.packetFilter !== undefined,
      async () => {
        const set = await setPolicyText(
          store,
          mode === 'allow-all' ? ALL_POLICY : PERSON_POLICY('22'),
          'bench',
        );
        if (!set.ok) throw new Error(`policy: ${JSON.stringify(set.issues)}`);
      },
    );

    // A restart (one replica: stop and start again; several: SIGKILL the first, the rest carry on).
    // With several replicas only the killed one's nodes reconnect; the others must stay as they are.
    const { cut, stayed } =
      args.replicas === 1
        ? { cut: live.nodes, stayed: [] }
        : splitByReplica(live.nodes, (replicas[0] as Replica).url);
    if (args.replicas > 1)
      console.log(
        `  to be killed    replica 0 streams ${cut.length} nodes: ${cut.filter((x) => x.prefer !== 0).length} of them tried another first, ${stayed.filter((x) => x.prefer === 0).length} that tried it first stream from another`,
      );
    t = performance.now();
    live.attempts = noAttempts();
    live.received = new Received();
    const herd = herdTimeline(live, cut, t, () => replicas.at(-1)?.child.pid, urls);
    // The live replicas' (with several) or the new control's steps, from the SIGTERM or the kill.
    const steps =
      args.replicas > 1
        ? herdSteps(
            cut,
            t,
            replicas.slice(1).map((r) => r.child.pid),
          )
        : null;
    if (args.replicas === 1) {
      const old = replicas.pop() as Replica;
      old.child.kill('SIGTERM');
      await new Promise((r) => old.child.once('exit', r));
      const exited = performance.now();
      replicas.push(await startReplica(db));
      console.log(
        `  restart phases  SIGTERM to exit ${((exited - t) / 1000).toFixed(1)} s, spawn to listening ${((performance.now() - exited) / 1000).toFixed(1)} s`,
      );
    } else {
      const dead = replicas.shift() as Replica;
      dead.child.kill('SIGKILL');
      // As a round-robin balancer does, the dead replica's nodes' new connections are dealt over
      // the live replicas in turn; the others keep theirs (its index is one lower now). A node's
      // first try after losing its stream is its preference plus one (`connect(node, 1)`).
      let turn = 0;
      for (const node of live.nodes)
        node.prefer =
          node.url === dead.url
            ? (turn++ + replicas.length - 1) % replicas.length
            : Math.max(0, node.prefer - 1);
    }
    // From the new control listening (or the kill, with replicas), as before; and from the SIGTERM.
    const backMs = await live.allBack(t, cut).finally(() => herd.stop());
    const sinceTermMs = performance.now() - t;
    console.log(`  reconnects      ${attemptsLine(live.attempts)}`);
    console.log(`  read            ${live.received}`);
    if (steps) console.log(steps.stop());
    const dropped = stayed.filter((x) => x.mapAt > t || x.ws?.readyState !== OPEN).length;
    const resumed = cut.filter((x) => x.resumed).length;
    console.log(
      `  ${args.replicas === 1 ? 'restart' : 'replica killed'}  all ${cut.length} of its nodes back with their map in ${(backMs / 1000).toFixed(1)} s${args.replicas === 1 ? ` after it listens, ${(sinceTermMs / 1000).toFixed(1)} s after the SIGTERM` : `; ${dropped} of the ${stayed.length} on other replicas disturbed`}; ${resumed} resumed, ${cut.length - resumed} sent a whole map`,
    );
    if (args.replicas > 1) {
      const landed = urls().map((u, r) => `replica ${r} ${cut.filter((x) => x.url === u).length}`);
      console.log(`  moved to        ${landed.join(', ')} (the live replicas, renumbered)`);
      // Lost messages: every change made before the kill must be in the maps the nodes got back.
      const probe = present[2] as Node;
      const map = await fullMapOf(probe, urls()[0] as string, controlKey);
      const names = new Set(map.peers.map((x) => x.name));
      const lost =
        (names.has(victim.name) ? 1 : 0) +
        (mode === 'allow-all' || p.owner[2] === p.owner[1]
          ? map.peers.find((x) => x.id === mover.id)?.endpoints.includes(endpoint)
            ? 0
            : 1
          : 0);
      console.log(
        `  lost messages   ${lost} (a node's full map after the kill: delete and endpoint change present)`,
      );
    }
  } finally {
    // Control is stopped before the nodes' sockets are: it then ends every stream at once (one
    // last-seen write), where 10,000 closes one by one outlasted the 10 s below, and a control run
    // with --cpu-prof, SIGKILLed, wrote no profile (the restarted control's, at 10,000 nodes).
    if (load) load.stopping = true;
    // SIGTERM first: a control run with --cpu-prof writes its profile only on a clean exit.
    await Promise.all(
      replicas.map(async (r) => {
        const exited = new Promise((resolve) => r.child.once('exit', resolve));
        r.child.kill('SIGTERM');
        if ((await Promise.race([exited, sleep(10_000).then(() => 'late')])) === 'late')
          r.child.kill('SIGKILL');
      }),
    );
    if (load) for (const node of load.nodes) node.ws?.terminate();
    await store.destroy();
    await drop();
  }
}

/**
 * Prints, every 5 s until stopped, how many of `cut` have their map again (whole or resumed) since `since`, and
 * the CPU that control (the newest replica) and this load process used in that interval.
 */
function herdTimeline(
  load: Load,
  cut: readonly Node[],
  since: number,
  controlPid: () => number | undefined,
  urls: () => string[] = () => [],
): { stop: () => void } {
  const STEP_MS = 5_000;
  let stalled = 0;
  let lastBack = -1;
  let last = {
    at: performance.now(),
    pid: controlPid(),
    control: cpuSeconds(controlPid()),
    load: process.cpuUsage(),
  };
  const timer = setInterval(() => {
    const at = performance.now();
    const pid = controlPid();
    let control = Number.NaN;
    try {
      control = cpuSeconds(pid);
    } catch {
      // between the old process's exit and the new one's start
    }
    const wall = (at - last.at) / 1000;
    const used = pid === last.pid ? control - last.control : control;
    const loadUsed = process.cpuUsage(last.load);
    const back = cut.filter((n) => n.mapAt > since).length;
    stalled = back === lastBack && back < cut.length ? stalled + 1 : 0;
    lastBack = back;
    if (stalled === 2) console.log(notBack(cut, since, urls()));
    console.log(
      `    +${((at - since) / 1000).toFixed(0).padStart(3)} s  back ${String(back).padStart(6)}/${cut.length}  attempts ${String(load.attempts.started).padStart(6)}  control CPU ${((used / wall) * 100).toFixed(0).padStart(3)}%  load CPU ${(((loadUsed.user + loadUsed.system) / 1e6 / wall) * 100).toFixed(0).padStart(3)}%`,
    );
    last = { at, pid, control, load: process.cpuUsage() };
  }, STEP_MS);
  return { stop: () => clearInterval(timer) };
}

/**
 * A herd's first seconds step by step (250 ms from `since`): how many of `cut` tried (their latest
 * try), had their TCP connection up, had their upgrade answered and had their map, how many were
 * up and still unanswered at the step's end (waiting in a replica's accept queue, mostly: a replica
 * answers what it has accepted within tens of milliseconds), and the share of a core each of `pids`
 * and this load process used. A step sampled late (its wall time over 250 ms) means this process was
 * too busy to sample, so its own figures are the ones to doubt.
 */
function herdSteps(
  cut: readonly Node[],
  since: number,
  pids: readonly (number | undefined)[],
): { stop: () => string } {
  const STEP_MS = 250;
  const sample = () => ({ at: performance.now(), cpu: pids.map(cpuSeconds), load: process.cpuUsage() });
  const samples = [sample()];
  const timer = setInterval(() => samples.push(sample()), STEP_MS);
  return {
    stop: () => {
      clearInterval(timer);
      const lines = [
        '    step (s)  tried  TCP up  upgraded  back  waiting  wall ms  CPU % (replicas…, load)',
      ];
      for (let i = 1; i < samples.length; i++) {
        const [a, b] = [samples[i - 1], samples[i]] as [ReturnType<typeof sample>, ReturnType<typeof sample>];
        const within = (t: number) => t > Math.max(a.at, since) && t <= b.at;
        const wall = (b.at - a.at) / 1000;
        const share = (s: number) => `${((s / wall) * 100).toFixed(0).padStart(3)}`;
        const load = (b.load.user + b.load.system - a.load.user - a.load.system) / 1e6;
        const count = (t: (n: Node) => number) => cut.filter((n) => within(t(n))).length;
        const waiting = cut.filter(
          (n) =>
            n.connectedAt > since && n.connectedAt <= b.at && !(n.upgradedAt > 0 && n.upgradedAt <= b.at),
        ).length;
        lines.push(
          `    ${((b.at - since) / 1000).toFixed(2).padStart(8)}  ${String(count((n) => n.triedAt)).padStart(5)}  ${String(count((n) => n.connectedAt)).padStart(6)}  ${String(count((n) => n.upgradedAt)).padStart(8)}  ${String(count((n) => n.mapAt)).padStart(4)}  ${String(waiting).padStart(7)}  ${(wall * 1000).toFixed(0).padStart(7)}  ${[...b.cpu.map((c, r) => share(c - (a.cpu[r] as number))), share(load)].join(' ')}`,
        );
      }
      return lines.join('\n');
    },
  };
}

/** The nodes of `cut` without their map since `since`, by the state of their latest connection. */
function notBack(cut: readonly Node[], since: number, live: string[]): string {
  const groups = new Map<string, Node[]>();
  for (const n of cut) {
    if (n.mapAt > since) continue;
    const where = live.indexOf(n.url);
    const key = `replica ${where === -1 ? 'gone' : where} ws ${n.ws?.readyState} upgraded ${n.upgradedAt > 0} messages ${n.messages} first ${JSON.stringify(n.firstHead)} loggedOut ${n.loggedOut} timeouts ${n.timeouts}`;
    groups.set(key, [...(groups.get(key) ?? []), n]);
  }
  return [...groups]
    .map(
      ([key, ns]) =>
        `    not back: ${ns.length} ${key} (${ns
          .slice(0, 5)
          .map((n) => n.name)
          .join(' ')})`,
    )
    .join('\n');
}

/** One node's full map as a fresh stream opens with it. */
function fullMapOf(
  node: Node,
  url: string,
  controlKey: string,
): Promise<{ peers: { id: string; name: string; endpoints: string[] }[] }> {
  const sig = signed(node, controlKey, 'GET', STREAM_PATH, '');
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}${STREAM_PATH}`, {
    headers: { [MACHINE_AUTH_HEADER]: sig },
  });
  return new Promise((resolve, reject) => {
    ws.once('message', (d: Buffer) => {
      ws.terminate();
      resolve(
        (
          JSON.parse(d.toString()) as {
            netmap: { peers: { id: string; name: string; endpoints: string[] }[] };
          }
        ).netmap,
      );
    });
    ws.once('error', reject);
  });
}

const args = parseArgs(process.argv.slice(2));
console.log(
  `control-load: node ${process.version}, ${BIN} serve, load from this process (pid ${process.pid}); cores ${(await import('node:os')).cpus().length}`,
);
for (const mode of args.modes) await run(args, mode);
process.exit(0);
