import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import {
  formatEndpoint,
  type NetcheckRelay,
  type PeerConfig,
  parseAddr,
  REFLECTOR_KEEPALIVE_SECONDS,
  type RelayMap,
  type RelayRegion,
} from '@weft/protocol';
import type { Logger } from '../log/logger.js';
import { RelayConnection } from './relay-client.js';

// The node's relays: one WebSocket per region of the relay map (so a peer is reachable whichever
// region it calls home), a home region picked by latency (with hysteresis, and failing over as
// soon as the home goes down), and each region's reflector as a WireGuard peer so every reflector
// sees the mapping of our WireGuard socket. Packets to peers go out through the home region;
// packets arrive from any region.

export interface RelayManagerEvents {
  /** A packet from node key `source` arrived (from any region). */
  packet: [source: string, packet: Uint8Array];
  /** Home region, connectivity or reflector peers changed. */
  change: [];
  /** The reflected endpoints changed. */
  endpoints: [];
}

export interface RelayManagerOptions {
  nodePrivateKey: string;
  nodeKey: string;
  log: Logger;
  backoff?: { baseMs?: number; capMs?: number };
  pingMs?: number;
}

interface Region {
  region: RelayRegion;
  conn: RelayConnection;
  /** The relay host's address, for its reflector (resolved from the URL). */
  ip: string | null;
  /** Left out of the reflector peers until then, so WireGuard makes a fresh handshake with it. */
  bounceUntil: number;
}

/** How long a reflector peer is left out to make WireGuard forget its session. */
const BOUNCE_MS = 1500;

/** Switch home only to a region this much faster (ratio) and by at least SWITCH_MIN_MS. */
const SWITCH_RATIO = 0.7;
const SWITCH_MIN_MS = 10;

export class RelayManager extends EventEmitter<RelayManagerEvents> {
  private readonly regions = new Map<number, Region>();
  private home: number | null = null;

  constructor(private readonly opts: RelayManagerOptions) {
    super();
  }

  get homeRegion(): RelayRegion | null {
    return this.home === null ? null : (this.regions.get(this.home)?.region ?? null);
  }

  /** True when some region is connected: peers can be relayed. */
  get available(): boolean {
    return this.home !== null;
  }

  get configured(): boolean {
    return this.regions.size > 0;
  }

  /** Follows the relay map: regions added, removed or changed are connected or closed. */
  setMap(map: RelayMap | undefined): void {
    const want = new Map((map?.regions ?? []).map((r) => [r.regionId, r]));
    for (const [id, reg] of this.regions) {
      const next = want.get(id);
      if (next && next.url === reg.region.url && next.publicKey === reg.region.publicKey) {
        reg.region = next;
        continue;
      }
      reg.conn.close();
      this.regions.delete(id);
    }
    for (const [id, region] of want) if (!this.regions.has(id)) this.add(region);
    this.pickHome();
    this.emit('change');
  }

  /** Sends through the home region (or any connected one); false when dropped. */
  send(destination: Uint8Array, packet: Uint8Array): boolean {
    const home = this.home === null ? undefined : this.regions.get(this.home);
    if (home?.conn.connected) return home.conn.send(destination, packet);
    for (const r of this.regions.values()) if (r.conn.connected) return r.conn.send(destination, packet);
    return false;
  }

  /** Reflected endpoints of our WireGuard socket, home region's first, without repeats. */
  reflectedEndpoints(): string[] {
    const out: string[] = [];
    for (const r of this.ordered()) {
      const e = r.conn.reflected;
      if (e && !out.includes(e)) out.push(e);
    }
    return out;
  }

  /**
   * Each region's reflector as a WireGuard peer, with no allowed IPs: the handshakes and
   * keepalives the reflector reads need none, and a relay is not trusted with traffic (with no
   * allowed IPs WireGuard drops whatever the relay key's holder sends through the tunnel).
   */
  reflectorPeers(): PeerConfig[] {
    const peers: PeerConfig[] = [];
    const now = performance.now();
    for (const r of this.ordered()) {
      if (r.ip === null || r.conn.reflectorPort === null || r.bounceUntil > now) continue;
      peers.push({
        publicKey: r.region.publicKey,
        allowedIPs: [],
        endpoint: formatEndpoint(
          parseAddr(r.ip) as NonNullable<ReturnType<typeof parseAddr>>,
          r.conn.reflectorPort,
        ),
        persistentKeepalive: REFLECTOR_KEEPALIVE_SECONDS,
      });
    }
    return peers;
  }

  /** Keys of the reflector peers (never a tailnet node). */
  reflectorKeys(): Set<string> {
    return new Set([...this.regions.values()].map((r) => r.region.publicKey));
  }

  report(): NetcheckRelay[] {
    return [...this.regions.values()]
      .sort((a, b) => a.region.regionId - b.region.regionId)
      .map((r) => ({
        regionId: r.region.regionId,
        name: r.region.name,
        url: r.region.url,
        connected: r.conn.connected,
        latencyMs: r.conn.latencyMs === null ? null : Math.round(r.conn.latencyMs * 100) / 100,
        reflected: r.conn.reflected,
        home: r.region.regionId === this.home,
      }));
  }

  /** Problems worth showing in status health. */
  problems(): string[] {
    if (this.regions.size === 0 || this.home !== null) return [];
    const why = [...this.regions.values()]
      .map((r) => `${r.region.name}: ${r.conn.lastError ?? 'connecting'}`)
      .join('; ');
    return [`no relay reachable (${why}); peers without a direct path are unreachable`];
  }

  close(): void {
    for (const r of this.regions.values()) r.conn.close();
    this.regions.clear();
    this.home = null;
  }

  /** Home first, then by region id. */
  private ordered(): Region[] {
    const all = [...this.regions.values()].sort((a, b) => a.region.regionId - b.region.regionId);
    const home = all.findIndex((r) => r.region.regionId === this.home);
    if (home > 0) all.unshift(...all.splice(home, 1));
    return all;
  }

  private add(region: RelayRegion): void {
    const conn = new RelayConnection({
      url: region.url,
      relayKey: region.publicKey,
      nodePrivateKey: this.opts.nodePrivateKey,
      nodeKey: this.opts.nodeKey,
      backoff: this.opts.backoff ?? { baseMs: 250, capMs: 2500 },
      pingMs: this.opts.pingMs,
    });
    const reg: Region = { region, conn, ip: null, bounceUntil: 0 };
    this.regions.set(region.regionId, reg);
    void this.resolve(reg);
    conn.on('up', () => {
      this.opts.log.info(`relay ${region.name} connected (${region.url})`);
      if (conn.reflected !== null) this.bounce(reg);
      this.pickHome();
      this.emit('change');
    });
    conn.on('down', (reason) => {
      this.opts.log.warn(`relay ${region.name} disconnected: ${reason}`);
      this.pickHome();
      this.emit('change');
    });
    conn.on('latency', () => {
      if (this.pickHome()) this.emit('change');
    });
    conn.on('endpoint', ({ endpoint }) => {
      this.opts.log.debug(`relay ${region.name} reflects our WireGuard socket at ${endpoint}`);
      this.emit('endpoints');
    });
    conn.on('packet', (source, packet) => this.emit('packet', source, packet));
    conn.start();
  }

  /**
   * After a reconnect the relay may have restarted (and forgotten us) or our network may have
   * changed, and WireGuard renews its session with the reflector only minutes from now: leave the
   * peer out briefly, so a fresh handshake shows the reflector where our socket is now.
   */
  private bounce(reg: Region): void {
    this.opts.log.info(`relay ${reg.region.name} reconnected: renewing its reflector peer`);
    reg.bounceUntil = performance.now() + BOUNCE_MS;
    setTimeout(() => {
      if (this.regions.get(reg.region.regionId) === reg) this.emit('change');
    }, BOUNCE_MS + 50);
  }

  private async resolve(reg: Region): Promise<void> {
    const host = new URL(reg.region.url).hostname.replace(/^\[|\]$/g, '');
    if (parseAddr(host)) {
      reg.ip = host;
      return;
    }
    try {
      reg.ip = (await lookup(host)).address;
      this.emit('change');
    } catch (err) {
      this.opts.log.warn(`relay ${reg.region.name}: cannot resolve ${host}: ${String(err)}`);
    }
  }

  /** Returns true when the home region changed. */
  private pickHome(): boolean {
    const up = [...this.regions.values()].filter((r) => r.conn.connected);
    const current = this.home === null ? undefined : this.regions.get(this.home);
    let best: Region | undefined;
    for (const r of up) {
      if (!best) best = r;
      else if ((r.conn.latencyMs ?? Infinity) < (best.conn.latencyMs ?? Infinity)) best = r;
    }
    let next = best;
    if (current?.conn.connected && best && best !== current) {
      const cur = current.conn.latencyMs;
      const cand = best.conn.latencyMs;
      const clearlyBetter =
        cand !== null && (cur === null || (cand < cur * SWITCH_RATIO && cur - cand >= SWITCH_MIN_MS));
      if (!clearlyBetter) next = current;
    }
    const id = next?.region.regionId ?? null;
    if (id === this.home) return false;
    this.home = id;
    this.opts.log.info(`home relay: ${next ? next.region.name : 'none'}`);
    return true;
  }
}
