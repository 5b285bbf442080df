import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, ControlServer, Lab, removeScratch, scratchDir, WeftNode } from '../lab/index.js';
import { startWeftWeb, type WeftWeb } from '../lab/weft-web.js';

// `npm run demo`: a local tailnet on the embedded defaults. Control and three nodes, each in its
// own network namespace on one "internet" segment, joined with a pre-auth key; the desktop UI for
// the laptop node served by `weft web` on the host's loopback (a unix socket is reachable from the
// root namespace). It prints the UI's URL first, then what to try, and keeps running until Ctrl-C,
// then cleans everything up.

const lab = await Lab.create();
const dir = scratchDir(`demo-${lab.id}`);
const nodes: WeftNode[] = [];
let control: ControlServer | null = null;
let web: WeftWeb | null = null;

async function shutdown(code: number): Promise<never> {
  await web?.stop();
  for (const n of nodes) await n.stop();
  await control?.stop();
  await lab.cleanup();
  if (code === 0) removeScratch(dir); // on failure the logs stay for reading
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  const internet = await lab.addSegment();
  const ctlHost = await lab.addHost('ctl', { segment: internet, address: '198.18.0.1/24' });
  control = new ControlServer(ctlHost, dir);
  await control.start();
  await control.cli(['users', 'create', 'demo', '--email', 'demo@example.com']);
  const key = await control.cli([
    'preauthkey',
    'create',
    '--user',
    'demo',
    '--reusable',
    '--expiration',
    '1h',
  ]);

  const names = ['laptop', 'server', 'phone'];
  for (const [i, name] of names.entries()) {
    const host = await lab.addHost(name, { segment: internet, address: `198.18.0.${11 + i}/24` });
    const node = new WeftNode(host, join(dir, name), lab.name(`t${i}`));
    mkdirSync(node.dir, { recursive: true });
    await node.start();
    const t0 = Date.now();
    await node.up(control.url, key, name);
    console.log(`${name}: up in ${Date.now() - t0} ms at ${await node.ip4()}`);
    nodes.push(node);
  }

  const [laptop, server] = nodes as [WeftNode, WeftNode];
  web = await startWeftWeb(laptop.socket, dir);
  const weft = (n: WeftNode) => `ip netns exec ${n.host.ns} node ${BIN.weft} --socket ${n.socket}`;
  console.log(`
The desktop app for the laptop node, in a browser on this machine: ${web.url}

Weft demo tailnet is running (lab ${lab.id}). Control: ${control.url} (database ${control.db}).
Try, in another terminal (as root):
  ${weft(laptop)} status
  ${weft(laptop)} status --json
  ip netns exec ${laptop.host.ns} ping -c 3 ${await server.ip4()}
  ip netns exec ${laptop.host.ns} ping -c 3 server                 # by name: the tailnet's DNS
  ${weft(laptop)} dns status
  ip netns exec ${laptop.host.ns} wg show ${laptop.iface}
  node ${BIN.control} nodes list --db ${control.db}
  node ${BIN.control} nodes delete phone --db ${control.db}     # gone from the others' maps at once
  ${weft(server)} down                                          # and 'up' again to reconnect
Logs: ${dir}/*/*.log
Press Ctrl-C to stop and clean up.`);
  await new Promise(() => {});
} catch (e) {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}\nlogs in ${dir}`);
  await shutdown(1);
}
