import { expect, it } from 'vitest';
import { parseDefaultGateway } from './gateway.js';

const HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';
const row = (iface: string, dest: string, gw: string, flags: string, mask: string) =>
  `${iface}\t${dest}\t${gw}\t${flags}\t0\t0\t0\t${mask}\t0\t0\t0`;

it('reads the default route gateway, little-endian hex as the kernel prints it', () => {
  const table = [
    HEADER,
    row('eth0', '006433C6', '00000000', '0001', '00FFFFFF'),
    row('eth0', '00000000', '016433C6', '0003', '00000000'),
  ];
  expect(parseDefaultGateway(table.join('\n'))).toBe('198.51.100.1');
});

it('has none without a default route through a gateway, or on malformed lines', () => {
  expect(parseDefaultGateway(HEADER)).toBeNull();
  expect(
    parseDefaultGateway([HEADER, row('eth0', '006433C6', '016433C6', '0003', '00FFFFFF')].join('\n')),
  ).toBeNull();
  expect(
    parseDefaultGateway([HEADER, row('wg0', '00000000', '00000000', '0001', '00000000')].join('\n')),
  ).toBeNull();
  expect(
    parseDefaultGateway([HEADER, row('eth0', '00000000', '016433C6', '0001', '00000000')].join('\n')),
  ).toBeNull();
  expect(
    parseDefaultGateway([HEADER, row('eth0', '00000000', '16433C6', '0003', '00000000')].join('\n')),
  ).toBeNull();
  expect(parseDefaultGateway([HEADER, 'eth0 00000000'].join('\n'))).toBeNull();
});
