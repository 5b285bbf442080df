import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { NetmapHub } from '../netmap/hub.js';

// Every metric control exports, in one place: names, help and labels. Call sites hold one line
// (`ctx.metrics.registrations.inc(...)`); the gauges are read from the hub when scraped. Each
// running control has its own registry (tests run several in one process).

/** Latencies from a fraction of a millisecond (an indexed query) to seconds (a stalled fan-out). */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ControlMetrics {
  readonly registry = new Registry();
  private hub: NetmapHub | null = null;

  readonly registrations = new Counter({
    name: 'weft_control_registrations_total',
    help: 'Nodes authorized by a registration (new or again), by client protocol',
    labelNames: ['protocol'] as const,
    registers: [this.registry],
  });
  readonly signIns = new Counter({
    name: 'weft_control_sign_ins_total',
    help: 'Browser sign-ins that authorized a node, by identity provider',
    labelNames: ['provider'] as const,
    registers: [this.registry],
  });
  readonly httpRequests = new Counter({
    name: 'weft_control_http_requests_total',
    help: 'HTTP requests answered, by route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });
  readonly streamsAbandoned = new Counter({
    name: 'weft_control_streams_abandoned_total',
    help: 'Node streams that closed while waiting for their whole map (their node gave up on a busy control)',
    registers: [this.registry],
  });
  readonly fanOut = new Histogram({
    name: 'weft_control_fanout_seconds',
    help: 'From a change of the node table (committed here, or noticed from another process) to its delta written to each affected stream',
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  readonly dbQuery = new Histogram({
    name: 'weft_control_db_query_seconds',
    help: 'Duration of each store operation (one or a few SQL statements), by operation and outcome',
    labelNames: ['operation', 'outcome'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });

  constructor() {
    const counts = () => this.hub?.onlineCounts() ?? { online: 0, streams: 0 };
    new Gauge({
      name: 'weft_control_nodes_online',
      help: 'Nodes with a stream open to any replica',
      registers: [this.registry],
      collect() {
        this.set(counts().online);
      },
    });
    new Gauge({
      name: 'weft_control_streams_open',
      help: 'Node streams open to this replica',
      registers: [this.registry],
      collect() {
        this.set(counts().streams);
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** Reads the gauges from `hub` and times its fan-outs. */
  watch(hub: NetmapHub): void {
    this.hub = hub;
    hub.fanOut.observer = (seconds) => this.fanOut.observe(seconds);
  }
}
