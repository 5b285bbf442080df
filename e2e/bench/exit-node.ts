import { existsSync } from 'node:fs';
import {
  ControlServer,
  type Host,
  Lab,
  removeScratch,
  scratchDir,
  sleep,
  WeftNode,
  waitFor,
} from '../lab/index.js';

// `npm run bench -- exit-node [--seconds S]` (root): iperf3 throughput through an exit node against a
// direct peer, in one run on real namespaces with real control, engines, helpers and wireguard-go:
//   underlay    client → exit node's own LAN address, no tunnel (what the veths carry)
//   direct peer client → exit node's tunnel address (100.x): WireGuard to a peer
//   exit node   client → an "internet" host only the exit node reaches, with the exit node chosen:
//               the same WireGuard hop, then forwarded and masqueraded by the exit node
// Prints the raw figures, the command lines and exit/direct. Only figures from one run compare;
// nothing is asserted.
//
//   control 198.18.40.5, client 198.18.40.2, exit 198.18.40.3 ─ WAN 198.18.40.0/24
//   exit 198.18.41.2 ─ "internet" 198.18.41.0/24 ─ web 198.18.41.10 (iperf3 server)

const args = process.argv.slice(2);
const secondsArg = args.indexOf('--seconds');
const SECONDS = secondsArg >= 0 ? Number(args[secondsArg + 1]) : 8;
if (!Number.isInteger(SECONDS) || SECONDS < 1 || SECONDS > 60) {
  console.error('--seconds must be a whole number from 1 to 60');
  process.exit(2);
}

async function weft(node: WeftNode, argv: string[]): Promise<string> {
  const r = await node.weft(argv, 60_000);
  if (r.code !== 0) throw new Error(`weft ${argv.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** One bounded iperf3 run (a fresh one-shot server in `server`'s namespace); Mbit/s received. */
async function iperf(client: Host, server: Host, target: string): Promise<{ mbps: number; cmd: string }> {
  const srv = server.spawn(['iperf3', '-s', '-1', '-p', '5201']);
  await sleep(500);
  const argv = [
    'iperf3',
    '-c',
    target,
    '-p',
    '5201',
    '-t',
    String(SECONDS),
    '--connect-timeout',
    '3000',
    '-J',
  ];
  try {
    const r = await client.exec(['timeout', String(SECONDS + 15), ...argv], {
      timeoutMs: (SECONDS + 20) * 1000,
    });
    const j = JSON.parse(r.stdout || '{}') as {
      end?: { sum_received?: { bits_per_second?: number } };
      error?: string;
    };
    const bps = j.end?.sum_received?.bits_per_second;
    if (!bps) throw new Error(`iperf3 to ${target}: ${j.error ?? (r.stderr || 'no result')}`);
    return { mbps: bps / 1e6, cmd: `ip netns exec ${client.ns} ${argv.join(' ')}` };
  } finally {
    if (srv.exitCode === null) srv.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  if (!existsSync('/usr/bin/iperf3')) throw new Error('iperf3 is missing: run scripts/setup.sh');
  const lab = await Lab.create();
  const dir = scratchDir(`bench-exit-${lab.id}`);
  const nodes: WeftNode[] = [];
  let control: ControlServer | undefined;
  try {
    const wan = await lab.addSegment();
    const inet = await lab.addSegment();
    const ctl = await lab.addHost('ctl', { segment: wan, address: '198.18.40.5/24' });
    const cl = await lab.addHost('cl', { segment: wan, address: '198.18.40.2/24' });
    const ex = await lab.addHost('ex', { segment: wan, address: '198.18.40.3/24' });
    await lab.attach(ex.ns, inet, 'eth1', '198.18.41.2/24');
    const web = await lab.addHost('web', { segment: inet, address: '198.18.41.10/24' });
    control = new ControlServer(ctl, dir);
    await control.start();
    await control.cli(['users', 'create', 'bench']);
    const key = await control.cli(['preauthkey', 'create', '--user', 'bench', '--reusable']);
    const [client, exit] = [cl, ex].map((h) => {
      const n = new WeftNode(h, scratchDir(`bench-exit-${lab.id}-${h.name}`), lab.name(`t${h.name}`));
      nodes.push(n);
      return n;
    }) as [WeftNode, WeftNode];
    await Promise.all([client.start(), exit.start()]);
    const url = control.url;
    await weft(exit, [
      'up',
      '--control-url',
      url,
      '--insecure-http',
      '--authkey',
      key,
      '--hostname',
      'ex',
      '--advertise-exit-node',
    ]);
    await weft(client, ['up', '--control-url', url, '--insecure-http', '--authkey', key, '--hostname', 'cl']);
    await control.cli(['routes', 'approve', 'ex', 'exit']);
    const exitIp = await exit.ip4();
    await waitFor('the client to reach the exit node', () => cl.ping(exitIp, { deadlineS: 1 }), 30_000);
    await waitFor(
      'the exit node to be offered',
      async () => (await client.status()).peers.some((p) => p.name === 'ex' && p.exitNodeOption),
      15_000,
    );

    console.log(`== iperf3, ${SECONDS} s each, one run (wireguard-go on both ends)`);
    const underlay = await iperf(cl, ex, '198.18.40.3');
    console.log(`underlay (no tunnel)    ${underlay.mbps.toFixed(0).padStart(6)} Mbit/s   ${underlay.cmd}`);
    const direct = await iperf(cl, ex, exitIp);
    console.log(`direct peer (tunnel)    ${direct.mbps.toFixed(0).padStart(6)} Mbit/s   ${direct.cmd}`);
    await weft(client, ['set', '--exit-node', 'ex']);
    await waitFor(
      'the web host through the exit node',
      () => cl.ping('198.18.41.10', { deadlineS: 1 }),
      20_000,
    );
    const viaExit = await iperf(cl, web, '198.18.41.10');
    console.log(`through the exit node   ${viaExit.mbps.toFixed(0).padStart(6)} Mbit/s   ${viaExit.cmd}`);
    console.log(
      `exit node / direct peer: ${(viaExit.mbps / direct.mbps).toFixed(2)}   direct peer / underlay: ${(direct.mbps / underlay.mbps).toFixed(2)}`,
    );
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await control?.stop();
    await lab.cleanup();
    for (const n of nodes) removeScratch(n.dir);
    removeScratch(dir);
  }
}

main().catch((err) => {
  console.error(`bench exit-node: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
