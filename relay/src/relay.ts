import { type KeyPair, parseAddr, RELAY_PATH } from '@weft/protocol';
import type { RelayLimits } from './connection.js';
import { ControlFeed } from './control-feed.js';
import { Membership } from './membership.js';
import { listenForScrapes, type MetricsListener, relayMetrics } from './metrics.js';
import { ObservationStore } from './observations.js';
import { Reflector, type ReflectorOptions } from './reflector.js';
import { RelayServer } from './server.js';
import { type StunOptions, StunServer } from './stun.js';

export interface RelayOptions {
  keyPair: KeyPair;
  /** The address both the WebSocket listener and the reflector bind. */
  host: string;
  /** 0 picks a free port, for either listener. */
  port: number;
  reflectorPort: number;
  /** Answer STUN Binding requests (Tailscale clients' netcheck) on this UDP port; 0 picks one. */
  stunPort?: number;
  tls?: { cert: string | Buffer; key: string | Buffer };
  limits?: Partial<RelayLimits>;
  /**
   * Serve only the tailnet of this control server (its URL and pinned public key), which must
   * list this relay's key in its relay map. Absent: `membership`, or else every node key.
   */
  control?: { url: string; publicKey: string; cacheFile?: string };
  /** Who is served, when not from `control` (tests); absent with no `control`: everyone. */
  membership?: Membership;
  stun?: Pick<StunOptions, 'answersPerSecond' | 'answersPerSecondPerSource'>;
  reflector?: Pick<ReflectorOptions, 'handshakesPerSecond' | 'handshakesPerSecondPerSource' | 'maxNodes'>;
  log?: (line: string) => void;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one); absent: none. */
  metricsListen?: { host: string; port: number };
}

export interface RunningRelay {
  /** Where nodes connect, e.g. wss://198.18.0.1:443/relay */
  url: string;
  reflectorPort: number;
  /** The STUN port, when one was asked for. */
  stunPort: number | null;
  publicKey: string;
  /** Where Prometheus scrapes, when `metricsListen` was given. */
  metricsUrl: string | null;
  server: RelayServer;
  reflector: Reflector;
  stun: StunServer | null;
  observations: ObservationStore;
  membership: Membership;
  close(): Promise<void>;
}

/** Starts the reflector and the relay server sharing one observation store and one key. */
export async function startRelay(opts: RelayOptions): Promise<RunningRelay> {
  const observations = new ObservationStore();
  const membership = opts.control ? Membership.tailnet() : (opts.membership ?? Membership.open());
  const reflector = await Reflector.start({
    ...opts.reflector,
    privateKey: opts.keyPair.privateKey,
    host: opts.host,
    port: opts.reflectorPort,
    observations,
    membership,
    log: opts.log,
  });
  const server = new RelayServer({
    keyPair: opts.keyPair,
    reflectorPort: reflector.port,
    observations,
    membership,
    tls: opts.tls,
    limits: opts.limits,
    log: opts.log,
  });
  let port: number;
  let stun: StunServer | null = null;
  let metrics: MetricsListener | null = null;
  try {
    port = (await server.listen(opts.host, opts.port)).port;
    if (opts.stunPort !== undefined) {
      stun = await StunServer.start({ ...opts.stun, host: opts.host, port: opts.stunPort, log: opts.log });
    }
    if (opts.metricsListen) {
      const registry = relayMetrics({ server, reflector, stun });
      metrics = await listenForScrapes(registry, opts.metricsListen.host, opts.metricsListen.port);
    }
  } catch (err) {
    await Promise.all([server.close(), reflector.close(), stun?.close()]);
    throw err;
  }
  const feed = opts.control
    ? new ControlFeed({
        controlUrl: opts.control.url,
        controlKey: opts.control.publicKey,
        keyPair: opts.keyPair,
        membership,
        cacheFile: opts.control.cacheFile,
        log: opts.log,
      })
    : null;
  feed?.start();
  const host = parseAddr(opts.host)?.family === 6 ? `[${opts.host}]` : opts.host;
  return {
    url: `${opts.tls ? 'wss' : 'ws'}://${host}:${port}${RELAY_PATH}`,
    reflectorPort: reflector.port,
    stunPort: stun?.port ?? null,
    publicKey: opts.keyPair.publicKey,
    metricsUrl: metrics?.url ?? null,
    server,
    reflector,
    stun,
    observations,
    membership,
    close: async () => {
      feed?.close();
      await Promise.all([server.close(), reflector.close(), stun?.close(), metrics?.close()]);
    },
  };
}
