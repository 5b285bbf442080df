import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GatewayMode } from '@weft/core/port-mapping/test-gateway';
import { formatPrefix, maskAddr, parsePrefix } from '@weft/protocol';
import { type Host, type Lab, type Segment, sleep, waitFor } from './lab.js';
import { REPO } from './weft.js';

const PORT_MAPPING_DAEMON = join(REPO, 'e2e/dist/lab/port-mapping-daemon.js');

// NAT routers for network labs, one namespace each with its public leg (eth0) on an "internet"
// segment and a LAN (eth1) of its own, in the kinds TESTING.md describes:
//   eim        endpoint-independent mapping (nftables masquerade keeps the source port)
//   edm        endpoint-dependent ("symmetric"): masquerade fully-random, a new port per destination
//   udp-block  as eim, but forwarded UDP is dropped (only TCP gets out, e.g. to the relay)
// Every router lets in only replies (ct established/related) and drops unsolicited packets to
// itself from the internet, as home routers do; such a packet must not even create a conntrack
// entry, or the router could later give the LAN host's mapping another port.
// Double NAT is two routers in series: the inner one's public leg on the outer one's LAN.

export type NatKind = 'eim' | 'edm' | 'udp-block';

export interface RouterOptions {
  kind: NatKind;
  /** The segment of the public leg and the router's address there, e.g. 198.18.0.101/24. */
  wan: Segment;
  wanAddress: string;
  /** Default route of the router (needed when its public leg is another router's LAN). */
  wanGateway?: string;
  /** The router's LAN address and prefix, e.g. 198.18.11.1/24. */
  lanAddress: string;
  /**
   * An IPv6 uplink (fd00::/8 only): the router's address on the public leg and on its LAN, e.g.
   * fd00::103/64 and fd00:13::1/64. IPv6 is routed, not translated, through the same stateful
   * forward chain (replies only from outside), as home routers do.
   */
  ipv6?: { wanAddress: string; lanAddress: string };
}

export class Router {
  constructor(
    readonly host: Host,
    readonly kind: NatKind,
    readonly lan: Segment,
    /** The router's LAN address (hosts' gateway), without prefix. */
    readonly lanIp: string,
    private readonly lanPrefixLen: number,
    /** The public address, without prefix. */
    public wanIp: string,
    private readonly wanPrefixLen: number,
    readonly ipv6: RouterOptions['ipv6'] = undefined,
  ) {}

  /**
   * Adds a host on this router's LAN (address with prefix), routed through the router; with
   * `address6` (on a router with an IPv6 uplink) the host gets that IPv6 address and route too.
   */
  async addHost(name: string, address: string, address6?: string): Promise<Host> {
    const host = await this.host.lab.addHost(name, { segment: this.lan, address, gateway: this.lanIp });
    if (address6 && this.ipv6) {
      await host.must(['ip', '-6', 'addr', 'add', address6, 'dev', 'eth0']);
      await host.must(['ip', '-6', 'route', 'add', 'default', 'via', bare(this.ipv6.lanAddress)]);
    }
    return host;
  }

  /** Routes this router's IPv6 traffic for `other`'s LAN over the public segment. */
  async routeIpv6To(other: Router): Promise<void> {
    if (!this.ipv6 || !other.ipv6) throw new Error('both routers need an IPv6 uplink');
    const net = networkOf(other.ipv6.lanAddress);
    await this.host.must(['ip', '-6', 'route', 'add', net, 'via', bare(other.ipv6.wanAddress)]);
  }

  /**
   * Runs the lab's port-mapping daemon (port-mapping-daemon.ts) on the LAN address: NAT-PMP and
   * PCP with `mode` 'pcp', NAT-PMP only with 'nat-pmp', malformed answers with 'garbage'. Its
   * output (each mapping granted or deleted) is in `portMappingLog`.
   */
  async startPortMapping(mode: GatewayMode): Promise<void> {
    const argv = [
      process.execPath,
      PORT_MAPPING_DAEMON,
      '--listen',
      this.lanIp,
      '--wan',
      this.wanIp,
      '--mode',
      mode,
    ];
    const child = this.host.spawn(argv);
    child.stdout?.on('data', (d) => {
      this.portMappingLog += String(d);
    });
    child.stderr?.on('data', (d) => {
      this.portMappingLog += String(d);
    });
    await waitFor(`port mapping on ${this.host.name}`, async () => {
      if (child.exitCode !== null) throw new Error(`port-mapping daemon exited: ${this.portMappingLog}`);
      return this.portMappingLog.includes(`port mapping (${mode})`);
    });
  }

  portMappingLog = '';

  /**
   * Runs Debian's miniupnpd (nftables backend) on this router: UPnP IGD, and NAT-PMP and PCP
   * unless `natPmp` is false. Its config, pid and lease files go to `dir`. miniupnpd refuses to
   * map when its external address is reserved (every lab range is) unless a STUN server sees that
   * address unfiltered: `stun` is the relay's STUN port, and the router's own packets are exempt
   * from the EDM masquerade (which would give each STUN socket another port, which miniupnpd
   * reads as a "restrictive NAT" upstream). Its log is in `portMappingLog`.
   */
  async startMiniupnpd(opts: { dir: string; stun: { host: string; port: number }; natPmp: boolean }) {
    const lan = networkOf(this.lanPrefix);
    const conf = join(opts.dir, `miniupnpd-${this.host.name}.conf`);
    writeFileSync(
      conf,
      [
        'ext_ifname=eth0',
        'listening_ip=eth1',
        'http_port=0',
        `enable_natpmp=${opts.natPmp ? 'yes' : 'no'}`,
        'enable_upnp=yes',
        'ext_perform_stun=yes',
        `ext_stun_host=${opts.stun.host}`,
        `ext_stun_port=${opts.stun.port}`,
        'secure_mode=yes',
        'system_uptime=yes',
        `lease_file=${join(opts.dir, `miniupnpd-${this.host.name}.leases`)}`,
        'uuid=6a0f3c4e-2f1b-4c55-9d2e-7b3a1c0d9e11',
        `upnp_table_name=${MINIUPNPD_TABLE}`,
        `upnp_nat_table_name=${MINIUPNPD_TABLE}`,
        `allow 1024-65535 ${lan} 1024-65535`,
        'deny 0-65535 0.0.0.0/0 0-65535',
        '',
      ].join('\n'),
    );
    const r = await this.host.exec(['nft', '-f', '-'], { input: miniupnpdRuleset(this.wanIp) });
    if (r.code !== 0) throw new Error(`nft for miniupnpd on ${this.host.name}: ${r.stderr}`);
    const pid = join(opts.dir, `miniupnpd-${this.host.name}.pid`);
    const child = this.host.spawn([MINIUPNPD, '-d', '-f', conf, '-P', pid]);
    const log = (d: unknown) => {
      this.portMappingLog += String(d);
    };
    child.stdout?.on('data', log);
    child.stderr?.on('data', log);
    await waitFor(`miniupnpd on ${this.host.name}`, async () => {
      if (child.exitCode !== null) throw new Error(`miniupnpd exited: ${this.portMappingLog}`);
      if (/Port forwarding is impossible|does not support port forwarding/.test(this.portMappingLog))
        throw new Error(`miniupnpd will not map: ${this.portMappingLog}`);
      return /HTTP listening on port/.test(this.portMappingLog);
    });
  }

  /** Drops forwarded UDP to and from `ip` (a peer's public address): cuts a direct path. */
  async cutUdp(ip: string): Promise<void> {
    await this.nft(`insert rule inet weftnat forward ip daddr ${ip} meta l4proto udp drop`);
    await this.nft(`insert rule inet weftnat forward ip saddr ${ip} meta l4proto udp drop`);
  }

  /** Undoes cutUdp. */
  async restoreUdp(): Promise<void> {
    const listing = await this.host.must(['nft', '-a', 'list', 'chain', 'inet', 'weftnat', 'forward']);
    for (const m of listing.matchAll(/ip [sd]addr \S+ meta l4proto udp drop # handle (\d+)/g)) {
      await this.nft(`delete rule inet weftnat forward handle ${m[1]}`);
    }
  }

  /**
   * A new public address, as after a router restart with a new lease: the kernel forgets every
   * masqueraded mapping, so every LAN host's mapping changes.
   */
  async renumber(newWanIp: string): Promise<void> {
    const old = this.wanIp;
    // Old one first: a new address in the same subnet would be a secondary, deleted with the primary.
    await this.host.must(['ip', 'addr', 'del', `${old}/${this.wanPrefixLen}`, 'dev', 'eth0']);
    await this.host.must(['ip', 'addr', 'add', `${newWanIp}/${this.wanPrefixLen}`, 'dev', 'eth0']);
    this.wanIp = newWanIp;
    await sleep(50);
  }

  get lanPrefix(): string {
    return `${this.lanIp}/${this.lanPrefixLen}`;
  }

  private nft(rule: string): Promise<string> {
    return this.host.must(['nft', rule]);
  }
}

const MINIUPNPD = '/usr/sbin/miniupnpd';
const MINIUPNPD_TABLE = 'miniupnpd';

/**
 * The chains miniupnpd fills (as its nft_init.sh makes them, in a table of their own), the
 * exemption of the router's own packets from masquerade, and, in the router's stateful forward
 * chain, acceptance of what a mapping forwards.
 */
function miniupnpdRuleset(wanIp: string): string {
  return `table inet ${MINIUPNPD_TABLE} {
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 1; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
insert rule ip weftnatpost postrouting ip saddr ${wanIp} return
insert rule inet weftnat forward ct status dnat accept
`;
}

/** The nftables ruleset of a router of `kind` (eth0 public, eth1 LAN). */
export function routerRuleset(kind: NatKind): string {
  const masquerade = kind === 'edm' ? 'masquerade fully-random' : 'masquerade';
  const udp = kind === 'udp-block' ? '    iifname "eth1" oifname "eth0" meta l4proto udp drop\n' : '';
  return `table inet weftnat {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
${udp}    iifname "eth1" oifname "eth0" accept
    iifname "eth1" oifname "eth1" accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state new drop
  }
}
table ip weftnatpost {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" ${masquerade}
  }
}
`;
}

/** A NAT router namespace named `name` (at most 9 characters). */
export async function addRouter(lab: Lab, name: string, opts: RouterOptions): Promise<Router> {
  const host = await lab.addHost(name, {
    segment: opts.wan,
    address: opts.wanAddress,
    ...(opts.wanGateway ? { gateway: opts.wanGateway } : {}),
  });
  const lan = await lab.addSegment();
  await lab.attach(host.ns, lan, 'eth1', opts.lanAddress);
  await host.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  if (opts.ipv6) {
    await host.must(['ip', '-6', 'addr', 'add', opts.ipv6.wanAddress, 'dev', 'eth0']);
    await host.must(['ip', '-6', 'addr', 'add', opts.ipv6.lanAddress, 'dev', 'eth1']);
    await host.must(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
  }
  const r = await host.exec(['nft', '-f', '-'], { input: routerRuleset(opts.kind) });
  if (r.code !== 0) throw new Error(`nft on router ${name}: ${r.stderr}`);
  const [lanIp, lanLen] = opts.lanAddress.split('/') as [string, string];
  const [wanIp, wanLen] = opts.wanAddress.split('/') as [string, string];
  return new Router(host, opts.kind, lan, lanIp, Number(lanLen), wanIp, Number(wanLen), opts.ipv6);
}

/** The network of an address with prefix length: fd00:13::1/64 → fd00:13::/64. */
function networkOf(address: string): string {
  const p = parsePrefix(address) as NonNullable<ReturnType<typeof parsePrefix>>;
  return formatPrefix({ addr: maskAddr(p.addr, p.bits), bits: p.bits });
}

/** An address without its prefix length. */
function bare(address: string): string {
  return address.split('/')[0] as string;
}
