import { spawnSync } from 'node:child_process';
import { getHeapStatistics } from 'node:v8';
import type { DesiredState } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { filterBomb } from '../bench/filter-bomb.js';
import { MAX_TABLE_ELEMENTS, parseTableHash, renderTable } from './nft.js';

const base = (): DesiredState => ({
  interface: {
    name: 'wg0',
    privateKey: Buffer.alloc(32, 1).toString('base64'),
    listenPort: 51820,
    addresses: ['100.64.0.1/32', 'fd00::1/128'],
    mtu: 1280,
  },
  peers: [],
  routes: [],
});

const elements = (file: string, set: string): string[] => {
  const m = file.match(new RegExp(`(?:set|map) ${set} \\{[^}]*elements = \\{\\n([^}]*)\\n\\t\\t\\}`));
  return m === null ? [] : (m[1] as string).split('\n').map((l) => l.trim().replace(/,$/, ''));
};

describe('nftables table', () => {
  it('is not rendered when the state has no filter', () => {
    expect(renderTable(base())).toBeNull();
  });

  it("replaces the table in one transaction and carries its hash in an empty set's comment", () => {
    const table = renderTable({ ...base(), filter: [] });
    expect(table?.name).toBe('weft-wg0');
    const lines = table?.file.split('\n') ?? [];
    expect(lines.slice(0, 7)).toEqual([
      'add table inet weft-wg0',
      'delete table inet weft-wg0',
      'table inet weft-wg0 {',
      '\tset hash {',
      '\t\ttype inet_proto',
      `\t\tcomment "weft sha256:${table?.hash}"`,
      '\t}',
    ]);
    expect(table?.file).not.toMatch(/^\tcomment/m);
  });

  it("reads the hash from that table's hash set only, strictly", () => {
    const hash = '0123456789abcdef0123456789abcdef';
    const set = (over: Record<string, unknown>) => ({
      set: { family: 'inet', table: 'weft-wg0', name: 'hash', type: 'inet_proto', handle: 3, ...over },
    });
    const listing = (...sets: unknown[]) =>
      JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6' } }, ...sets] });
    // As nft 1.0.6 prints `nft -j list set inet weft-wg0 hash`.
    expect(parseTableHash(listing(set({ comment: `weft sha256:${hash}` })), 'weft-wg0')).toBe(hash);
    // Another table's, another family's or another set's comment is not this table's hash.
    for (const other of [{ table: 'weft-wg1' }, { family: 'ip' }, { name: 'udp4' }])
      expect(
        parseTableHash(listing(set({ comment: `weft sha256:${hash}`, ...other })), 'weft-wg0'),
      ).toBeNull();
    expect(
      parseTableHash(
        listing(set({ comment: `weft sha256:${hash}` }), set({ comment: `weft sha256:${'f'.repeat(32)}` })),
        'weft-wg0',
      ),
    ).toBeNull();
    for (const comment of [undefined, `weft sha256:${hash}0`, `x weft sha256:${hash}`, 'weft sha256:'])
      expect(parseTableHash(listing(set({ comment })), 'weft-wg0')).toBeNull();
    expect(parseTableHash(listing(), 'weft-wg0')).toBeNull();
    expect(() => parseTableHash('{"nftables": 1}', 'weft-wg0')).toThrow();
    expect(() => parseTableHash('table inet weft-wg0 {', 'weft-wg0')).toThrow();
  });

  it('lets in from the tunnel replies and what the filter accepts, and drops the rest', () => {
    const file = renderTable({ ...base(), filter: [] })?.file ?? '';
    expect(file).toContain(
      [
        '\tchain tunnel_in {',
        '\t\tfrag frag-off != 0 accept',
        '\t\ttcp flags & (syn | ack) != syn accept',
        '\t\tip saddr . udp sport . ip daddr . udp dport @udp4 accept',
        '\t\tip6 saddr . udp sport . ip6 daddr . udp dport @udp6 accept',
        '\t\ticmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept',
        '\t\ticmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept',
        '\t\tjump filter',
        '\t\tcounter drop',
        '\t}',
        '\tchain input {',
        '\t\ttype filter hook input priority filter; policy accept;',
        '\t\tiifname "wg0" jump tunnel_in',
        '\t\tip daddr { 100.64.0.1 } iifname != "lo" fib saddr type != local counter drop',
        '\t\tip6 daddr { fd00::1 } iifname != "lo" fib saddr type != local counter drop',
        '\t}',
      ].join('\n'),
    );
    // The UDP flows this machine opens by the tunnel, noted as they leave, in bounded sets, with both
    // ends: a reply gets in only to the local address and port the flow left from.
    expect(file).toContain(
      [
        '\tchain tunnel_out {',
        '\t\tmeta l4proto udp update @udp4 { ip daddr . udp dport . ip saddr . udp sport }',
        '\t\tmeta l4proto udp update @udp6 { ip6 daddr . udp dport . ip6 saddr . udp sport }',
        '\t}',
        '\tchain output {',
        '\t\ttype filter hook output priority raw; policy accept;',
        '\t\toifname "wg0" jump tunnel_out',
        '\t}',
      ].join('\n'),
    );
    expect(file).toContain(
      '\tset udp4 {\n\t\ttype ipv4_addr . inet_service . ipv4_addr . inet_service\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 2m\n\t}',
    );
    // Not a router, and the host forwards nothing: nothing is forwarded from the tunnel.
    expect(file).toContain('\tchain tunnel_fwd {\n\t\tcounter drop\n\t}');
    expect(file).toContain(
      '\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname "wg0" jump tunnel_fwd\n\t}',
    );
    // An empty filter accepts nothing new.
    expect(file).toContain('\tchain filter {\n\t}');
    expect(spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], { input: file }).status).toBe(0);
  });

  it('on a host that forwards (containers, VMs), lets in the replies to what it forwards into the tunnel', () => {
    const file = renderTable({ ...base(), filter: [] }, { forwards: true })?.file ?? '';
    expect(file).toContain(
      '\tchain tunnel_fwd {\n\t\tct state established,related accept\n\t\tcounter drop\n\t}',
    );
    expect(spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], { input: file }).status).toBe(0);
  });

  it('keeps no connection state: no ct and no NAT, with a filter and the DNS redirect', () => {
    // Any `ct` or NAT in a namespace turns on connection tracking for every packet of it.
    const dns = { resolver: { ipv4: '100.64.0.1', ipv6: 'fd00::1', port: 40053 }, searchDomains: [] };
    const file = renderTable({ ...base(), filter: [], dns })?.file ?? '';
    expect(file).not.toMatch(/\bct\b|\bnat\b|dnat|masquerade/);
  });

  it('asks for the interface once per packet: only the jump to the tunnel chain names it', () => {
    // Every packet the host receives passes the input chain, WireGuard's own UDP too: one name
    // compare sends the tunnel's on, and anything else meets only the address guard.
    const dns = { resolver: { ipv4: '100.64.0.1', ipv6: 'fd00::1', port: 40053 }, searchDomains: [] };
    const file = renderTable({ ...base(), filter: [], dns })?.file ?? '';
    const input = file.split('\tchain input {\n')[1]?.split('\n\t}')[0] ?? '';
    expect(input.match(/iifname "wg0"/g)).toHaveLength(1);
    expect(input.split('\n')[1]).toBe('\t\tiifname "wg0" jump tunnel_in');
  });

  it('guards the resolver port first, in the same single input chain (one pass per packet)', () => {
    const dns = { resolver: { ipv4: '100.64.0.1', ipv6: 'fd00::1', port: 40053 }, searchDomains: [] };
    const file = renderTable({ ...base(), filter: [], dns })?.file ?? '';
    expect(file.match(/hook input/g)).toHaveLength(1);
    expect(file).toContain(
      [
        '\tchain tunnel_in {',
        '\t\tth dport 40053 meta l4proto { tcp, udp } counter drop',
        '\t\tip saddr 100.100.100.100 counter drop',
        '\t\tip6 saddr fd7a:115c:a1e0::53 counter drop',
        '\t\tfrag frag-off != 0 accept',
      ].join('\n'),
    );
    // Without a filter the guard still has its chain.
    const dnsOnly = renderTable({ ...base(), dns })?.file ?? '';
    expect(dnsOnly).toContain(
      '\tchain tunnel_in {\n\t\tth dport 40053 meta l4proto { tcp, udp } counter drop\n' +
        '\t\tip saddr 100.100.100.100 counter drop\n\t\tip6 saddr fd7a:115c:a1e0::53 counter drop\n\t}\n' +
        '\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname "wg0" jump tunnel_in\n\t}',
    );
    expect(spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], { input: file }).status).toBe(0);
  });

  it('looks the source up in a verdict map and the destination in sets, ports only for TCP, UDP and SCTP', () => {
    const file =
      renderTable({
        ...base(),
        filter: [
          {
            src: ['100.64.0.0/10', '100.64.0.2/32', 'fd00::/8'],
            dst: [
              { prefix: '100.64.0.1/32', ports: { first: 443, last: 443 } },
              { prefix: '100.64.0.0/24', ports: { first: 22, last: 22 } },
              { prefix: '198.51.100.0/24', ports: { first: 0, last: 65535 } },
            ],
            protos: [1, 6, 47],
          },
        ],
      })?.file ?? '';
    expect(file).toContain('\tchain filter {\n\t\tip saddr vmap @src4\n\t}');
    expect(file).toContain('\tmap src4 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval');
    expect(elements(file, 'src4')).toEqual(['100.64.0.0/10 : jump g4_0']);
    expect(elements(file, 'g4_0_port')).toEqual([
      '100.64.0.0 . 6 . 22',
      '100.64.0.1 . 6 . 22',
      '100.64.0.1 . 6 . 443',
      '100.64.0.2-100.64.0.255 . 6 . 22',
      '198.51.100.0/24 . 6 . 0-65535',
    ]);
    // ICMP by address whatever the ports; GRE only where all ports are allowed.
    expect(elements(file, 'g4_0_addr')).toEqual([
      '100.64.0.0/24 . 1',
      '198.51.100.0/24 . 1',
      '198.51.100.0/24 . 47',
    ]);
    expect(file).toContain(
      '\tchain g4_0 {\n\t\tip daddr . meta l4proto . th dport @g4_0_port accept\n\t\tip daddr . meta l4proto @g4_0_addr accept\n\t}',
    );
    // The IPv6 source has no IPv6 destination: no IPv6 lookup.
    expect(file).not.toContain('src6');
  });

  it('cuts overlapping sources into pieces, each looking up exactly the rules that cover it', () => {
    const rule = (src: string, port: number) => ({
      src: [src],
      dst: [{ prefix: '100.64.0.1/32', ports: { first: port, last: port } }],
      protos: [6],
    });
    const file =
      renderTable({
        ...base(),
        filter: [rule('100.64.0.0/24', 22), rule('100.64.0.128/25', 80), rule('100.64.0.0/24', 443)],
      })?.file ?? '';
    // 0-127: rules 0 and 2; 128-255: all three. Rules over the same sources share a group.
    expect(elements(file, 'src4')).toEqual(['100.64.0.0/25 : jump g4_0', '100.64.0.128/25 : jump g4_1']);
    expect(elements(file, 'g4_0_port')).toEqual(['100.64.0.1 . 6 . 22', '100.64.0.1 . 6 . 443']);
    expect(elements(file, 'g4_1_port')).toEqual([
      '100.64.0.1 . 6 . 22',
      '100.64.0.1 . 6 . 80',
      '100.64.0.1 . 6 . 443',
    ]);
  });

  it('renders 1,000 rules over the same sources as one lookup, and nft accepts it', async () => {
    const filter = Array.from({ length: 1000 }, (_, i) => ({
      src: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
      dst: [
        // Every other port, so no two rules' ports touch and merge.
        { prefix: '100.64.0.1/32', ports: { first: 10_000 + 2 * i, last: 10_000 + 2 * i } },
        { prefix: 'fd00::1/128', ports: { first: 10_000 + 2 * i, last: 10_000 + 2 * i } },
      ],
      protos: [1, 6, 17, 58],
    }));
    const file = renderTable({ ...base(), filter })?.file ?? '';
    expect(elements(file, 'src4')).toEqual(['100.64.0.0/10 : jump g4_0']);
    expect(elements(file, 'src6')).toEqual(['fd7a:115c:a1e0::/48 : jump g6_0']);
    expect(elements(file, 'g4_0_port')).toHaveLength(2000);
    // input, output, forward and the tunnel's chain of each, filter and one group chain per family:
    // nothing grows with the rules.
    expect(file.match(/\tchain /g)).toHaveLength(9);
    expect(file).toContain('\tchain filter {\n\t\tip saddr vmap @src4\n\t\tip6 saddr vmap @src6\n\t}');
    // nftables checks it (kernel included) in a namespace of its own, changing nothing here.
    const r = spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], { input: file, encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('renders the same state to the same bytes', () => {
    const s = {
      ...base(),
      filter: [
        { src: ['0.0.0.0/0'], dst: [{ prefix: '0.0.0.0/0', ports: { first: 1, last: 2 } }], protos: [6] },
      ],
    };
    expect(renderTable(s)).toEqual(renderTable(structuredClone(s)));
  });
});

describe('nftables table for routers and exit-node clients', () => {
  it('forwards from the tunnel only to the served routes, through the filter, and masquerades', () => {
    const file =
      renderTable({
        ...base(),
        filter: [],
        router: { routes: ['198.51.100.0/24', 'fd00:5::/64'], masquerade: true },
      })?.file ?? '';
    expect(file).toContain(
      [
        '\tchain tunnel_fwd {',
        '\t\tct state established,related accept',
        '\t\tip daddr @route4 jump filter',
        '\t\tip6 daddr @route6 jump filter',
        '\t\tcounter drop',
        '\t}',
        '\tchain forward {',
        '\t\ttype filter hook forward priority filter; policy accept;',
        '\t\tiifname "wg0" jump tunnel_fwd',
      ].join('\n'),
    );
    expect(elements(file, 'route4')).toEqual(['198.51.100.0/24']);
    expect(file).toContain(
      'type nat hook postrouting priority srcnat; policy accept;\n\t\tiifname "wg0" oifname != "wg0" masquerade',
    );
  });

  it('without a filter, a router forwards everything to its routes', () => {
    const file = renderTable({ ...base(), router: { routes: ['0.0.0.0/0'], masquerade: false } })?.file ?? '';
    expect(file).toContain('\t\tip daddr @route4 accept');
    expect(file).not.toContain('masquerade');
    expect(file).not.toContain('hook input');
  });

  it('an exit-node client gets the kill switch: only tunnel, WireGuard, control, relay and LAN leave', () => {
    const file =
      renderTable({
        ...base(),
        exitNode: { allowedLan: ['198.18.20.0/24'], bypass: ['198.51.100.7/32', 'fd00:c::7/128'] },
      })?.file ?? '';
    expect(file).toContain(
      [
        '\t\ttype filter hook output priority filter; policy accept;',
        '\t\toifname "lo" accept',
        '\t\toifname "wg0" accept',
        '\t\tmeta mark 0x5746 accept',
        '\t\tip daddr @direct4 accept',
        '\t\tip6 daddr @direct6 accept',
        '\t\tip6 daddr { fe80::/10, ff02::/16 } accept',
        '\t\tudp sport 68 udp dport 67 accept',
        '\t\tcounter reject with icmpx type admin-prohibited',
      ].join('\n'),
    );
    expect(elements(file, 'direct4')).toEqual(['198.18.20.0/24', '198.51.100.7']);
    expect(elements(file, 'direct6')).toEqual(['fd00:c::7']);
    expect(file).toContain('meta l4proto udp ct mark 0x5746 meta mark set ct mark');
    expect(file).toContain('meta l4proto udp meta mark 0x5746 ct mark set meta mark');
  });

  it('refuses a ~48 KB filter whose rendering would grow as its square, before building any of it', () => {
    const filter = filterBomb();
    expect(JSON.stringify(filter).length).toBeLessThan(48 * 1024);
    const before = getHeapStatistics().total_heap_size;
    expect(() => renderTable({ ...base(), filter })).toThrow(
      expect.objectContaining({
        code: 'invalid-request',
        message: expect.stringMatching(
          /^state\.filter\[0\] could take the nftables table to \d+ set elements, over the limit of 65536: /,
        ),
      }),
    );
    // Rendering it took some 75 MB of heap for the cut rectangles alone; refusing takes next to none.
    expect(getHeapStatistics().total_heap_size - before).toBeLessThan(16 * 1024 * 1024);
  });

  it('refuses sources that overlap in too many ways (each piece would name every rule over it)', () => {
    const star = Array.from({ length: 1100 }, (_, i) => ({
      src: ['0.0.0.0/0'],
      dst: [{ prefix: '100.64.0.1/32', ports: { first: i + 1, last: i + 1 } }],
      protos: [6],
    }));
    // One more rule from 1,000 separate addresses cuts the whole range into ~2,000 pieces.
    const spots = {
      src: Array.from({ length: 1000 }, (_, i) => `100.64.${(2 * i) >> 8}.${(2 * i) & 255}/32`),
      dst: [{ prefix: '100.64.0.1/32', ports: { first: 9000, last: 9000 } }],
      protos: [6],
    };
    expect(() => renderTable({ ...base(), filter: [...star, spots] })).toThrow(
      expect.objectContaining({
        code: 'invalid-request',
        message: expect.stringMatching(/^state\.filter: its rules' sources overlap in more than \d+ ways/),
      }),
    );
    // The same rules with fewer spots render.
    expect(
      renderTable({ ...base(), filter: [...star, { ...spots, src: spots.src.slice(0, 100) }] }),
    ).not.toBeNull();
  });

  it('renders a large filter that stays under the limit', () => {
    // 40 wide and 40 narrow: about 2 x 81 x 41 elements at most, well under the limit.
    const file = renderTable({ ...base(), filter: filterBomb(40, 40) })?.file ?? '';
    expect(elements(file, 'g4_0_port').length).toBeGreaterThan(40 * 40);
    expect(elements(file, 'g4_0_port').length).toBeLessThan(MAX_TABLE_ELEMENTS);
  });
});
