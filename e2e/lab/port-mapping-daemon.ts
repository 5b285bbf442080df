import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import {
  type GatewayMode,
  type GrantedMapping,
  startPortMappingGateway,
} from '@weft/core/port-mapping/test-gateway';

// The lab router's port-mapping daemon (run in the router's namespace by Router.startPortMapping
// in nat.ts): answers NAT-PMP and PCP MAP (port 5351) and UPnP IGD (SSDP on port 1900 and the
// multicast group, HTTP) on the LAN address as `mode` says, and makes each mapping real with
// nftables: DNAT from the public port to the client's port, and SNAT of the client's port to the
// public one (so its own packets leave from the mapped port, not the EDM NAT's random one).
// Mappings are removed on delete or when their lifetime ends. The lab also runs the real
// miniupnpd (Router.startMiniupnpd); this daemon adds NAT-PMP-only and hostile gateways.

const { values } = parseArgs({
  options: { listen: { type: 'string' }, wan: { type: 'string' }, mode: { type: 'string' } },
});
const { listen, wan } = values;
const mode = values.mode as GatewayMode;
if (!listen || !wan || !['pcp', 'nat-pmp', 'upnp', 'garbage'].includes(mode))
  throw new Error('usage: port-mapping-daemon --listen LAN_IP --wan WAN_IP --mode pcp|nat-pmp|upnp|garbage');

/** By client `ip:port`: a delete answers external port 0. */
const mappings = new Map<string, GrantedMapping & { timer: NodeJS.Timeout }>();

function nft(input: string): void {
  const r = spawnSync('nft', ['-f', '-'], { input, encoding: 'utf8' });
  if (r.status !== 0) console.error(`nft: ${r.stderr}`);
}

/** Rewrites the whole mapping table at once (one nft transaction). */
function apply(): void {
  const rules = [...mappings.values()];
  const dnat = rules.map(
    (m) => `    iifname "eth0" udp dport ${m.externalPort} dnat to ${m.client}:${m.internalPort}`,
  );
  const snat = rules.map(
    (m) =>
      `    oifname "eth0" ip saddr ${m.client} udp sport ${m.internalPort} snat to ${wan}:${m.externalPort}`,
  );
  nft(`table ip weftpm
delete table ip weftpm
table ip weftpm {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
${dnat.join('\n')}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 1; policy accept;
${snat.join('\n')}
  }
}
`);
}

// The router's forward chain lets in only replies: let in what a mapping forwards too.
nft('insert rule inet weftnat forward ct status dnat accept\n');
apply();

await startPortMappingGateway({
  host: listen,
  port: 5351,
  ssdpPort: 1900,
  externalAddress: wan,
  mode,
  onRequest: (req) => console.log(`request ${req.protocol} ${req.op}`),
  onMapping: (m) => {
    const key = `${m.client}:${m.internalPort}`;
    clearTimeout(mappings.get(key)?.timer);
    mappings.delete(key);
    if (m.lifetime > 0) {
      const timer = setTimeout(() => {
        mappings.delete(key);
        apply();
      }, m.lifetime * 1000);
      mappings.set(key, { ...m, timer });
    }
    apply();
    console.log(`mapping ${wan}:${m.externalPort} → ${m.client}:${m.internalPort} for ${m.lifetime} s`);
  },
});
console.log(`port mapping (${mode}) on ${listen}:5351`);
