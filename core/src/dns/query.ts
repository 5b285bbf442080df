import dnsPacket, { type Answer, type DecodedPacket, type RecordType } from 'dns-packet';
import { exchangeTcp, exchangeUdp, type Upstream } from './upstream.js';

// One question to a resolver, as `weft dns query` and the tests ask it: UDP first (with an EDNS
// payload size, as stub resolvers send), TCP when the answer comes back truncated.

export interface QueryResult {
  transport: 'udp' | 'tcp';
  answer: DecodedPacket;
}

export async function queryDns(
  server: Upstream,
  name: string,
  type: RecordType = 'A',
  options: { timeoutMs?: number; tcp?: boolean; ednsSize?: number } = {},
): Promise<QueryResult> {
  const timeout = options.timeoutMs ?? 3000;
  const additionals: Answer[] =
    options.ednsSize === undefined
      ? []
      : [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: options.ednsSize,
            extendedRcode: 0,
            ednsVersion: 0,
            flags: 0,
            flag_do: false,
            options: [],
          },
        ];
  const wire = dnsPacket.encode({
    type: 'query',
    id: 0,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
    additionals,
  });
  if (!options.tcp) {
    const answer = dnsPacket.decode(await exchangeUdp(wire, server, timeout));
    if (!answer.flag_tc) return { transport: 'udp', answer };
  }
  return { transport: 'tcp', answer: dnsPacket.decode(await exchangeTcp(wire, server, timeout)) };
}

/** The rcode, and the records as "TYPE data" lines. */
export function describeAnswer(answer: DecodedPacket): { rcode: string; records: string[] } {
  return {
    rcode: (answer as { rcode?: string }).rcode ?? 'NOERROR',
    records: (answer.answers ?? []).map((a) => {
      const data = (a as { data?: unknown }).data;
      return `${a.type} ${typeof data === 'string' ? data : JSON.stringify(data)}`;
    }),
  };
}
