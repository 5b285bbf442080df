import { EventEmitter } from 'node:events';
import type { KeyHandle } from '../state/store.js';
import { Connectivity, type ConnectivityEvents, type ConnectivityOptions } from './connectivity.js';
import type { MtuPeer } from './mtu.js';

// The paths of the control session in progress: one Connectivity for the node key in use, started
// with the session, made anew when control accepts a new key (relays deliver by node key and the
// relay connection proved the old one: peers start again on the relay and their direct paths are
// re-confirmed), closed with the session. Its events pass through, so listeners are added once.

export type PathsSessionOptions = Omit<ConnectivityOptions, 'nodePrivateKey' | 'nodeKey' | 'listenPort'>;

export class PathsSession extends EventEmitter<ConnectivityEvents> {
  /** Alive while the control stream is. */
  current: Connectivity | null = null;

  constructor(private readonly opts: PathsSessionOptions) {
    super();
  }

  start(nodeKey: KeyHandle, listenPort: number): void {
    if (this.current) return;
    const conn = new Connectivity({
      ...this.opts,
      nodePrivateKey: nodeKey.privateKey,
      nodeKey: nodeKey.publicKey,
      listenPort,
    });
    conn.on('change', () => this.emit('change'));
    conn.on('publicAddressChanged', (from, to) => this.emit('publicAddressChanged', from, to));
    conn.on('endpoints', () => this.emit('endpoints'));
    conn.on('status', () => this.emit('status'));
    this.current = conn;
    conn.netmapChanged();
  }

  /** Reconnects as a new node key, if running. */
  restart(nodeKey: KeyHandle, listenPort: number): void {
    if (!this.current) return;
    this.close();
    this.start(nodeKey, listenPort);
  }

  close(): void {
    this.current?.close();
    this.current = null;
  }

  /** The online peers and the paths to them, for the MTU. */
  mtuPeers(): MtuPeer[] {
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
