import { parentPort, workerData } from 'node:worker_threads';
import { decompress } from 'fzstd';
import { type MapReader, TsTestClient } from '../testing/tailscale-client.js';
import { FanOut } from './fan-out.js';
import { pool, sourceOf } from './load-kit.js';

// One slice of control-vs-headscale's Tailscale-protocol load, on its own thread: a single load
// process decrypting and parsing every map of 1,000 nodes was the bottleneck, so each worker owns a
// slice of the nodes (registers them, follows their map streams) and answers the parent's commands.
// Times cross threads as absolute times (performance.timeOrigin + now()), the same clock in all.

/** What a node's map must show for a change to have reached it. */
export type Reached =
  | { kind: 'has-key'; key: string }
  | { kind: 'endpoint'; id: number; endpoint: string }
  | { kind: 'gone'; id: number };

export type Command =
  | { type: 'register'; width: number }
  | { type: 'stream'; width: number }
  /** Answers once every node's map has its self and at least `peers` peers. */
  | { type: 'complete'; peers: number }
  /**
   * Answers once no node has had a map message (keep-alives aside) for `ms`, with how many whole
   * maps (responses with Peers) its nodes were sent in all.
   */
  | { type: 'quiet'; ms: number }
  /** Starts timing a change from `t0` on the nodes of `expect` this worker owns. */
  | { type: 'watch'; expect: number[]; reached: Reached; t0: number }
  /** Answers once every watched node has the change (`done`), or with how many had so far. */
  | { type: 'watched' }
  /** Stops timing; answers the arrival times (ms after t0) and how many streams the server ended. */
  | { type: 'unwatch' }
  | { type: 'self'; index: number }
  /** Node `index`'s "lite" map request with new endpoints (an endpoint change). */
  | { type: 'move'; index: number; endpoints: string[] };

export interface WorkerSetup {
  url: string;
  authKey: string;
  version: number;
  indices: number[];
}

export const now = () => performance.timeOrigin + performance.now();

/** What tailscaled sends about itself with every map request. */
export const hostinfo = (name: string) => ({
  Hostname: name,
  OS: 'linux',
  IPNVersion: '1.102.5-bench',
  NetInfo: { PreferredDERP: 900 },
});

export function reachedTest(r: Reached): (m: MapReader) => boolean {
  switch (r.kind) {
    case 'has-key':
      return (m) => [...m.peers.values()].some((p) => p.Key === r.key);
    case 'endpoint':
      return (m) => ((m.peers.get(r.id)?.Endpoints as string[] | undefined) ?? []).includes(r.endpoint);
    case 'gone':
      return (m) => !m.peers.has(r.id);
  }
}

/** A load node: its client, its map once streamed. */
export interface LoadNode {
  client: TsTestClient;
  reader: MapReader | null;
  name: string;
}

export async function register(node: LoadNode, authKey: string): Promise<void> {
  const r = await node.client.register({ Auth: { AuthKey: authKey } }, node.name);
  if (r.MachineAuthorized !== true) throw new Error(`${node.name} not authorized: ${JSON.stringify(r)}`);
}

export async function openMap(node: LoadNode, i: number): Promise<MapReader> {
  // zstd, as every current Tailscale client asks: the server compresses each receiver's frames.
  const reader = await node.client.map(
    {
      Compress: 'zstd',
      Hostinfo: hostinfo(node.name),
      Endpoints: [`198.51.100.${1 + (i % 250)}:${41641 + Math.floor(i / 250)}`],
    },
    decompress,
  );
  node.reader = reader;
  return reader;
}

function serve(setup: WorkerSetup): void {
  const port = parentPort;
  if (port === null) throw new Error('ts-load-worker runs as a worker thread');
  const nodes = new Map<number, LoadNode>();
  for (const i of setup.indices) {
    nodes.set(i, {
      client: new TsTestClient(setup.url, setup.version, sourceOf(i)),
      reader: null,
      name: `node-${i}`,
    });
  }
  const node = (i: number) => {
    const n = nodes.get(i);
    if (n === undefined) throw new Error(`node ${i} is not this worker's`);
    return n;
  };
  let fan: FanOut<MapReader> | null = null;
  let fanT0 = 0;
  /** When a node last had a map message (keep-alives do not count). */
  let lastMessage = now();

  const handle = async (c: Command): Promise<unknown> => {
    switch (c.type) {
      case 'register':
        await pool(setup.indices, c.width, (i) => register(node(i), setup.authKey));
        return null;
      case 'stream':
        await pool(setup.indices, c.width, async (i) => {
          const reader = await openMap(node(i), i);
          let seen = 0;
          reader.onChange = () => {
            const at = now();
            if (reader.messages.length !== seen) lastMessage = at;
            seen = reader.messages.length;
            fan?.changed(i, reader, at - fanT0);
          };
        });
        return null;
      case 'complete': {
        const done = () => [...nodes.values()].every((n) => n.reader?.self && n.reader.peers.size >= c.peers);
        while (!done()) await new Promise((r) => setTimeout(r, 20));
        return null;
      }
      case 'quiet': {
        while (now() - lastMessage < c.ms) await new Promise((r) => setTimeout(r, 50));
        let whole = 0;
        for (const n of nodes.values()) for (const m of n.reader?.messages ?? []) if (m.Peers) whole++;
        return whole;
      }
      case 'watch': {
        const mine = c.expect.filter((i) => nodes.has(i));
        fanT0 = c.t0;
        fan = new FanOut(mine, reachedTest(c.reached), 0);
        // A node that already shows it (it arrived before the watch) counts now.
        for (const i of mine) {
          const reader = node(i).reader;
          if (reader) fan.changed(i, reader, now() - fanT0);
        }
        return null;
      }
      case 'watched': {
        const f = fan;
        while (f !== null && fan === f && !f.done) await new Promise((r) => setTimeout(r, 20));
        return null;
      }
      case 'unwatch': {
        const times = fan?.times() ?? [];
        fan = null;
        const ended = [...nodes.values()].filter((n) => n.reader?.ended).length;
        return { times, ended };
      }
      case 'self':
        return node(c.index).reader?.self ?? null;
      case 'move': {
        const n = node(c.index);
        const res = await (await n.client.connection()).post('/machine/map', {
          Version: setup.version,
          NodeKey: n.client.nodeKey,
          DiscoKey: n.client.discoKey,
          OmitPeers: true,
          Stream: false,
          Hostinfo: hostinfo(n.name),
          Endpoints: c.endpoints,
        });
        if (res.status !== 200) throw new Error(`endpoint update: ${res.status} ${res.body}`);
        return null;
      }
    }
  };

  port.on('message', (m: { id: number; command: Command }) => {
    handle(m.command).then(
      (value) => port.postMessage({ id: m.id, value }),
      (err: unknown) =>
        port.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) }),
    );
  });
}

if (parentPort !== null && workerData !== null && workerData !== undefined) serve(workerData as WorkerSetup);
