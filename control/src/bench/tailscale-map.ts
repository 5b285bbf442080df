import type { StreamServerMessage } from '@weft/protocol';
import type { StreamSession } from '../netmap/hub.js';
import type { NodeRecord } from '../tailnet/records.js';
import { fullMapResponse, TsMapSession } from '../tailscale/map-session.js';
import { mapFrame } from '../tailscale/noise-api.js';
import { loadZstd } from '../tailscale/zstd.js';
import { connectedHub, testNode } from '../testing/nodes.js';

// `npm run bench -- tailscale-map [N]`: what the Tailscale protocol adapter costs on top of Weft's
// own netmap stream, in-process on a simulated tailnet of N connected nodes (default 200): every
// node's full map built and serialized, and one node's endpoint change pushed to every other node,
// once as Weft's JSON stream messages and once as Tailscale MapResponses (translated, JSON,
// zstd-framed, length-prefixed). The same hub computes both; only the edge differs.

const n = Number(process.argv[2] ?? 200);
const ROUNDS = 30;

function tailnet(count: number, round = 0): NodeRecord[] {
  return Array.from({ length: count }, (_, i) =>
    testNode(
      i + 1,
      { name: `u${i % 20}`, email: `u${i % 20}@example.com`, groups: [] },
      {
        userId: `u${i % 20}`,
        kind: i % 2 === 0 ? 'tailscale' : 'weft',
        discoKey: i % 2 === 0 ? Buffer.alloc(32, i % 256).toString('base64') : null,
        homeRelay: i % 2 === 0 ? 1 : null,
        endpoints: [`198.18.${Math.floor(i / 256)}.${i % 256}:${41641 + (i === 0 ? round : 0)}`],
      },
    ),
  );
}

class WeftSession implements StreamSession {
  bytes = 0;
  constructor(readonly nodeId: string) {}
  send(message: StreamServerMessage): void {
    this.bytes += Buffer.byteLength(JSON.stringify(message));
  }
  close(): void {}
}

function tsSession(nodeId: string) {
  const counter = { bytes: 0 };
  const session = new TsMapSession(
    nodeId,
    (r) => {
      counter.bytes += mapFrame(r, true).length;
    },
    () => {},
  );
  return Object.assign(session, { counter });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function time(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

await loadZstd();
const nodes = tailnet(n);
const weft = connectedHub(nodes, null, (id) => new WeftSession(id));
const ts = connectedHub(nodes, null, (id) => tsSession(id));

// Full maps: every node's whole map, built from the hub and serialized as its stream would send it.
const fullWeft: number[] = [];
const fullTs: number[] = [];
let fullWeftBytes = 0;
let fullTsBytes = 0;
for (let r = 0; r < ROUNDS; r++) {
  fullWeft.push(
    time(() => {
      fullWeftBytes = 0;
      for (const node of nodes) {
        const netmap = weft.hub.snapshot(node.id);
        fullWeftBytes += Buffer.byteLength(JSON.stringify({ type: 'full', netmap }));
      }
    }),
  );
  fullTs.push(
    time(() => {
      fullTsBytes = 0;
      for (const node of nodes) {
        const netmap = ts.hub.snapshot(node.id);
        if (netmap) fullTsBytes += mapFrame(fullMapResponse(netmap), true).length;
      }
    }),
  );
}

// Patches: node 1's endpoint moves; every other node is told (Weft: a delta; Tailscale: a patch).
for (const s of weft.sessions.values()) s.bytes = 0;
for (const s of ts.sessions.values()) s.counter.bytes = 0;
const patchWeft: number[] = [];
const patchTs: number[] = [];
for (let r = 1; r <= ROUNDS; r++) {
  const next = tailnet(n, r);
  patchWeft.push(time(() => weft.hub.update(next)));
  patchTs.push(time(() => ts.hub.update(next)));
}
const weftBytes = [...weft.sessions.values()].reduce((s, x) => s + x.bytes, 0);
const tsBytes = [...ts.sessions.values()].reduce((s, x) => s + x.counter.bytes, 0);

const row = (what: string, w: number, t: number, unit: string) =>
  console.log(
    `${what.padEnd(34)} ${w.toFixed(2).padStart(9)} ${t.toFixed(2).padStart(11)} ${unit.padEnd(4)} ${(t / w).toFixed(2)}×`,
  );
console.log(
  `tailscale-map: ${n} connected nodes (half Tailscale clients), ${ROUNDS} rounds, medians; node ${process.version}`,
);
console.log(`${''.padEnd(34)} ${'weft'.padStart(9)} ${'tailscale'.padStart(11)}      ratio (tailscale/weft)`);
row(`all ${n} full maps, build+serialize`, median(fullWeft), median(fullTs), 'ms');
row('bytes of all full maps', fullWeftBytes / 1024, fullTsBytes / 1024, 'KiB');
row(`one endpoint change to ${n - 1} peers`, median(patchWeft), median(patchTs), 'ms');
row('bytes per change, all peers', weftBytes / 1024 / ROUNDS, tsBytes / 1024 / ROUNDS, 'KiB');
console.log('Tailscale frames are zstd level 3, as clients ask; Weft messages are plain JSON (WebSocket)');
