import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  addRouter,
  ControlServer,
  type Host,
  Lab,
  type NatKind,
  RelayServer,
  type Router,
  removeScratch,
  type Segment,
  scratchDir,
  sleep,
  TAILSCALE_GATEWAY,
  TailscaleNode,
  WeftNode,
} from '../lab/index.js';

// The NAT lab the benchmarks share (nat, connect-vs-tailscale): one control and one relay on an
// "internet" segment, and per matrix row two hosts, each directly on it or behind a NAT router.

export type Where = 'none' | NatKind;

export interface Row {
  a: Where;
  b: Where;
  direct: boolean;
  /** Both routers get an IPv6 uplink (routed, same stateful firewall) and their hosts IPv6. */
  ipv6?: boolean;
}

export const ROWS: Row[] = [
  { a: 'none', b: 'eim', direct: true },
  { a: 'eim', b: 'eim', direct: true },
  { a: 'none', b: 'edm', direct: true },
  { a: 'eim', b: 'edm', direct: false },
  { a: 'edm', b: 'edm', direct: false },
  { a: 'edm', b: 'edm', direct: true, ipv6: true },
  { a: 'udp-block', b: 'none', direct: false },
];

export class World {
  lab!: Lab;
  dir!: string;
  net!: Segment;
  control!: ControlServer;
  relay!: RelayServer;
  key!: string;
  nodes: WeftNode[] = [];
  tsNodes: TailscaleNode[] = [];
  private hosts = 0;

  async start(): Promise<void> {
    this.lab = await Lab.create();
    this.dir = scratchDir(`bench-${this.lab.id}`);
    this.net = await this.lab.addSegment();
    const ctl = await this.lab.addHost('ctl', { segment: this.net, address: '198.18.0.1/24' });
    const rh = await this.lab.addHost('rly', { segment: this.net, address: '198.18.0.2/24' });
    mkdirSync(join(this.dir, 'relay'));
    this.relay = new RelayServer(rh, join(this.dir, 'relay'));
    this.control = new ControlServer(ctl, this.dir, 8080, [
      '--relays',
      await this.relay.mapEntry(1, 'bench'),
    ]);
    await this.control.start();
    await this.relay.start(this.control);
    await this.control.cli(['users', 'create', 'bench']);
    this.key = await this.control.cli(['preauthkey', 'create', '--user', 'bench', '--reusable']);
  }

  /**
   * A host behind `where`, on its own LAN (with `ipv6`, a router with an IPv6 uplink, fd00::N,
   * and the host fd00:N::2); returns the host and its router (if any).
   */
  async host(where: Where, ipv6 = false): Promise<{ host: Host; router: Router | null; name: string }> {
    const i = ++this.hosts;
    const name = `h${i}`;
    if (where === 'none') {
      return {
        // A default route to nowhere, as Tailscale clients need one (see TAILSCALE_GATEWAY).
        host: await this.lab.addHost(name, {
          segment: this.net,
          address: `198.18.0.${10 + i}/24`,
          gateway: TAILSCALE_GATEWAY,
        }),
        router: null,
        name,
      };
    }
    const router = await addRouter(this.lab, `r${i}`, {
      kind: where,
      wan: this.net,
      wanAddress: `198.18.0.${100 + i}/24`,
      lanAddress: `198.18.${10 + i}.1/24`,
      ...(ipv6 ? { ipv6: { wanAddress: `fd00::${i}/64`, lanAddress: `fd00:${i}::1/64` } } : {}),
    });
    const host = await router.addHost(name, `198.18.${10 + i}.2/24`, ipv6 ? `fd00:${i}::2/64` : undefined);
    return { host, router, name };
  }

  node(host: Host, name: string): WeftNode {
    const n = new WeftNode(host, scratchDir(`bench-${this.lab.id}-${name}`), this.lab.name(`t${name}`));
    this.nodes.push(n);
    return n;
  }

  /** An official Tailscale client on `host` (its binaries must be present: tailscaleMissing()). */
  tsNode(host: Host, name: string): TailscaleNode {
    const n = new TailscaleNode(host, scratchDir(`bench-${this.lab.id}-${name}`), this.lab.name(`s${name}`));
    this.tsNodes.push(n);
    return n;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes, ...this.tsNodes].map((n) => n.stop()));
    await Promise.all([this.control?.stop(), this.relay?.stop()]);
    await this.lab?.cleanup();
    for (const n of [...this.nodes, ...this.tsNodes]) removeScratch(n.dir);
    if (this.dir) removeScratch(this.dir);
  }
}

export async function pathOf(n: WeftNode, peer: string): Promise<string | undefined> {
  return (await n.status()).peers.find((p) => p.name === peer)?.path;
}

/** pathOf from the LocalAPI socket: no CLI start in the measurement. */
async function pathNow(n: WeftNode, peer: string): Promise<string | undefined> {
  return (await n.statusFromSocket()).peers.find((p) => p.name === peer)?.path;
}

export async function until<T>(ms: number, check: () => Promise<T | false | undefined>): Promise<T | null> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await check().catch(() => undefined);
    if (v) return v;
    await sleep(50);
  }
  return null;
}

/** One pair's connect on a row, in ms after both `up`s started; null: not within 30 s. */
export interface ConnectTimes {
  firstPing: number | null;
  direct: number | null;
  /** When both `up`s had returned (both nodes running with a netmap). */
  bothUp: number;
}

/** What timeConnect needs of a pair of nodes of one kind. */
export interface Pair {
  /** Brings both nodes up at once. */
  up(): Promise<void>;
  /** One ping from the first node to the second's tailnet address; true on a reply. */
  ping(): Promise<boolean>;
  /** Whether both ends report a direct path to each other. */
  direct(): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * Times a pair from `up` to the first ping reply and, on rows expected direct, to both ends
 * reporting a direct path (pinging meanwhile, as traffic is what makes a path).
 */
export async function timeConnect(pair: Pair, expectDirect: boolean): Promise<ConnectTimes> {
  const t0 = Date.now();
  await pair.up();
  const bothUp = Date.now() - t0;
  const firstPing = await until(30_000, async () => (await pair.ping()) && Date.now() - t0);
  if (!expectDirect) return { firstPing, direct: null, bothUp };
  // Traffic goes on meanwhile (one ping at a time), but the status is read without waiting for it.
  let pinging = true;
  const pinger = (async () => {
    while (pinging) await pair.ping().catch(() => false);
  })();
  const direct = await until(30_000, async () => (await pair.direct()) && Date.now() - t0);
  pinging = false;
  await pinger;
  return { firstPing, direct, bothUp };
}

/** A pair of Weft nodes on the hosts of `row`. */
export async function weftPair(w: World, row: Row): Promise<Pair> {
  const [ha, hb] = [await w.host(row.a, row.ipv6), await w.host(row.b, row.ipv6)];
  if (row.ipv6 && ha.router && hb.router) {
    await ha.router.routeIpv6To(hb.router);
    await hb.router.routeIpv6To(ha.router);
  }
  const [a, b] = [w.node(ha.host, ha.name), w.node(hb.host, hb.name)];
  await Promise.all([a.start(), b.start()]);
  let bIp = '';
  return {
    up: async () => {
      await Promise.all([a.up(w.control.url, w.key, ha.name), b.up(w.control.url, w.key, hb.name)]);
      bIp = await b.ip4();
    },
    ping: () => a.host.ping(bIp, { count: 1, deadlineS: 1 }),
    direct: async () => {
      const [pa, pb] = await Promise.all([pathNow(a, hb.name), pathNow(b, ha.name)]);
      return pa === 'direct' && pb === 'direct';
    },
    stop: async () => {
      await Promise.all([a.stop(), b.stop()]);
    },
  };
}

/** A connect time as the tables print it. */
export function fmtTime(ms: number | null): string {
  return ms === null ? 'none in 30 s' : `${ms} ms`;
}
