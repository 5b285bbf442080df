import type { DesiredState } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { parseTableHash, renderTable } from './nft.js';

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
  const m = file.match(new RegExp(`set ${set} \\{[^}]*elements = \\{\\n([^}]*)\\n\\t\\t\\}`));
  return m === null ? [] : (m[1] as string).split('\n').map((l) => l.trim().replace(/,$/, ''));
};

describe('nftables table', () => {
  it('is not rendered when the state has no filter', () => {
    expect(renderTable(base())).toBeNull();
  });

  it('replaces the table in one transaction and carries its hash in the comment', () => {
    const table = renderTable({ ...base(), filter: [] });
    expect(table?.name).toBe('weft-wg0');
    const lines = table?.file.split('\n') ?? [];
    expect(lines.slice(0, 4)).toEqual([
      'add table inet weft-wg0',
      'delete table inet weft-wg0',
      'table inet weft-wg0 {',
      `\tcomment "weft sha256:${table?.hash}"`,
    ]);
    expect(parseTableHash(lines.slice(2).join('\n'))).toBe(table?.hash);
    expect(parseTableHash('table inet weft-wg0 {\n}')).toBeNull();
  });

  it('lets in from the tunnel replies and what the filter accepts, and drops the rest', () => {
    const file = renderTable({ ...base(), filter: [] })?.file ?? '';
    expect(file).toContain(
      [
        '\t\ttype filter hook input priority filter; policy accept;',
        '\t\tiifname "wg0" ct state established,related accept',
        '\t\tiifname "wg0" jump filter',
        '\t\tiifname "wg0" counter drop',
        '\t\tiifname != "wg0" ip daddr { 100.64.0.1 } fib saddr type != local counter drop',
        '\t\tiifname != "wg0" ip6 daddr { fd00::1 } fib saddr type != local counter drop',
      ].join('\n'),
    );
    // An empty filter accepts nothing new.
    expect(file).toContain('\tchain filter {\n\t}');
  });

  it('uses interval sets per rule and family, ports only for TCP, UDP and SCTP', () => {
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
    expect(elements(file, 'r0_src4')).toEqual(['100.64.0.0/10']);
    expect(elements(file, 'r0_port4')).toEqual([
      '100.64.0.0 . 6 . 22',
      '100.64.0.1 . 6 . 22',
      '100.64.0.1 . 6 . 443',
      '100.64.0.2-100.64.0.255 . 6 . 22',
      '198.51.100.0/24 . 6 . 0-65535',
    ]);
    // ICMP by address whatever the ports; GRE only where all ports are allowed.
    expect(elements(file, 'r0_addr4')).toEqual([
      '100.64.0.0/24 . 1',
      '198.51.100.0/24 . 1',
      '198.51.100.0/24 . 47',
    ]);
    expect(file).toContain('ip saddr @r0_src4 ip daddr . meta l4proto . th dport @r0_port4 accept');
    expect(file).toContain('ip saddr @r0_src4 ip daddr . meta l4proto @r0_addr4 accept');
    // The IPv6 source has no IPv6 destination: no IPv6 rule.
    expect(file).not.toContain('r0_src6');
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
