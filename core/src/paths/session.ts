import { EventEmitter } from 'node:events';
import { describeError } from '../log/logger.js';
import type { KeyHandle } from '../state/store.js';
import { Connectivity, type ConnectivityEvents, type ConnectivityOptions } from './connectivity.js';
import { type MtuChoice, type MtuPeer, MtuTracker, type MtuTrackerOptions } from './mtu.js';

// The paths of the control session in progress: one Connectivity for the node key in use, started
// with the session, made anew when control accepts a new key (relays deliver by node key and the
// relay connection proved the old one: peers start again on the relay and their direct paths are
// re-confirmed), closed with the session. Its events pass through, so listeners are added once.
// It also reports this node's endpoint candidates (when they change, and every `endpointsPollMs`),
// and keeps the interface MTU chosen from the paths (mtu.ts), re-chosen when they change.

export type PathsSessionOptions = Omit<ConnectivityOptions, 'nodePrivateKey' | 'nodeKey' | 'listenPort'> &
  Pick<MtuTrackerOptions, 'applied' | 'readUnderlay' | 'probePath'> & {
    /** Sends the candidates to control. */
    reportEndpoints: (candidates: string[]) => void;
    endpointsPollMs?: number;
  };

export interface PathsSessionEvents extends Omit<ConnectivityEvents, 'endpoints'> {
  /** A new MTU choice (`mtuChanged`: another size, so the state must be re-applied). */
  mtu: [mtuChanged: boolean];
}

export class PathsSession extends EventEmitter<PathsSessionEvents> {
  /** Alive while the control stream is. */
  current: Connectivity | null = null;
  private readonly mtuTracker: MtuTracker;
  private endpointsTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: PathsSessionOptions) {
    super();
    this.mtuTracker = new MtuTracker({
      peers: () => this.mtuPeers(),
      applied: opts.applied,
      onChoice: (choice, mtuChanged) => {
        if (mtuChanged) opts.log.info(`tunnel MTU ${choice.mtu}: ${choice.reason}`);
        this.emit('mtu', mtuChanged);
      },
      readUnderlay: opts.readUnderlay,
      probePath: opts.probePath,
    });
  }

  /** The interface MTU in force and why. */
  get mtu(): MtuChoice {
    return this.mtuTracker.choice;
  }

  /** Starts for `nodeKey` (none yet: nothing to start). */
  start(nodeKey: KeyHandle | null, listenPort: number): void {
    if (this.current || !nodeKey) return;
    const conn = new Connectivity({
      ...this.opts,
      nodePrivateKey: nodeKey.privateKey,
      nodeKey: nodeKey.publicKey,
      listenPort,
    });
    conn.on('change', () => {
      this.emit('change');
      this.refreshMtu();
    });
    conn.on('publicAddressChanged', (from, to) => {
      this.opts.log.info(`public address changed (${from} → ${to}): reconnecting to control`);
      this.emit('publicAddressChanged', from, to);
    });
    conn.on('endpoints', () => this.reportEndpoints());
    conn.on('status', () => {
      this.refreshMtu();
      this.emit('status');
    });
    this.current = conn;
    conn.netmapChanged();
    this.endpointsTimer = setInterval(() => this.reportEndpoints(), this.opts.endpointsPollMs ?? 5_000);
  }

  reportEndpoints(): void {
    if (this.current) this.opts.reportEndpoints(this.current.candidates());
  }

  /** Reconnects as a new node key, if running. */
  restart(nodeKey: KeyHandle | null, listenPort: number): void {
    if (!this.current) return;
    this.close();
    this.start(nodeKey, listenPort);
  }

  close(): void {
    if (this.endpointsTimer) clearInterval(this.endpointsTimer);
    this.endpointsTimer = null;
    this.current?.close();
    this.current = null;
  }

  /** The engine's netmap changed: peers and their paths follow. */
  netmapChanged(): void {
    this.current?.netmapChanged();
    this.refreshMtu();
  }

  private refreshMtu(): void {
    this.mtuTracker.refresh().catch((err) => this.opts.log.debug(`choosing the MTU: ${describeError(err)}`));
  }

  /** The online peers and the paths to them, for the MTU. */
  private mtuPeers(): MtuPeer[] {
    const conn = this.current;
    return (this.opts.netmap()?.peers ?? [])
      .filter((p) => p.online)
      .map((p) => {
        const endpoint = conn?.endpointFor(p) ?? null;
        return {
          name: p.name,
          path: conn ? conn.peerPath(p.nodeKey, endpoint).path : 'relay',
          endpoint,
          address: p.addresses[0]?.replace(/\/\d+$/, '') ?? null,
        };
      });
  }
}
