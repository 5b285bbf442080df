import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DesiredState, formatAddr, type Prefix, parsePrefix } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { filterBomb } from '../bench/filter-bomb.js';
import type { Logger } from '../log.js';
import { StateFile } from '../state-file.js';
import { publicKeyOf } from '../validate.js';
import { LinuxBackend } from './backend.js';
import { renderTable } from './nft.js';
import { type ChildExit, type ChildHandle, CommandError, formatCommand, type Runner } from './runner.js';
import type { Sysctl } from './sysctl.js';
import { UdpBuffers } from './udp-buffers.js';

// Counted, to see when a table is rendered again.
vi.mock('./nft.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('./nft.js')>();
  return { ...actual, renderTable: vi.fn(actual.renderTable) };
});

// The Linux backend against a small simulated OS behind the Runner: enough of `ip`, `wg` and
// wireguard-go to check which commands each request runs. The real commands run in e2e/tests.

const key = (n: number) => Buffer.alloc(32, n).toString('base64');

interface FakeLink {
  kind: 'tun' | 'wireguard' | 'veth';
  mtu: number;
  up: boolean;
  addresses: string[];
}
interface FakePeer {
  allowed: string[];
  endpoint: string | null;
  keepalive: number;
}
interface FakeWg {
  privateKey: string | null;
  listenPort: number;
  fwmark?: string;
  peers: Map<string, FakePeer>;
}

class FakeChild implements ChildHandle {
  readonly pid = 4242;
  readonly signals: string[] = [];
  private resolveExit!: (e: ChildExit) => void;
  readonly exited = new Promise<ChildExit>((r) => {
    this.resolveExit = r;
  });
  constructor(readonly onExit: () => void) {}
  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
    this.exit({ code: 0, signal: null });
  }
  exit(e: ChildExit): void {
    this.onExit();
    this.resolveExit(e);
  }
}

class FakeOs implements Runner {
  readonly log: string[] = [];
  readonly links = new Map<string, FakeLink>([
    ['eth0', { kind: 'veth', mtu: 1500, up: true, addresses: [] }],
  ]);
  readonly wg = new Map<string, FakeWg>();
  /** Non-kernel routes: `dev dst`. */
  readonly routes = new Set<string>(['eth0 198.19.0.0/16']);
  readonly children: FakeChild[] = [];
  kernelWireGuard = false;
  /** Whether wireguard-go brings its interface up at all. */
  wireguardGoWorks = true;
  lastConfig = '';
  /** `ip rule` entries as `family priority args…`, in `ip -j rule show` order. */
  readonly rules: string[] = [];
  /** Routes in table 22342 as `family dev`. */
  readonly tunnelTable = new Set<string>();
  /** nftables tables by name, as `nft -f` last loaded them. */
  readonly tables = new Map<string, string>();
  /** What `nft -j list set` shows of a table's flow set, by set name. */
  readonly flowListings = new Map<string, string>();
  nftInstalled = true;

  /** Commands that changed something (everything but reads). */
  get changes(): string[] {
    return this.log.filter((c) => !/ (show|list)( |$)/.test(c));
  }

  async run(argv: readonly string[]): Promise<string> {
    const cmd = formatCommand(argv);
    this.log.push(cmd);
    const fail = (stderr: string) => {
      throw new CommandError(argv, 1, stderr);
    };
    const [tool, ...a] = argv;
    const dev = a[a.length - 1] as string;
    if (tool === 'wg') return this.wgCommand(a, fail);
    if (tool === 'nft') return this.nftCommand(a, fail);
    if (cmd.startsWith('ip -j -d address show dev ')) {
      const link = this.links.get(dev);
      if (!link) return fail(`Device "${dev}" does not exist.`);
      return JSON.stringify([this.ipLink(dev, link)]);
    }
    if (cmd.startsWith('ip link add ')) {
      if (!this.kernelWireGuard) return fail('Error: Unknown device type.');
      this.addDevice(a[2] as string, 'wireguard');
      return '';
    }
    if (cmd.startsWith('ip link del ')) {
      this.links.delete(dev);
      this.wg.delete(dev);
      for (const r of this.routes) if (r.startsWith(`${dev} `)) this.routes.delete(r);
      return '';
    }
    if (cmd.startsWith('ip link set ')) {
      const link = this.links.get(a[2] as string) as FakeLink;
      link.mtu = Number(a[4]);
      link.up = true;
      return '';
    }
    if (cmd.startsWith('ip address ')) {
      const link = this.links.get(a[4] as string) as FakeLink;
      if (a[1] === 'add') link.addresses.push(a[2] as string);
      else link.addresses = link.addresses.filter((x) => x !== a[2]);
      return '';
    }
    const rule = cmd.match(/^ip (-j )?(-6 )?rule (show|add|del) ?(.*)$/);
    if (rule) return this.ruleCommand(rule[2] ? 6 : 4, rule[3] as string, rule[4] as string, fail);
    const table = cmd.match(/^ip (-j )?(-6 )?route (show|add|del) (default dev (\S+) )?table 22342$/);
    if (table) {
      const family = table[2] ? 6 : 4;
      if (table[3] === 'show') {
        const routes = [...this.tunnelTable].filter((r) => r.startsWith(`${family} `));
        if (routes.length === 0) return fail('Error: ipv4: FIB table does not exist.\nDump terminated');
        return JSON.stringify(routes.map((r) => ({ dst: 'default', dev: r.split(' ')[1] })));
      }
      if (!this.links.has(table[5] as string)) return fail('Cannot find device');
      if (table[3] === 'add') this.tunnelTable.add(`${family} ${table[5]}`);
      else this.tunnelTable.delete(`${family} ${table[5]}`);
      return '';
    }
    const route = cmd.match(/^ip (-j )?(-6 )?route (show|add|del) ?(\S+)? dev (\S+)$/);
    if (route) {
      const [, , six, verb, dst, name] = route;
      if (verb === 'show') return JSON.stringify(this.ipRoutes(name as string, six !== undefined));
      const entry = `${name} ${dst}`;
      if (verb === 'add') {
        if ([...this.routes].some((r) => r.endsWith(` ${dst}`))) fail('RTNETLINK answers: File exists');
        this.routes.add(entry);
      } else {
        this.routes.delete(entry);
      }
      return '';
    }
    throw new Error(`fake OS does not know ${cmd}`);
  }

  start(argv: readonly string[], env: Record<string, string>): ChildHandle {
    this.log.push(`start ${formatCommand(argv)} ${JSON.stringify(env)}`);
    const name = argv[argv.length - 1] as string;
    const child = new FakeChild(() => {
      this.links.delete(name);
      this.wg.delete(name);
    });
    this.children.push(child);
    if (this.wireguardGoWorks) setTimeout(() => this.addDevice(name, 'tun'), 20);
    return child;
  }

  private addDevice(name: string, kind: 'tun' | 'wireguard'): void {
    this.links.set(name, { kind, mtu: 1420, up: false, addresses: [] });
    this.wg.set(name, { privateKey: null, listenPort: 40000, peers: new Map() });
  }

  private ruleCommand(family: 4 | 6, verb: string, args: string, fail: (e: string) => never): string {
    if (verb === 'show') {
      return JSON.stringify(
        this.rules
          .filter((r) => r.startsWith(`${family} `))
          .map((r) => {
            const [, priority, ...a] = r.split(' ');
            const out: Record<string, unknown> = { priority: Number(priority), src: 'all' };
            if (a[0] === 'to') {
              const [dst, len] = (a[1] as string).split('/');
              Object.assign(out, {
                dst,
                ...(Number(len) === (family === 4 ? 32 : 128) ? {} : { dstlen: Number(len) }),
              });
            }
            if (a[0] === 'not') Object.assign(out, { not: null, fwmark: a[2] });
            if (a.includes('suppress_prefixlength')) out.suppress_prefixlen = 0;
            out.table = a[a.indexOf('table') + 1];
            return out;
          }),
      );
    }
    const entry = `${family} ${args.replace(/^priority /, '')}`;
    if (verb === 'add') this.rules.push(entry);
    else {
      const i = this.rules.indexOf(entry);
      if (i < 0) fail('RTNETLINK answers: No such file or directory');
      this.rules.splice(i, 1);
    }
    return '';
  }

  private nftCommand(a: readonly string[], fail: (e: string) => never): string {
    if (!this.nftInstalled) return fail('spawn nft ENOENT');
    const verb = a.join(' ');
    if (verb.startsWith('-t list sets table inet ')) {
      return this.tables.has(a[5] as string) ? '' : fail('Error: No such file or directory');
    }
    if (verb.startsWith('-j list set inet ')) {
      const [table, set] = [a[4] as string, a[5] as string];
      const block = this.tables.get(table)?.match(new RegExp(`\\tset ${set} \\{\\n([^}]*)\\t\\}`));
      if (!block) return fail('Error: No such file or directory');
      const comment = block[1]?.match(/comment "(.*)"/)?.[1];
      const listed = { family: 'inet', table, name: set, ...(comment === undefined ? {} : { comment }) };
      return this.flowListings.get(set) ?? JSON.stringify({ nftables: [{ set: listed }] });
    }
    if (verb.startsWith('delete table inet ')) {
      if (!this.tables.delete(a[3] as string)) fail('Error: No such file or directory');
      return '';
    }
    if (a[0] === '-f') {
      const file = readFileSync(a[1] as string, 'utf8');
      const [add, del, open] = file.split('\n');
      const name = (add as string).split(' ')[3] as string;
      expect([add, del, open]).toEqual([
        `add table inet ${name}`,
        `delete table inet ${name}`,
        `table inet ${name} {`,
      ]);
      this.tables.set(name, file.split('\n').slice(2).join('\n'));
      return '';
    }
    throw new Error(`fake nft does not know ${verb}`);
  }

  private wgCommand(a: readonly string[], fail: (e: string) => never): string {
    const [verb, name] = a as [string, string];
    const dev = this.wg.get(name);
    if (!dev) return fail('Unable to access interface: Protocol not supported');
    if (verb === 'show') {
      const pub = dev.privateKey === null ? '(none)' : publicKeyOf(dev.privateKey);
      const fwmark = dev.fwmark === undefined || dev.fwmark === 'off' ? 'off' : dev.fwmark;
      const lines = [[dev.privateKey ?? '(none)', pub, dev.listenPort, fwmark].join('\t')];
      for (const [k, p] of dev.peers) {
        const allowed = p.allowed.length ? p.allowed.join(',') : '(none)';
        const keepalive = p.keepalive || 'off';
        lines.push([k, '(none)', p.endpoint ?? '(none)', allowed, 0, 0, 0, keepalive].join('\t'));
      }
      return `${lines.join('\n')}\n`;
    }
    if (verb === 'syncconf') {
      this.lastConfig = readFileSync(a[2] as string, 'utf8');
      this.syncconf(dev, this.lastConfig);
      return '';
    }
    if (verb === 'set') {
      (dev.peers.get(a[3] as string) as FakePeer).allowed = [];
      return '';
    }
    throw new Error(`fake wg does not know ${verb}`);
  }

  /** What `wg syncconf` does: peers not in the file go; listed fields are set, others are kept. */
  private syncconf(dev: FakeWg, config: string): void {
    const sections = config.split('\n\n').map((s) =>
      Object.fromEntries(
        s
          .split('\n')
          .slice(1)
          .map((l) => l.split(' = ')),
      ),
    );
    const [iface, ...peers] = sections as Record<string, string>[];
    dev.privateKey = iface?.PrivateKey ?? null;
    if (iface?.ListenPort) dev.listenPort = Number(iface.ListenPort);
    if (iface?.FwMark) dev.fwmark = iface.FwMark;
    const keep = new Map<string, FakePeer>();
    for (const p of peers) {
      const peer = dev.peers.get(p.PublicKey as string) ?? { allowed: [], endpoint: null, keepalive: 0 };
      if (p.AllowedIPs) peer.allowed = p.AllowedIPs.split(', ');
      if (p.Endpoint) peer.endpoint = p.Endpoint;
      peer.keepalive = p.PersistentKeepalive === 'off' ? 0 : Number(p.PersistentKeepalive);
      keep.set(p.PublicKey as string, peer);
    }
    dev.peers = keep;
  }

  private ipLink(name: string, link: FakeLink) {
    return {
      ifname: name,
      flags: link.up ? ['POINTOPOINT', 'UP'] : ['POINTOPOINT'],
      mtu: link.mtu,
      linkinfo: { info_kind: link.kind },
      addr_info: [
        ...link.addresses.map((a) => ({
          local: a.split('/')[0],
          prefixlen: Number(a.split('/')[1]),
          scope: 'global',
        })),
        { local: 'fe80::1', prefixlen: 64, scope: 'link' },
      ],
    };
  }

  /** Our routes plus what the kernel adds: a prefix route per address and fe80::/64. */
  private ipRoutes(name: string, six: boolean) {
    const link = this.links.get(name);
    const kernel = (link?.addresses ?? [])
      .map((a) => parsePrefix(a) as Prefix)
      .filter((p) => (p.addr.family === 6) === six && p.bits < (six ? 128 : 32))
      .map((p) => ({
        dst: `${formatAddr({ ...p.addr, value: (p.addr.value >> BigInt((six ? 128 : 32) - p.bits)) << BigInt((six ? 128 : 32) - p.bits) })}/${p.bits}`,
        protocol: 'kernel',
      }));
    const ours = [...this.routes]
      .filter((r) => r.startsWith(`${name} `) && r.includes(':') === six)
      .map((r) => ({ dst: (r.split(' ')[1] as string).replace(/^(0\.0\.0\.0|::)\/0$/, 'default') }));
    return [...kernel, ...ours, ...(six ? [{ dst: 'fe80::/64', protocol: 'kernel' }] : [])];
  }
}

class FakeSysctl implements Sysctl {
  values = new Map([
    ['net.core.rmem_max', '212992'],
    ['net.core.wmem_max', '212992'],
    ['net.ipv4.ip_forward', '0'],
    ['net.ipv6.conf.all.forwarding', '0'],
    ['net.ipv4.conf.all.src_valid_mark', '0'],
  ]);
  readOnly = false;
  async read(k: string) {
    return this.values.get(k) as string;
  }
  async write(k: string, v: string) {
    if (this.readOnly)
      throw Object.assign(new Error(`EACCES: permission denied, open '/proc/sys/${k}'`), { code: 'EACCES' });
    this.values.set(k, v);
  }
}

const logged: string[] = [];
const log: Logger = {
  info: (m) => logged.push(m),
  warn: (m) => logged.push(`warn: ${m}`),
  error: (m) => logged.push(`error: ${m}`),
};

function desired(): DesiredState {
  return {
    interface: {
      name: 'wg0',
      privateKey: key(1),
      listenPort: 51820,
      addresses: ['100.64.0.1/10', 'fd00::1/64'],
      mtu: 1280,
    },
    peers: [
      {
        publicKey: key(2),
        allowedIPs: ['100.64.0.2/32'],
        endpoint: '198.18.0.2:51820',
        persistentKeepalive: 25,
      },
      { publicKey: key(3), allowedIPs: ['100.64.0.3/32', 'fd00:3::/64'] },
    ],
    routes: ['100.64.0.0/10', '198.51.100.0/24', 'fd00:3::/64'],
  };
}

let os: FakeOs;
let sysctl: FakeSysctl;
let backend: LinuxBackend;

beforeEach(() => {
  os = new FakeOs();
  sysctl = new FakeSysctl();
  logged.length = 0;
  backend = new LinuxBackend({
    runner: os,
    buffers: new UdpBuffers(sysctl, log),
    sysctl,
    log,
    readyTimeoutMs: 500,
    stopGraceMs: 100,
  });
});

describe('apply', () => {
  it('creates a wireguard-go interface when the kernel has no WireGuard, then configures it', async () => {
    const status = await backend.apply(desired());
    expect(os.changes).toEqual([
      'ip link add wg0 type wireguard',
      'start wireguard-go -f wg0 {"WG_PROCESS_FOREGROUND":"1"}',
      expect.stringMatching(/^wg syncconf wg0 \/.*\/weft-wg-\w+\/wg\.conf$/),
      'ip address add 100.64.0.1/10 dev wg0',
      'ip address add fd00::1/64 dev wg0 nodad',
      'ip link set wg0 mtu 1280 up',
      // 100.64.0.0/10 is already there: the kernel's route for the address.
      'ip route add 198.51.100.0/24 dev wg0',
      'ip -6 route add fd00:3::/64 dev wg0',
    ]);
    expect(os.lastConfig).toContain(`PrivateKey = ${key(1)}`);
    expect(status).toMatchObject({
      name: 'wg0',
      exists: true,
      backend: 'wireguard-go',
      publicKey: publicKeyOf(key(1)),
      listenPort: 51820,
      addresses: ['100.64.0.1/10', 'fd00::1/64'],
    });
    expect(status.peers.map((p) => p.publicKey)).toEqual([key(2), key(3)]);
    expect(sysctl.values.get('net.core.rmem_max')).toBe('7340032');
  });

  it('uses kernel WireGuard when there is one, and leaves socket buffers alone', async () => {
    os.kernelWireGuard = true;
    const status = await backend.apply(desired());
    expect(status.backend).toBe('kernel');
    expect(os.log.filter((c) => c.startsWith('start'))).toEqual([]);
    expect(sysctl.values.get('net.core.rmem_max')).toBe('212992');
  });

  it('changes nothing when the same state is applied again', async () => {
    await backend.apply(desired());
    os.log.length = 0;
    await backend.apply(desired());
    expect(os.changes).toEqual([]);
  });

  it('removes what a smaller state no longer has', async () => {
    await backend.apply(desired());
    os.log.length = 0;
    const smaller = desired();
    smaller.interface.addresses = ['100.64.0.1/10'];
    smaller.peers = smaller.peers.slice(0, 1);
    smaller.routes = ['198.51.100.0/24'];
    await backend.apply(smaller);
    expect(os.changes).toEqual([
      expect.stringMatching(/^wg syncconf wg0 /),
      'ip address del fd00::1/64 dev wg0',
      'ip -6 route del fd00:3::/64 dev wg0',
    ]);
    expect(os.wg.get('wg0')?.peers.size).toBe(1);
  });

  it('empties the allowed IPs of a peer asked to have none', async () => {
    await backend.apply(desired());
    os.log.length = 0;
    const s = desired();
    (s.peers[1] as { allowedIPs: string[] }).allowedIPs = [];
    await backend.apply(s);
    expect(os.changes).toContain(`wg set wg0 peer ${key(3)} allowed-ips ""`);
    expect(os.wg.get('wg0')?.peers.get(key(3))?.allowed).toEqual([]);
  });

  it('does not reset an endpoint WireGuard roamed to while the request is unchanged', async () => {
    await backend.apply(desired());
    (os.wg.get('wg0')?.peers.get(key(2)) as FakePeer).endpoint = '203.0.113.7:3333';
    os.log.length = 0;
    await backend.apply(desired());
    expect(os.changes).toEqual([]);
    const moved = desired();
    (moved.peers[0] as { endpoint?: string }).endpoint = '198.18.0.9:51820';
    moved.peers.push({ publicKey: key(4), allowedIPs: [] });
    await backend.apply(moved);
    expect(os.wg.get('wg0')?.peers.get(key(2))?.endpoint).toBe('198.18.0.9:51820');
  });

  it('refuses a route another interface has, saying why', async () => {
    const s = desired();
    s.routes = ['198.19.0.0/16'];
    await expect(backend.apply(s)).rejects.toThrow(
      /route 198\.19\.0\.0\/16 already exists through another interface; refusing to take it over/,
    );
    expect(os.routes.has('eth0 198.19.0.0/16')).toBe(true);
  });

  it('refuses to configure an interface that is not WireGuard', async () => {
    const s = desired();
    s.interface.name = 'eth0';
    await expect(backend.apply(s)).rejects.toMatchObject({
      code: 'invalid-request',
      message: 'eth0 exists and is not a WireGuard interface; refusing to touch it',
    });
    expect(os.changes).toEqual([]);
  });

  it('gives up on a wireguard-go that never brings its interface up, and stops it', async () => {
    os.wireguardGoWorks = false;
    await expect(backend.apply(desired())).rejects.toThrow(/wireguard-go did not bring up wg0 within 500 ms/);
    expect(os.children[0]?.signals).toEqual(['SIGTERM']);
    expect(sysctl.values.get('net.core.rmem_max')).toBe('212992');
  });

  it('recreates the interface after wireguard-go dies', async () => {
    await backend.apply(desired());
    os.children[0]?.exit({ code: null, signal: 'SIGKILL' });
    await new Promise((r) => setTimeout(r, 10));
    expect(logged).toContain(
      'warn: wireguard-go for wg0 was killed by SIGKILL; the next apply recreates wg0',
    );
    expect((await backend.status('wg0')).exists).toBe(false);
    const status = await backend.apply(desired());
    expect(status.exists).toBe(true);
    expect(os.children).toHaveLength(2);
  });
});

describe('status', () => {
  it('reports exists: false for a missing interface', async () => {
    expect(await backend.status('wg9')).toEqual({
      name: 'wg9',
      exists: false,
      backend: null,
      publicKey: null,
      listenPort: null,
      addresses: [],
      peers: [],
    });
  });
});

describe('down and shutdown', () => {
  it('deletes the link, stops wireguard-go and restores the socket buffers; again is fine', async () => {
    await backend.apply(desired());
    os.log.length = 0;
    expect((await backend.down('wg0')).exists).toBe(false);
    expect(os.changes).toEqual(['ip link del wg0']);
    expect(os.links.has('wg0')).toBe(false);
    expect([...os.routes]).toEqual(['eth0 198.19.0.0/16']);
    expect(sysctl.values.get('net.core.rmem_max')).toBe('212992');
    expect(sysctl.values.get('net.core.wmem_max')).toBe('212992');
    os.log.length = 0;
    expect((await backend.down('wg0')).exists).toBe(false);
    expect(os.changes).toEqual([]);
  });

  it('keeps raised buffers until the last wireguard-go interface goes', async () => {
    await backend.apply(desired());
    const second = desired();
    second.interface.name = 'wg1';
    second.interface.listenPort = 51821;
    second.interface.addresses = ['100.80.0.1/32'];
    second.routes = [];
    await backend.apply(second);
    await backend.down('wg0');
    expect(sysctl.values.get('net.core.rmem_max')).toBe('7340032');
    await backend.down('wg1');
    expect(sysctl.values.get('net.core.rmem_max')).toBe('212992');
  });

  it('refuses to take down an interface that is not WireGuard', async () => {
    await expect(backend.down('eth0')).rejects.toMatchObject({ code: 'invalid-request' });
    expect(os.links.has('eth0')).toBe(true);
  });

  it('takes down only the interfaces this process created', async () => {
    await backend.apply(desired());
    // Made by someone else before us: adopted by apply, but not ours to remove at exit.
    os.kernelWireGuard = true;
    os.links.set('wgx', { kind: 'wireguard', mtu: 1420, up: true, addresses: [] });
    os.wg.set('wgx', { privateKey: null, listenPort: 1, peers: new Map() });
    const adopted = desired();
    adopted.interface.name = 'wgx';
    adopted.interface.addresses = [];
    adopted.routes = [];
    await backend.apply(adopted);
    os.log.length = 0;
    await backend.shutdown();
    expect(os.changes).toEqual(['ip link del wg0']);
    expect(os.links.has('wgx')).toBe(true);
  });
});

describe('packet filter', () => {
  const filtered = (): DesiredState => ({
    ...desired(),
    filter: [
      {
        src: ['100.64.0.2/32'],
        dst: [{ prefix: '100.64.0.1/32', ports: { first: 443, last: 443 } }],
        protos: [6],
      },
    ],
  });

  it('installs the table before the interface exists, in one nft -f transaction', async () => {
    await backend.apply(filtered());
    expect(os.changes[0]).toMatch(/^nft -f \/.*\/weft-nft-\w+\/rules\.nft$/);
    expect(os.changes[1]).toBe('ip link add wg0 type wireguard');
    expect(os.tables.get('weft-wg0')).toContain('100.64.0.1 . 6 . 443');
  });

  it('runs nothing when the same filter is applied again, and replaces it when it changes', async () => {
    await backend.apply(filtered());
    os.log.length = 0;
    await backend.apply(filtered());
    expect(os.changes).toEqual([]);
    const wider = filtered();
    (wider.filter?.[0] as { protos: number[] }).protos = [6, 17];
    await backend.apply(wider);
    expect(os.changes).toEqual([expect.stringMatching(/^nft -f /)]);
    expect(os.tables.get('weft-wg0')).toContain('100.64.0.1 . 17 . 443');
  });

  it('renders an unchanged state once, and still puts back a table someone deleted', async () => {
    const renders = vi.mocked(renderTable);
    renders.mockClear();
    await backend.apply(filtered());
    const installed = os.tables.get('weft-wg0');
    await backend.apply(filtered());
    expect(renders).toHaveBeenCalledTimes(1);
    os.tables.delete('weft-wg0');
    os.log.length = 0;
    await backend.apply(filtered());
    expect(os.changes).toEqual([expect.stringMatching(/^nft -f /)]);
    expect(os.tables.get('weft-wg0')).toBe(installed);
    expect(renders).toHaveBeenCalledTimes(1);
    const wider = filtered();
    (wider.filter?.[0] as { protos: number[] }).protos = [6, 17];
    await backend.apply(wider);
    expect(renders).toHaveBeenCalledTimes(2);
    expect(os.tables.get('weft-wg0')).toContain('100.64.0.1 . 17 . 443');
  });

  it('carries the UDP flows over to a replacing table, with the time they had left', async () => {
    await backend.apply(filtered());
    // A fresh table has no flows to carry.
    expect(os.log.some((c) => c.startsWith('nft -j list set inet weft-wg0 udp'))).toBe(false);
    const elem = (addr: string, dport: number, local: string, sport: number, expires: number) => ({
      elem: { val: { concat: [addr, dport, local, sport] }, expires },
    });
    const listing = (set: string, ...elems: unknown[]) =>
      JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6' } }, { set: { name: set, elem: elems } }] });
    os.flowListings.set(
      'udp4',
      listing(
        'udp4',
        elem('100.64.0.2', 53, '100.64.0.1', 40000, 90),
        elem('100.64.0.3', 7, '100.64.0.1', 9, 0),
      ),
    );
    os.flowListings.set(
      'udp6',
      listing('udp6', elem('fd7a:115c:a1e0::2', 443, 'fd7a:115c:a1e0::1', 50000, 119)),
    );
    const wider = filtered();
    (wider.filter?.[0] as { protos: number[] }).protos = [6, 17];
    await backend.apply(wider);
    const table = os.tables.get('weft-wg0') ?? '';
    expect(table).toContain(
      'add element inet weft-wg0 udp4 { 100.64.0.2 . 53 . 100.64.0.1 . 40000 expires 90s }\n',
    );
    expect(table).toContain(
      'add element inet weft-wg0 udp6 { fd7a:115c:a1e0::2 . 443 . fd7a:115c:a1e0::1 . 50000 expires 119s }\n',
    );
    // A flow about to expire is not carried.
    expect(table).not.toContain('100.64.0.3');
  });

  const flowListing = (set: string, count: number) =>
    JSON.stringify({
      nftables: [
        {
          set: {
            name: set,
            elem: Array.from({ length: count }, (_, i) => ({
              elem: { val: { concat: ['100.64.0.2', 1024 + i, '100.64.0.1', 40000] }, expires: 90 },
            })),
          },
        },
      ],
    });

  it('reads an unchanged table back without listing it whole or its flows', async () => {
    await backend.apply(filtered());
    os.flowListings.set('udp4', flowListing('udp4', 1000));
    os.log.length = 0;
    await backend.apply(filtered());
    expect(os.changes).toEqual([]);
    // nft fetches every flow for either listing; the hash set alone holds none.
    const nft = os.log.filter((c) => c.startsWith('nft '));
    expect(nft).toEqual(['nft -j list set inet weft-wg0 hash']);
  });

  it("replaces an older helper's table, without the hash set, carrying its flows over", async () => {
    // As helpers before the hash set rendered it: the hash in the table's comment.
    const table = renderTable(filtered()) as NonNullable<ReturnType<typeof renderTable>>;
    const older = table.file
      .split('\n')
      .slice(2)
      .join('\n')
      .replace(/\tset hash \{\n[^}]*\t\}/, `\tcomment "weft sha256:${table.hash}"`);
    os.tables.set('weft-wg0', older);
    os.flowListings.set('udp4', flowListing('udp4', 1));
    await backend.apply(filtered());
    expect(os.tables.get('weft-wg0')).toContain('\tset hash {');
    expect(os.tables.get('weft-wg0')).toContain(
      'add element inet weft-wg0 udp4 { 100.64.0.2 . 1024 . 100.64.0.1 . 40000 expires 90s }',
    );
    os.tables.set('weft-wg0', older);
    os.log.length = 0;
    await backend.apply(desired());
    expect(os.changes).toEqual(['nft delete table inet weft-wg0']);
  });

  it('still replaces the table when a flow listing cannot be read, and says so', async () => {
    await backend.apply(filtered());
    os.flowListings.set('udp4', JSON.stringify({ nftables: [{ set: { elem: [{ elem: { val: 'x' } }] } }] }));
    const wider = filtered();
    (wider.filter?.[0] as { protos: number[] }).protos = [6, 17];
    await backend.apply(wider);
    expect(os.tables.get('weft-wg0')).toContain('100.64.0.1 . 17 . 443');
    expect(os.tables.get('weft-wg0')).not.toContain('add element');
    expect(logged.join('\n')).toMatch(/warn: could not carry wg0's udp4 flows over/);
  });

  it('follows whether the host forwards: replies to what it forwards into the tunnel are let back', async () => {
    await backend.apply(filtered());
    expect(os.tables.get('weft-wg0')).not.toContain('ct state');
    sysctl.values.set('net.ipv6.conf.all.forwarding', '1');
    await backend.apply(filtered());
    expect(os.tables.get('weft-wg0')).toContain(
      '\tchain tunnel_fwd {\n\t\tct state established,related accept',
    );
  });

  it('removes the table when the state stops asking for a filter, and on down', async () => {
    await backend.apply(filtered());
    os.log.length = 0;
    await backend.apply(desired());
    expect(os.changes).toEqual(['nft delete table inet weft-wg0']);
    await backend.apply(filtered());
    os.log.length = 0;
    await backend.down('wg0');
    expect(os.changes).toEqual(['nft delete table inet weft-wg0', 'ip link del wg0']);
    expect(os.tables.size).toBe(0);
  });

  it('removes the table at shutdown, also for an adopted interface', async () => {
    os.kernelWireGuard = true;
    os.links.set('wgx', { kind: 'wireguard', mtu: 1420, up: true, addresses: [] });
    os.wg.set('wgx', { privateKey: null, listenPort: 1, peers: new Map() });
    const adopted = filtered();
    adopted.interface.name = 'wgx';
    adopted.routes = [];
    await backend.apply(adopted);
    expect(os.tables.has('weft-wgx')).toBe(true);
    await backend.shutdown();
    expect(os.tables.size).toBe(0);
    expect(os.links.has('wgx')).toBe(true);
  });

  it('refuses a filter over the size limit having run nothing, not even a read', async () => {
    await expect(backend.apply({ ...desired(), filter: filterBomb() })).rejects.toMatchObject({
      code: 'invalid-request',
    });
    expect(os.log).toEqual([]);
  });

  it('works without nft installed as long as no filter is asked for', async () => {
    os.nftInstalled = false;
    await backend.apply(desired());
    await backend.down('wg0');
    await expect(backend.apply(filtered())).rejects.toThrow(/ENOENT/);
  });
});

describe('exit node (client)', () => {
  const withExit = (allowedLan: string[] = []): DesiredState => ({
    ...desired(),
    exitNode: { allowedLan, bypass: ['198.51.100.7/32', 'fd00:c::7/128'] },
  });

  it('marks the socket, adds the tunnel default in its table and the rules, kill switch first', async () => {
    await backend.apply(withExit(['198.18.5.0/24']));
    const changes = os.changes;
    expect(changes[0]).toMatch(/^nft -f /);
    expect(os.lastConfig).toContain('FwMark = 0x5746');
    expect(changes.slice(-9)).toEqual([
      'ip route add default dev wg0 table 22342',
      'ip -6 route add default dev wg0 table 22342',
      'ip rule add priority 5310 to 198.18.5.0/24 table main',
      'ip rule add priority 5310 to 198.51.100.7/32 table main',
      'ip -6 rule add priority 5310 to fd00:c::7/128 table main',
      'ip rule add priority 5320 table main suppress_prefixlength 0',
      'ip -6 rule add priority 5320 table main suppress_prefixlength 0',
      'ip rule add priority 5330 not fwmark 0x5746 table 22342',
      'ip -6 rule add priority 5330 not fwmark 0x5746 table 22342',
    ]);
    expect(os.tables.get('weft-wg0')).toContain('counter reject with icmpx type admin-prohibited');
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('1');
  });

  it('changes nothing when applied again', async () => {
    await backend.apply(withExit());
    os.log.length = 0;
    await backend.apply(withExit());
    expect(os.changes).toEqual([]);
  });

  it('clearing it takes the rules out before the route, and puts back mark and src_valid_mark', async () => {
    await backend.apply(withExit());
    os.log.length = 0;
    await backend.apply(desired());
    const changes = os.changes.filter(
      (c) => c.startsWith('ip rule') || c.startsWith('ip -6 rule') || c.includes('table 22342'),
    );
    expect(changes).toEqual([
      'ip rule del priority 5330 not fwmark 0x5746 table 22342',
      'ip -6 rule del priority 5330 not fwmark 0x5746 table 22342',
      'ip rule del priority 5320 table main suppress_prefixlength 0',
      'ip -6 rule del priority 5320 table main suppress_prefixlength 0',
      'ip rule del priority 5310 to 198.51.100.7/32 table main',
      'ip -6 rule del priority 5310 to fd00:c::7/128 table main',
      'ip route del default dev wg0 table 22342',
      'ip -6 route del default dev wg0 table 22342',
    ]);
    expect(os.rules).toEqual([]);
    expect(os.tunnelTable.size).toBe(0);
    expect(os.tables.size).toBe(0);
    expect(os.lastConfig).toContain('FwMark = off');
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('0');
  });

  it('down and shutdown leave no rule, route, table or parameter behind', async () => {
    await backend.apply(withExit());
    await backend.down('wg0');
    expect(os.rules).toEqual([]);
    expect(os.tables.size).toBe(0);
    await backend.apply(withExit());
    await backend.shutdown();
    expect(os.rules).toEqual([]);
    expect(os.tables.size).toBe(0);
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('0');
  });

  it('refuses a second interface selecting an exit node, and leaves the first one alone', async () => {
    await backend.apply(withExit());
    const other = withExit();
    other.interface.name = 'wg1';
    other.interface.listenPort = 51821;
    other.routes = [];
    await expect(backend.apply(other)).rejects.toMatchObject({ code: 'invalid-request' });
    other.exitNode = undefined;
    await backend.apply(other);
    await backend.down('wg1');
    expect(os.rules).toHaveLength(6);
  });
});

describe('router (subnet router, exit node)', () => {
  const router = (routes: string[]): DesiredState => ({ ...desired(), router: { routes, masquerade: true } });

  it('turns forwarding on per family, forwards only to its routes and masquerades', async () => {
    await backend.apply(router(['198.51.100.0/24']));
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('1');
    expect(sysctl.values.get('net.ipv6.conf.all.forwarding')).toBe('0');
    const table = os.tables.get('weft-wg0') ?? '';
    expect(table).toContain('iifname "wg0" jump tunnel_fwd');
    expect(table).toContain('\t\tip daddr @route4 accept');
    expect(table).toContain('iifname "wg0" oifname != "wg0" masquerade');
    await backend.apply(router(['0.0.0.0/0', '::/0']));
    expect(sysctl.values.get('net.ipv6.conf.all.forwarding')).toBe('1');
  });

  it('puts forwarding back as it was when the role goes, unless it was on already', async () => {
    await backend.apply(router(['198.51.100.0/24', 'fd00:5::/64']));
    await backend.apply(desired());
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('0');
    expect(sysctl.values.get('net.ipv6.conf.all.forwarding')).toBe('0');
    sysctl.values.set('net.ipv4.ip_forward', '1');
    await backend.apply(router(['198.51.100.0/24']));
    await backend.down('wg0');
    expect(sysctl.values.get('net.ipv4.ip_forward')).toBe('1');
  });
});

describe('across helper restarts (state file)', () => {
  let dir: string;
  let file: StateFile;
  const withExit = (): DesiredState => ({
    ...desired(),
    filter: [],
    exitNode: { allowedLan: [], bypass: ['198.51.100.7/32'] },
  });
  const helper = (bootId = 'boot-1') =>
    new LinuxBackend({
      runner: os,
      buffers: new UdpBuffers(sysctl, log),
      sysctl,
      log,
      readyTimeoutMs: 500,
      stopGraceMs: 100,
      owned: { file, bootId },
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-backend-state-'));
    file = new StateFile(dir, log);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('SIGTERM leaves kill switch and exit routing in place; the next helper takes over and SIGINT removes all', async () => {
    const first = helper();
    await first.apply(withExit());
    const rules = [...os.rules];
    os.log.length = 0;
    await first.detach();
    expect(os.changes).toEqual([]);
    expect(os.tables.get('weft-wg0')).toContain('chain killswitch');
    expect(os.rules).toEqual(rules);
    expect(os.tunnelTable.size).toBe(2);
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('1');

    const second = helper();
    await second.restore();
    expect(logged.at(-1)).toBe(`took over wg0 (exit node on wg0, kill switch kept) from ${file.path}`);
    // The engine re-applies what it wants: nothing to change.
    os.log.length = 0;
    await second.apply(withExit());
    expect(os.changes).toEqual([]);
    await second.shutdown();
    expect(os.rules).toEqual([]);
    expect(os.tables.size).toBe(0);
    expect(os.tunnelTable.size).toBe(0);
    expect(os.links.has('wg0')).toBe(false);
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('0');
    expect(sysctl.values.get('net.core.rmem_max')).toBe('212992');
    expect(await readdir(dir)).toEqual([]);
  });

  it('after a SIGKILL the file of the last change is enough to take everything down', async () => {
    const killed = helper();
    await killed.apply(withExit());
    // No detach, no shutdown: the process is simply gone.
    const next = helper();
    await next.restore();
    await next.down('wg0');
    expect(os.rules).toEqual([]);
    expect(os.tables.size).toBe(0);
    expect(os.links.has('wg0')).toBe(false);
    expect(sysctl.values.get('net.ipv4.conf.all.src_valid_mark')).toBe('0');
    expect(await readdir(dir)).toEqual([]);
  });

  it('keeps refusing a second exit node after a restart, as before it', async () => {
    await helper().apply(withExit());
    const next = helper();
    await next.restore();
    const other = withExit();
    other.interface.name = 'wg1';
    other.routes = [];
    await expect(next.apply(other)).rejects.toThrow('wg0 already uses an exit node');
  });

  it('ignores the file of an earlier boot, where none of it exists any more', async () => {
    await helper('boot-0').apply(desired());
    const next = helper('boot-1');
    await next.restore();
    await next.shutdown();
    // Nothing was taken over, so nothing was taken down.
    expect(os.links.has('wg0')).toBe(true);
  });
});
