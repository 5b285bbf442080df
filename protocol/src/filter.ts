import { z } from 'zod';

// Packet filter rules in Tailscale's FilterRule shape, so conformance data compares directly.
// Semantics: a packet from any of SrcIPs to any DstPorts entry (IP + port range) with a protocol in
// IPProto (absent: TCP, UDP, ICMPv4, ICMPv6) is accepted; everything else arriving is dropped.

export const PortRange = z.strictObject({
  First: z.number().int().min(0).max(65535),
  Last: z.number().int().min(0).max(65535),
});

export const NetPortRange = z.strictObject({
  /** `*`, an address, a CIDR or an `a-b` range. */
  IP: z.string(),
  Ports: PortRange,
});

export const FilterRule = z.strictObject({
  SrcIPs: z.array(z.string()),
  DstPorts: z.array(NetPortRange).optional(),
  IPProto: z.array(z.number().int().min(0).max(255)).optional(),
  CapGrant: z.array(z.unknown()).optional(),
});
export type FilterRule = z.infer<typeof FilterRule>;

/** What every node gets until a policy says otherwise. */
export const ALLOW_ALL: FilterRule[] = [
  { SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] },
];
