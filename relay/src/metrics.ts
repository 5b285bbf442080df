import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Reflector } from './reflector.js';
import type { RelayServer } from './server.js';
import type { StunServer } from './stun.js';

// Every metric the relay exports, in one place. They are read from the counters the relay keeps
// anyway (RelayServer, Reflector and StunServer stats) when Prometheus scrapes, so the forwarding
// path pays nothing for them. Served on their own listener (--metrics-listen), never on the public
// port: they reveal how many nodes use the relay.

export interface MetricSources {
  server: RelayServer;
  reflector: Reflector;
  stun: StunServer | null;
}

/** A counter whose value is a running total kept elsewhere, set from it at each scrape. */
function totalCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelName: L,
  read: () => Record<string, number>,
): void {
  new Counter({
    name,
    help,
    labelNames: [labelName],
    registers: [registry],
    collect() {
      this.reset();
      for (const [label, value] of Object.entries(read())) this.inc({ [labelName]: label } as never, value);
    },
  });
}

export function relayMetrics(sources: MetricSources): Registry {
  const { server, reflector, stun } = sources;
  const registry = new Registry();
  const forwarded = () => server.stats().forwarded;
  totalCounter(
    registry,
    'weft_relay_forwarded_packets_total',
    'Packets forwarded, by the protocol they arrived in',
    'transport',
    () => ({
      weft: forwarded().weft.packets,
      derp: forwarded().derp.packets,
    }),
  );
  totalCounter(
    registry,
    'weft_relay_forwarded_bytes_total',
    'Packet bytes forwarded, by the protocol they arrived in',
    'transport',
    () => ({
      weft: forwarded().weft.bytes,
      derp: forwarded().derp.bytes,
    }),
  );
  totalCounter(
    registry,
    'weft_relay_dropped_frames_total',
    'Frames dropped: for a node key with no connection here, at a full queue or queue budget, or from a key that is not a member (reflector)',
    'reason',
    () => {
      const s = server.stats();
      return {
        unknown_peer: s.droppedNoPeer,
        budget: s.droppedQueueFull,
        not_member: reflector.stats().notMember,
      };
    },
  );
  totalCounter(
    registry,
    'weft_relay_reflector_requests_total',
    'WireGuard packets the reflector received, by outcome',
    'result',
    () => {
      const s = reflector.stats();
      return { handshake: s.handshakes, keepalive: s.keepalives, dropped: s.dropped };
    },
  );
  if (stun !== null) {
    totalCounter(registry, 'weft_relay_stun_requests_total', 'STUN requests, by outcome', 'result', () => ({
      ...stun.stats(),
    }));
  }
  new Gauge({
    name: 'weft_relay_connections',
    help: 'Open connections (authenticated or not), by protocol',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      for (const [transport, n] of Object.entries(server.stats().connectionsByWire))
        this.set({ transport }, n);
    },
  });
  new Gauge({
    name: 'weft_relay_queued_bytes',
    help: 'Bytes queued for sending across all connections',
    registers: [registry],
    collect() {
      this.set(server.stats().queuedBytes);
    },
  });
  collectDefaultMetrics({ register: registry });
  return registry;
}

export interface MetricsListener {
  /** e.g. http://127.0.0.1:9465/metrics */
  url: string;
  close(): Promise<void>;
}

/** Serves `registry` at GET /metrics on host:port; anything else is 404. */
export function listenForScrapes(registry: Registry, host: string, port: number): Promise<MetricsListener> {
  const http = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => {
      http.off('error', reject);
      const address = http.address() as AddressInfo;
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      resolve({
        url: `http://${shown}:${address.port}/metrics`,
        close: () =>
          new Promise((done) => {
            http.close(() => done());
            // A scraper's kept-alive connection must not hold the shutdown up.
            http.closeAllConnections();
          }),
      });
    });
  });
}
