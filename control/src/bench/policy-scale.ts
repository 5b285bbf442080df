import type { StreamServerMessage } from '@weft/protocol';
import type { NetmapHub, StreamSession } from '../netmap/hub.js';
import { type PolicyVisibility, policyTailnet, wildcardSourcesOf } from '../netmap/policy-visibility.js';
import { compilePolicy, parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { connectedHub, TEST_RANGES, testNode } from '../testing/nodes.js';

// `npm run bench -- policy [SIZES…]`: the time from a change to every affected node's delta being
// serialized for its stream, on simulated tailnets (default 1,000 and 10,000 nodes, all connected):
// control's own policy compiler and netmap hub, in-process, with no database or network. Each change
// is set against recompiling everything from scratch in the same run, which is what an engine
// without incremental updates would pay for each change.

const members = (n: number, odd: number) =>
  Array.from({ length: n }, (_, i) => `"u${i * 2 + odd}@example.com"`).join(',');

/** Users with three devices each; one node in fifty a web server, a database or a subnet router. */
const policyText = (extraPort = '') => `{
  "groups": {
    "group:dev": [${members(2000, 0)}],
    "group:ops": [${members(50, 1)}],
    "group:eng": [],
  },
  "tagOwners": { "tag:web": ["group:ops"], "tag:db": ["group:ops"], "tag:router": ["group:ops"] },
  "autoApprovers": { "routes": { "198.18.0.0/15": ["tag:router"] } },
  "acls": [
    { "action": "accept", "src": ["group:dev"], "dst": ["tag:web:443${extraPort}", "198.18.0.0/15:22"] },
    { "action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"] },
    { "action": "accept", "src": ["group:ops"], "dst": ["*:*"] },
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
    { "action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"] },
  ],
  "grants": [{ "src": ["*"], "dst": ["tag:web"], "ip": ["tcp:80"] }],
}`;

function record(i: number, extra: Partial<NodeRecord> = {}): NodeRecord {
  const user = Math.floor(i / 3);
  const owner = { name: `u${user}`, email: `u${user}@example.com`, groups: user % 7 === 0 ? ['eng'] : [] };
  return testNode(i, owner, {
    userId: `u${user}`,
    ipv6: `fd00:1:2::${i.toString(16)}`,
    endpoints: [`198.18.${Math.floor(i / 256) % 256}.${i % 256}:41641`],
    ...extra,
  });
}

function tailnet(n: number): NodeRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const kind = i % 50;
    if (kind === 0) return record(i, { tags: ['tag:web'] });
    if (kind === 1) return record(i, { tags: ['tag:db'] });
    if (kind === 2) return record(i, { tags: ['tag:router'], advertisedRoutes: [`198.18.${i % 250}.0/24`] });
    return record(i);
  });
}

/** A connected node's stream: every message serialized as the WebSocket route would send it. */
class Session implements StreamSession {
  messages = 0;
  bytes = 0;
  /** Off while the tailnet is set up, so that only the measured changes pay for serializing. */
  serialize = false;
  constructor(readonly nodeId: string) {}
  send(message: StreamServerMessage): void {
    this.messages++;
    if (this.serialize) this.bytes += JSON.stringify(message).length;
  }
  close(): void {}
}

interface World {
  hub: NetmapHub;
  visibility: PolicyVisibility;
  sessions: Session[];
}

/** The tailnet with every node connected (not timed: nodes come online one by one). */
function connectAll(nodes: NodeRecord[], text: string): World {
  const { hub, visibility, sessions } = connectedHub(nodes, text, (id) => new Session(id));
  for (const s of sessions.values()) s.serialize = true;
  return { hub, visibility, sessions: [...sessions.values()] };
}

/**
 * What a control plane without incremental updates does on every change: compile the policy over
 * all nodes and compute every node's packet filter and peer list (before even diffing or sending).
 */
function fromScratch(nodes: NodeRecord[], text: string): number {
  const t0 = performance.now();
  const users = [...new Map(nodes.map((n) => [n.userName, n])).values()].map((n) => ({
    id: n.userId as string,
    name: n.userName as string,
    email: n.userEmail,
    createdAt: n.createdAt,
    provider: null,
    subject: null,
    displayName: null,
    groups: n.userGroups,
  }));
  const engine = compilePolicy(parsePolicy(text), policyTailnet(users, nodes), {
    wildcardSources: wildcardSourcesOf(TEST_RANGES),
  });
  let size = 0;
  for (const n of nodes) {
    size += JSON.stringify(engine.packetFilter(n.name)).length + engine.visiblePeers(n.name).size;
  }
  if (size === 0) throw new Error('nothing compiled');
  return ms(t0);
}

function ms(since: number): number {
  return performance.now() - since;
}

function median(samples: number[]): number {
  return [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)] as number;
}

/** Runs `change` (and `undo`) `runs` times; the median time of `change` and what it sent. */
function measure(world: World, runs: number, change: () => void, undo: () => void) {
  const times: number[] = [];
  let reached = 0;
  let bytes = 0;
  for (let i = 0; i < runs; i++) {
    const before = world.sessions.map((s) => [s.messages, s.bytes] as const);
    const t0 = performance.now();
    change();
    times.push(ms(t0));
    reached = world.sessions.filter((s, j) => s.messages > (before[j]?.[0] ?? 0)).length;
    bytes = world.sessions.reduce((sum, s, j) => sum + s.bytes - (before[j]?.[1] ?? 0), 0);
    undo();
  }
  return { ms: median(times), reached, bytes };
}

function run(size: number): void {
  const nodes = tailnet(size);
  const text = policyText();
  const setup = performance.now();
  const world = connectAll(nodes, text);
  const connected = ms(setup);
  const scratch = median([0, 1, 2].map(() => fromScratch(nodes, text)));
  const laptop = record(size + 1);
  const web = nodes[50] as NodeRecord;
  const alice = nodes.filter((n) => n.userName === 'u20' && n.tags.length === 0);
  const withGroups = (groups: string[]) =>
    nodes.map((n) => (n.userName === 'u20' ? { ...n, userGroups: groups } : n));
  const cases: [string, () => void, () => void][] = [
    ['a laptop joins', () => world.hub.update([...nodes, laptop]), () => world.hub.update(nodes)],
    [
      'a web server is re-tagged tag:db',
      () => world.hub.update(nodes.map((n) => (n === web ? { ...n, tags: ['tag:db'] } : n))),
      () => world.hub.update(nodes),
    ],
    [
      `a user's provider groups change (${alice.length} devices)`,
      () => world.hub.update(withGroups(['eng'])),
      () => world.hub.update(nodes),
    ],
    [
      'a new policy opens one more port',
      () => {
        world.hub.policyChanged(world.visibility.setPolicy(parsePolicy(policyText(',8443'))));
      },
      () => {
        world.hub.policyChanged(world.visibility.setPolicy(parsePolicy(text)));
      },
    ],
  ];

  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  console.log(
    `\n${size} nodes, all connected (set up in ${(connected / 1000).toFixed(1)} s, not timed below)`,
  );
  console.log(`  from scratch (compile, every node's filter and peer list): ${scratch.toFixed(0)} ms`);
  for (const [what, change, undo] of cases) {
    const r = measure(world, 5, change, undo);
    console.log(
      `  ${what}: ${r.ms.toFixed(1)} ms to recompile and push to ${r.reached} nodes (${mb(r.bytes)}); ` +
        `from scratch / this = ${(scratch / r.ms).toFixed(1)}`,
    );
  }
}

const sizes = process.argv.slice(2).map(Number);
console.log(`node ${process.version}; npm run bench -- policy ${process.argv.slice(2).join(' ')}`.trimEnd());
for (const size of sizes.length > 0 ? sizes : [1000, 10000]) {
  if (!Number.isInteger(size) || size < 100)
    throw new Error(`a size must be a whole number ≥ 100, not ${size}`);
  run(size);
}
