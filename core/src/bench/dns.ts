import { createSocket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { DNS_DEFAULTS, type NetMap, type NodeView } from '@weft/protocol';
import dnsPacket from 'dns-packet';
import { TailnetNames } from '../dns/names.js';
import { Resolver } from '../dns/resolver.js';
import { DnsServer } from '../dns/server.js';
import { startTestUpstream } from './dns-upstream.js';

// `npm run bench -- dns [QUERIES]`: the engine's resolver on loopback, side by side in one run:
// tailnet names answered from a 200-node netmap, forwarded names (through the cache, and with the
// cache off so every query goes upstream), and the same upstream asked directly. Each row sends
// QUERIES queries over UDP with 32 in flight, bounded by a 20 s deadline; prints qps and p99.

const QUERIES = Number(process.argv[2] ?? 20_000);
const IN_FLIGHT = 32;
const DEADLINE_MS = 20_000;
const KEY = Buffer.alloc(32, 1).toString('base64');

function node(i: number): NodeView {
  return {
    id: `n${i}`,
    name: `node-${i}`,
    user: 'alice',
    tags: [],
    nodeKey: KEY,
    addresses: [`100.64.${i >> 8}.${i & 255}/32`],
    allowedIPs: [],
    endpoints: [],
    online: true,
    lastSeen: null,
    keyExpiry: null,
    os: 'linux',
  };
}

interface Row {
  what: string;
  qps: number;
  p50: number;
  p99: number;
  answered: number;
}

/** Sends `count` queries for names from `nameOf` to port, IN_FLIGHT at a time; latencies in ms. */
async function load(what: string, port: number, nameOf: (i: number) => string, count: number): Promise<Row> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const deadline = setTimeout(resolve, DEADLINE_MS);
    const send = () => {
      if (next >= count) return;
      const id = next & 0xffff;
      const q = dnsPacket.encode({
        type: 'query',
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'A', name: nameOf(next) }],
      });
      next++;
      sentAt.set(id, performance.now());
      socket.send(q, port, '127.0.0.1');
    };
    socket.on('message', (msg) => {
      const at = sentAt.get(msg.readUInt16BE(0));
      if (at === undefined) return;
      sentAt.delete(msg.readUInt16BE(0));
      latencies.push(performance.now() - at);
      if (latencies.length >= count) {
        clearTimeout(deadline);
        resolve();
      } else send();
    });
    for (let i = 0; i < IN_FLIGHT; i++) send();
  });
  const seconds = (performance.now() - start) / 1000;
  socket.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? Number.NaN;
  return { what, qps: latencies.length / seconds, p50: pct(0.5), p99: pct(0.99), answered: latencies.length };
}

async function main(): Promise<void> {
  const names: Record<string, string> = {};
  for (let i = 0; i < 1000; i++) names[`host-${i}.upstream.example`] = `198.51.100.${i % 250}`;
  const upstream = await startTestUpstream(names);
  const netmap: NetMap = {
    self: node(1),
    peers: Array.from({ length: 199 }, (_, i) => node(i + 2)),
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10'],
    dns: { ...DNS_DEFAULTS, nameservers: [`127.0.0.1:${upstream.port}`] },
  };
  const serve = async (cacheEntries: number) => {
    const resolver = new Resolver({ osResolvers: () => [], cacheEntries });
    resolver.setNames(TailnetNames.of(netmap));
    const server = new DnsServer(resolver);
    return { server, at: await server.listen('127.0.0.1', 0) };
  };
  const cached = await serve(4096);
  const uncached = await serve(0);
  const tailnet = (i: number) => `node-${(i % 199) + 2}.weft.internal`;
  const forwarded = (i: number) => `host-${i % 1000}.upstream.example`;

  const rows = [
    await load('upstream directly (forwarded names)', upstream.port, forwarded, QUERIES),
    await load('resolver: tailnet names', cached.at.port, tailnet, QUERIES),
    await load('resolver: forwarded, cache on', cached.at.port, forwarded, QUERIES),
    await load('resolver: forwarded, cache off', uncached.at.port, forwarded, QUERIES),
  ];
  const base = rows[0] as Row;
  console.log(
    `npm run bench -- dns ${QUERIES}  (UDP on loopback, ${IN_FLIGHT} in flight, node ${process.version})`,
  );
  console.log('ROW                                    ANSWERED      QPS   P50 ms   P99 ms   QPS vs UPSTREAM');
  for (const r of rows) {
    console.log(
      `${r.what.padEnd(38)} ${String(r.answered).padStart(8)} ${r.qps.toFixed(0).padStart(8)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)}   ${(r.qps / base.qps).toFixed(2)}x`,
    );
  }
  await cached.server.close();
  await uncached.server.close();
  await upstream.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
