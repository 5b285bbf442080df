import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promSample } from '@weft/protocol/prometheus';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlServer,
  createDatabase,
  type Host,
  Lab,
  type LabDatabase,
  postgresAbsence,
  scratchDir,
  startBalancer,
  stopTailnet,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// Two `weft-control serve` replicas on one PostgreSQL database, each on its own lab host, with real
// nodes (helper + wireguard-go + engine). Node a reaches control through a TCP balancer that
// prefers replica 1; node b talks to replica 2 alone. A policy saved into replica 2's policy file
// reaches a, held by replica 1, through the database; replica 1 killed with SIGKILL: a reconnects
// through the balancer to replica 2 while the tunnel keeps carrying pings. Tests run in order.

const skip = await postgresAbsence();
if (skip !== null) console.warn(`skipping the control replicas lab: ${skip}`);

let lab: Lab;
let dir: string;
let database: LabDatabase | null = null;
let replica1: ControlServer;
let replica2: ControlServer;
let ctl2: Host;
let policyFile: string;
const nodes: Record<'a' | 'b', WeftNode> = {} as never;
let aIp = '';
let bIp = '';

const ALLOW_ALL = '{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }] }\n';
/** Alice's and Bob's devices see only their own: a and b lose each other. */
const OWN_DEVICES_ONLY = `{ "acls": [
  { "action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:*"] },
  { "action": "accept", "src": ["bob@example.com"], "dst": ["bob@example.com:*"] },
] }
`;
const METRICS_PORT = 9464;

/** One sample of replica 2's /metrics, read from inside its host. */
async function replica2Metric(name: string): Promise<number | undefined> {
  const url = `http://${ctl2.ip}:${METRICS_PORT}/metrics`;
  const text = await ctl2.must(
    ['node', '-e', `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => console.log(t))`],
    { timeoutMs: 5000 },
  );
  return promSample(text, name);
}

/** Pings with a count and a deadline; true when a reply came back. */
const reaches = (from: WeftNode, ip: string) => from.host.ping(ip, { count: 1, deadlineS: 1 });

/** Saves the own-devices policy through replica 2; b leaves a's map and a's path to b is gone. */
async function hideBFromA(): Promise<void> {
  writeFileSync(policyFile, OWN_DEVICES_ONLY);
  await waitFor(
    'b to leave a’s map',
    async () => !(await nodes.a.status()).peers.some((p) => p.name === 'b'),
    20_000,
  );
  expect(await reaches(nodes.a, bIp)).toBe(false);
}

beforeAll(async () => {
  if (skip !== null) return;
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  database = await createDatabase();
  const seg = await lab.addSegment();
  const ctl1 = await lab.addHost('ctl1', { segment: seg, address: '198.18.0.1/24' });
  ctl2 = await lab.addHost('ctl2', { segment: seg, address: '198.18.0.2/24' });
  const lb = await lab.addHost('lb', { segment: seg, address: '198.18.0.3/24' });
  policyFile = join(dir, 'policy.hujson');
  writeFileSync(policyFile, ALLOW_ALL);
  replica1 = new ControlServer(ctl1, scratchDir(`${lab.id}-r1`), 8080, [], database.url);
  replica2 = new ControlServer(
    ctl2,
    scratchDir(`${lab.id}-r2`),
    8080,
    ['--policy-file', policyFile, '--metrics-listen', `${ctl2.ip}:${METRICS_PORT}`],
    database.url,
  );
  // One at a time: the first creates the schema and control's keys, the second reads them.
  await replica1.start();
  await replica2.start();
  const balancer = await startBalancer(lb, 8080, [`${ctl1.ip}:8080`, `${ctl2.ip}:8080`]);

  await replica2.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  await replica2.cli(['users', 'create', 'bob', '--email', 'bob@example.com']);
  for (const [name, address] of [
    ['a', '198.18.0.11/24'],
    ['b', '198.18.0.12/24'],
  ] as const) {
    const host = await lab.addHost(name, { segment: seg, address });
    nodes[name] = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
    await nodes[name].start();
  }
  const key = (user: string) => replica2.cli(['preauthkey', 'create', '--user', user]);
  await nodes.a.up(balancer, await key('alice'), 'a');
  await nodes.b.up(replica2.url, await key('bob'), 'b');
  aIp = await nodes.a.ip4();
  bIp = await nodes.b.ip4();
});

afterAll(async () => {
  if (skip !== null) return;
  await stopTailnet({ nodes: Object.values(nodes), control: replica2, lab, dir });
  await replica1?.stop();
  await database?.drop();
});

describe.skipIf(skip !== null)('two control replicas on one PostgreSQL', () => {
  it('a (on replica 1) pings b (on replica 2) over WireGuard', async () => {
    const log = (r: ControlServer) => readFileSync(join(r.dir, 'control.log'), 'utf8');
    expect(log(replica1)).toMatch(/registered a /);
    expect(log(replica2)).toMatch(/registered b /);
    // Replica 2 holds b's stream only; a's is replica 1's, yet both are online for replica 2.
    await waitFor(
      'both nodes online for replica 2',
      async () => (await replica2Metric('weft_control_nodes_online')) === 2,
      20_000,
    );
    expect(await replica2Metric('weft_control_streams_open')).toBe(1);
    await waitFor('a to reach b', () => reaches(nodes.a, bIp), 30_000);
    expect(await reaches(nodes.b, aIp)).toBe(true);
  });

  it('a policy saved through replica 2 takes a’s path to b away, and back', async () => {
    await hideBFromA();

    writeFileSync(policyFile, ALLOW_ALL);
    await waitFor('a to reach b again', () => reaches(nodes.a, bIp), 30_000);
  });

  it('replica 1 killed: a reconnects through the balancer to replica 2 and the pings go on', async () => {
    await replica1.stop('SIGKILL');
    // WireGuard runs on the last map: the tunnel does not notice control's crash.
    // ping exits 0 only if all 5 replies came back: none lost, with room for a loaded machine.
    const during = await nodes.a.host.exec(
      ['ping', '-n', '-q', '-c', '5', '-i', '0.2', '-W', '5', '-w', '20', bIp],
      { timeoutMs: 30_000 },
    );
    expect(during.code).toBe(0);
    await waitFor(
      'a’s stream on replica 2',
      async () => (await replica2Metric('weft_control_streams_open')) === 2,
      20_000,
    );
    expect(await replica2Metric('weft_control_nodes_online')).toBe(2);
    expect(await reaches(nodes.a, bIp)).toBe(true);

    // Replica 2 now serves a: its next change reaches a directly.
    await hideBFromA();
  });
});
