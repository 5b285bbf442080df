import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PeerStatus } from '@weft/protocol';
import { type Lab, type Segment, waitFor } from './lab.js';
import { ControlServer, RelayServer, type WeftNode } from './weft.js';

// A tailnet for path tests: one control and two relay regions on the lab's "internet" segment
// (198.18.0.1, .2, .3), alice with a reusable pre-auth key; and how a test reads the path two of
// its nodes use towards each other.

export interface RelayedTailnet {
  control: ControlServer;
  relays: [RelayServer, RelayServer];
  /** alice's reusable pre-auth key. */
  key: string;
}

export async function startRelayedTailnet(lab: Lab, net: Segment, dir: string): Promise<RelayedTailnet> {
  const ctlHost = await lab.addHost('ctl', { segment: net, address: '198.18.0.1/24' });
  const r1Host = await lab.addHost('rly1', { segment: net, address: '198.18.0.2/24' });
  const r2Host = await lab.addHost('rly2', { segment: net, address: '198.18.0.3/24' });
  for (const d of ['r1', 'r2']) mkdirSync(join(dir, d));
  const relays: [RelayServer, RelayServer] = [
    new RelayServer(r1Host, join(dir, 'r1')),
    new RelayServer(r2Host, join(dir, 'r2')),
  ];
  const map = `${await relays[0].mapEntry(1, 'lab1')};${await relays[1].mapEntry(2, 'lab2')}`;
  const control = new ControlServer(ctlHost, dir, 8080, ['--relays', map]);
  // The relays serve this control's tailnet only (they follow its member list).
  await control.start();
  await Promise.all(relays.map((r) => r.start(control)));
  await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  const key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
  return { control, relays, key };
}

/** The tailnet's nodes by name, with their IPv4 tunnel addresses. */
export interface NamedNodes {
  nodes: Record<string, WeftNode>;
  ips: Record<string, string>;
}

export async function peerOf(t: NamedNodes, a: string, b: string): Promise<PeerStatus | undefined> {
  return (await (t.nodes[a] as WeftNode).status()).peers.find((p) => p.name === b);
}

const onProxy = (p: PeerStatus | undefined) => p?.endpoint?.startsWith('127.0.0.1:') === true;

/**
 * Both ends report `path` for each other (pinging meanwhile, so paths carry traffic). A relayed
 * peer's endpoint is the loopback proxy, except during a trial of a direct candidate (a couple of
 * seconds every so often), so that is waited out too.
 */
export async function bothPaths(
  t: NamedNodes,
  a: string,
  b: string,
  path: 'direct' | 'relay',
  timeoutMs: number,
) {
  return waitFor(
    `${a} ↔ ${b} ${path}`,
    async () => {
      await (t.nodes[a] as WeftNode).host.ping(t.ips[b] as string, { count: 1, deadlineS: 1 });
      const [pa, pb] = await Promise.all([peerOf(t, a, b), peerOf(t, b, a)]);
      const relayed = path === 'direct' || (onProxy(pa) && onProxy(pb));
      return pa?.path === path && pb?.path === path && relayed && ([pa, pb] as const);
    },
    timeoutMs,
  );
}
