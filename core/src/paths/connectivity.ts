import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { networkInterfaces } from 'node:os';
import {
  CALL_ME_MAYBE_MAX_CANDIDATES,
  type InterfaceStatus,
  isCallMeMaybe,
  type NetcheckReport,
  type NetMap,
  type NodeView,
  type PeerConfig,
  parseAddr,
  parseEndpoint,
  parsePrefix,
  prefixContains,
  type WgPeerStatus,
} from '@weft/protocol';
import { describeError, type Logger } from '../log/logger.js';
import { CallMeMaybeChannel } from './call-me-maybe.js';
import { type AddressSource, localEndpoints, osAddresses } from './local-endpoints.js';
import { PortMapper, type PortMapperOptions } from './port-mapping/mapper.js';
import { RelayManager } from './relay-manager.js';
import { RelayProxy } from './relay-proxy.js';
import { isLoopbackEndpoint, PathManager, type PathPeer, type PathTiming } from './selection.js';

// Everything that gets packets to peers besides WireGuard itself: the relays (and their
// reflectors), the loopback relay proxy, and path selection driven by polling the interface.
// The engine asks it for each peer's endpoint and for the reflector peers when it computes the
// desired state, and re-applies when it says 'change'.

export interface ConnectivityEvents {
  /** Requested endpoints or reflector peers changed: the desired state must be re-applied. */
  change: [];
  /** Candidates to report to control changed (a reflector saw a new mapping). */
  endpoints: [];
  /**
   * Our public address changed (a new lease, another network): connections through the old one
   * are dead even if no packet said so.
   */
  publicAddressChanged: [from: string, to: string];
  /** Something shown in status changed (a path, the home relay). */
  status: [];
}

export interface ConnectivityOptions {
  nodePrivateKey: string;
  nodeKey: string;
  listenPort: number;
  log: Logger;
  /** The engine's netmap, read when needed: the engine is its one owner. */
  netmap: () => NetMap | null;
  /** The tunnel interface, whose own addresses are never candidates. */
  interfaceName: string;
  /** This machine's addresses (candidates on the LAN); defaults to the OS's. */
  addressSource?: AddressSource;
  /** Reads the interface through the helper; null when it cannot be read now. */
  readInterface: () => Promise<InterfaceStatus | null>;
  pathTiming?: Partial<PathTiming>;
  /** Poll period while no trial runs, and while one does. */
  pollMs?: number;
  fastPollMs?: number;
  relayBackoff?: { baseMs?: number; capMs?: number };
  relayPingMs?: number;
  /** Where pokes go on the peer (nothing needs to listen: WireGuard carries it either way). */
  pokePort?: number;
  /** Local prefixes (for preferring same-LAN candidates); defaults to the OS's. */
  localPrefixes?: () => string[];
  /** Port mapping on the default gateway (PCP, NAT-PMP); on by default, false turns it off. */
  portMapping?: PortMappingOptions | false;
}

export type PortMappingOptions = Omit<PortMapperOptions, 'listenPort' | 'onChange'>;

export interface PeerPathStatus {
  path: 'direct' | 'relay';
  relayRegion: string | null;
  /** Why relayed (null when direct): what stands in the way of a direct path, as far as we know. */
  relayReason: string | null;
}

export const POKE_PORT = 9;
const POKE = Buffer.from('weft-path-probe');

export class Connectivity extends EventEmitter<ConnectivityEvents> {
  readonly relays: RelayManager;
  readonly proxy: RelayProxy;
  readonly paths: PathManager;
  private readonly calls: CallMeMaybeChannel;
  private readonly mapper: PortMapper | null;
  private pokeSocket4: Socket | null = null;
  private pokeSocket6: Socket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private closed = false;
  private lastWg: WgPeerStatus[] = [];
  /** The public addresses the reflectors last saw, sorted and space-separated ('' before any). */
  private publicIps = '';
  private statusKey = '';
  /** The candidates peers were last asked to call (space-separated). */
  private askedWith = '';

  constructor(private readonly opts: ConnectivityOptions) {
    super();
    this.relays = new RelayManager({
      nodePrivateKey: opts.nodePrivateKey,
      nodeKey: opts.nodeKey,
      log: opts.log,
      backoff: opts.relayBackoff,
      pingMs: opts.relayPingMs,
    });
    this.proxy = new RelayProxy({ send: (dst, pkt) => this.relays.send(dst, pkt) });
    this.proxy.setWireGuardPort(opts.listenPort);
    this.calls = new CallMeMaybeChannel({
      nodePrivateKey: opts.nodePrivateKey,
      nodeKey: opts.nodeKey,
      send: (dst, pkt) => this.relays.send(dst, pkt),
      log: opts.log,
    });
    this.paths = new PathManager({
      timing: opts.pathTiming,
      // While relays are configured the proxy stays the fallback even when they are all down for
      // a moment: nothing has to be re-applied when they come back, so relayed peers recover as
      // soon as the WebSocket does.
      relayEndpoint: (key) => (this.relays.configured ? this.proxy.endpointFor(key) : undefined),
      poke: (key) => this.poke(key),
      selfKey: opts.nodeKey,
      onHold: (key, hold) => this.proxy.hold(key, hold),
      onNewCandidates: (key) => {
        if (this.opts.netmap()?.peers.find((p) => p.nodeKey === key)?.online) this.callMeMaybe(key);
      },
      onTransition: (key, from, to, why, endpoint) => {
        const name = this.opts.netmap()?.peers.find((p) => p.nodeKey === key)?.name ?? key.slice(0, 8);
        const line = `path to ${name}: ${from} → ${to}${endpoint ? ` ${endpoint}` : ''} (${why})`;
        if (to === 'trying' && why === 'trial') opts.log.debug(line);
        else opts.log.info(line);
      },
    });
    this.relays.on('packet', (source, packet) => {
      if (isCallMeMaybe(packet)) this.calledBy(source, packet);
      else this.proxy.deliver(source, packet);
    });
    // Reflector peers may have changed too: always re-derive the desired state (cheap when equal).
    this.relays.on('change', () => {
      this.paths.refresh();
      this.changed(true);
    });
    this.relays.on('endpoints', () => {
      const ips = [...new Set(this.reflectedEndpoints().map((e) => e.replace(/:\d+$/, '')))].sort().join(' ');
      const known = this.publicIps.split(' ');
      if (this.publicIps !== '' && ips.split(' ').some((ip) => ip !== '' && !known.includes(ip)))
        this.emit('publicAddressChanged', this.publicIps, ips);
      if (ips !== '') this.publicIps = ips;
      this.emit('endpoints');
      this.candidatesChanged();
    });
    this.proxy.on('change', () => this.changed(this.paths.refresh()));
    this.mapper =
      opts.portMapping === false
        ? null
        : new PortMapper({
            ...opts.portMapping,
            listenPort: opts.listenPort,
            onChange: (mapping) => {
              opts.log.info(
                mapping ? `port mapped: ${mapping.endpoint} (${mapping.protocol})` : 'port mapping gone',
              );
              this.emit('endpoints');
              this.candidatesChanged();
              this.emit('status');
            },
          });
    this.mapper?.start().catch((err) => opts.log.debug(`port mapping: ${describeError(err)}`));
    this.schedule(0);
  }

  /** Follows the engine's new netmap: relay regions, proxy sockets, peers and their candidates. */
  netmapChanged(): void {
    const netmap = this.opts.netmap();
    if (!netmap) return;
    this.relays.setMap(netmap.relayMap);
    const peers = netmap.peers.filter((p) => p.nodeKey !== netmap.self.nodeKey);
    this.proxy.setPeers(this.relays.configured ? peers.map((p) => p.nodeKey) : []);
    const changed = this.paths.setPeers(
      peers.map((p) => this.pathPeer(p)),
      performance.now(),
    );
    this.changed(changed);
  }

  /**
   * Our candidates changed (a reflector saw a new mapping: a new network, or the first one): every
   * relayed peer is tried at once and asked to try us, instead of waiting out a back-off.
   */
  private candidatesChanged(): void {
    // What peers can use: mappings that vary by destination (they do after every relay reconnect
    // behind an endpoint-dependent NAT) are no change worth a trial, whose opening takes our
    // traffic off the relay for a moment.
    const usable = this.candidates();
    const varying = perDestinationAddresses(usable);
    const candidates = usable.filter((e) => !varying.has(addressOf(e))).join(' ');
    if (candidates === this.askedWith || !this.knowsPublicEndpoint()) return;
    this.askedWith = candidates;
    for (const p of this.opts.netmap()?.peers ?? [])
      if (p.kind !== 'tailscale' && p.online) this.callMeMaybe(p.nodeKey);
    this.trialsChanged(this.paths.retryAll(performance.now()));
  }

  /** Asks a peer over the relay to try its direct path to us now. */
  private callMeMaybe(key: string): void {
    // Not before a reflector has seen our mapping (or the gateway mapped a port): the peer would
    // only try our LAN addresses.
    if (!this.knowsPublicEndpoint()) return;
    const candidates = this.candidates();
    if (this.calls.ask(key, candidates.slice(0, CALL_ME_MAYBE_MAX_CANDIDATES)))
      this.opts.log.debug(`asked ${key.slice(0, 8)} to call: ${candidates.join(' ')}`);
  }

  /** A call-me-maybe from a peer: try it now (it is trying us). */
  private calledBy(source: string, packet: Uint8Array): void {
    const candidates = this.calls.receive(source, packet);
    if (candidates === null) return;
    const ordered = orderCandidates(candidates, this.localPrefixes(), { ipv6: this.hasIpv6() });
    this.trialsChanged(this.paths.callMeMaybe(source, ordered, performance.now(), candidates));
  }

  /** Trials may have started: apply, and poll fast from now on. */
  private trialsChanged(requestChanged: boolean): void {
    this.changed(requestChanged);
    if (this.paths.busy && !this.polling) this.schedule(0);
  }

  /** The WireGuard endpoint to request for a peer. */
  endpointFor(peer: NodeView): string | undefined {
    return this.paths.endpointFor(peer.nodeKey);
  }

  reflectorPeers(): PeerConfig[] {
    return this.relays.reflectorPeers();
  }

  reflectedEndpoints(): string[] {
    return this.relays.reflectedEndpoints();
  }

  private knowsPublicEndpoint(): boolean {
    return this.mapper?.mapping != null || this.reflectedEndpoints().length > 0;
  }

  /**
   * The candidates to report to control: the gateway's port mapping first, then reflected
   * mappings, then this machine's own. Peers try them in this order (after same-LAN ones).
   */
  candidates(): string[] {
    const mapped = this.mapper?.mapping?.endpoint;
    let reflected = this.reflectedEndpoints();
    // Behind the gateway that mapped, the reflected ports of its address are the NAT's own (per
    // destination, behind an endpoint-dependent NAT): a peer would see one address with several
    // ports and leave them all out, the mapping with them. The mapping stands for that address.
    if (mapped) reflected = [mapped, ...reflected.filter((e) => addressOf(e) !== addressOf(mapped))];
    return [...new Set([...reflected, ...this.localEndpoints()])];
  }

  peerPath(key: string, endpoint: string | null): PeerPathStatus {
    const info = this.paths.info(key);
    const home = this.relays.homeRegion?.name ?? null;
    const direct = { path: 'direct', relayRegion: null, relayReason: null } as const;
    if (info?.mode === 'direct') return direct;
    // Without a relay, whatever endpoint WireGuard uses is direct.
    if (!this.relays.configured && endpoint !== null && !isLoopbackEndpoint(endpoint)) return direct;
    return { path: 'relay', relayRegion: home, relayReason: this.relayReason(key) };
  }

  /** What stands in the way of a direct path to a relayed peer, from what both ends reported. */
  private relayReason(key: string): string {
    const peer = this.opts.netmap()?.peers.find((p) => p.nodeKey === key);
    if (peer?.kind === 'tailscale') return 'a Tailscale client is reached directly only';
    const mine = this.netcheck();
    const why: string[] = [];
    if (mine.udp === false) why.push('UDP is blocked on this network');
    const mapping = this.mapper?.mapping;
    // A port mapping bypasses our NAT's own mappings, per destination or not.
    if (mine.mappingVariesByDestination && !mapping) why.push('this node’s NAT maps per destination');
    if (peer && perDestinationAddresses(peer.endpoints).size > 0) why.push('peer’s NAT maps per destination');
    if (peer && peer.endpoints.length === 0) why.push('peer reported no direct address');
    if (why.length > 0) return why.join('; ');
    const mapped = mapping ? ` (our gateway maps ${mapping.endpoint} by ${mapping.protocol})` : '';
    return this.paths.info(key)?.mode === 'trying'
      ? `trying a direct path${mapped}`
      : `no direct candidate answered yet${mapped} (retrying with back-off)`;
  }

  problems(): string[] {
    return this.relays.problems();
  }

  /** What `weft netcheck` prints: reflected mappings, UDP, relays and their latency. */
  netcheck(): NetcheckReport {
    const relays = this.relays.report();
    const reflected = this.relays.reflectedEndpoints();
    const reflectorSeen = this.lastWg.some(
      (p) => this.relays.reflectorKeys().has(p.publicKey) && p.latestHandshake !== null,
    );
    const seen = relays.filter((r) => r.reflected !== null).map((r) => r.reflected as string);
    return {
      udp: relays.length === 0 ? null : reflected.length > 0 || reflectorSeen,
      reflected,
      mappingVariesByDestination: seen.length < 2 ? null : new Set(seen).size > 1,
      local: this.localEndpoints(),
      portMapping: {
        answered: this.mapper?.answered ?? null,
        endpoint: this.mapper?.mapping?.endpoint ?? null,
      },
      homeRegion: this.relays.homeRegion?.name ?? null,
      relays,
    };
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.relays.close();
    this.proxy.close();
    this.pokeSocket4?.close();
    this.pokeSocket6?.close();
    // Best effort: the gateway drops the mapping at its lifetime's end anyway.
    this.mapper?.stop().catch((err) => this.opts.log.debug(`port mapping delete: ${describeError(err)}`));
  }

  private localEndpoints(): string[] {
    const { addressSource = osAddresses, interfaceName, listenPort } = this.opts;
    return localEndpoints(addressSource, interfaceName, listenPort);
  }

  private pathPeer(p: NodeView): PathPeer {
    return {
      key: p.nodeKey,
      candidates: orderCandidates(p.endpoints, this.localPrefixes(), { ipv6: this.hasIpv6() }),
      viaRelay: p.kind !== 'tailscale',
    };
  }

  /** Whether this host has an IPv6 address a peer could reach (not link-local, not the tunnel's). */
  private hasIpv6(): boolean {
    return this.localEndpoints().some((e) => e.startsWith('['));
  }

  private localPrefixes(): string[] {
    if (this.opts.localPrefixes) return this.opts.localPrefixes();
    return Object.values(networkInterfaces()).flatMap((addrs) =>
      (addrs ?? []).filter((a) => !a.internal && a.cidr).map((a) => a.cidr as string),
    );
  }

  private changed(requestChanged: boolean): void {
    if (requestChanged) this.emit('change');
    const key = JSON.stringify([
      this.relays.homeRegion?.regionId ?? null,
      this.relays.available,
      ...(this.opts.netmap()?.peers ?? []).map((p) => this.paths.info(p.nodeKey)?.mode),
    ]);
    if (key !== this.statusKey) {
      this.statusKey = key;
      this.emit('status');
    }
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.poll(), ms);
  }

  private async poll(): Promise<void> {
    if (this.closed || this.polling) return;
    this.polling = true;
    try {
      // Without relays there is nothing to choose (each peer keeps its first candidate): no polling,
      // no pokes.
      if ((this.opts.netmap()?.peers.length ?? 0) > 0 && this.relays.configured) {
        const iface = await this.opts.readInterface();
        if (iface?.exists) {
          this.lastWg = iface.peers;
          this.changed(this.paths.observe(iface.peers, performance.now()));
        } else {
          this.changed(this.paths.tick(performance.now()));
        }
      }
    } catch (err) {
      this.opts.log.debug(`path poll: ${describeError(err)}`);
    } finally {
      this.polling = false;
      this.schedule(this.paths.busy ? (this.opts.fastPollMs ?? 100) : (this.opts.pollMs ?? 1000));
    }
  }

  /** A datagram into the tunnel to the peer: WireGuard encrypts it and sends it to the endpoint. */
  private poke(key: string): void {
    const peer = this.opts.netmap()?.peers.find((p) => p.nodeKey === key);
    if (!peer) return;
    const addrs = peer.addresses.map((a) => a.replace(/\/\d+$/, ''));
    const v4 = addrs.find((a) => parseAddr(a)?.family === 4);
    const target = v4 ?? addrs.find((a) => parseAddr(a)?.family === 6);
    if (!target) return;
    if (v4 && !this.pokeSocket4) this.pokeSocket4 = this.pokeSocket('udp4');
    if (!v4 && !this.pokeSocket6) this.pokeSocket6 = this.pokeSocket('udp6');
    const socket = (v4 ? this.pokeSocket4 : this.pokeSocket6) as Socket;
    socket.send(POKE, this.opts.pokePort ?? POKE_PORT, target, () => {});
  }

  private pokeSocket(type: 'udp4' | 'udp6'): Socket {
    const s = createSocket({ type });
    s.on('error', (err) => this.opts.log.debug(`poke socket: ${describeError(err)}`));
    s.unref();
    return s;
  }
}

/**
 * Candidates in the order to try them: those on a LAN this host is on first (same network, no
 * NAT in between), then, when this host has IPv6 itself (`ipv6`), the peer's IPv6 ones, then the
 * rest as the peer reported them (its reflected mappings first).
 * One address reflected with different ports by two reflectors is an endpoint-dependent NAT:
 * its mappings are good for the reflectors only, so they are left out (sending to them would
 * only swallow traffic for a trial window). Such a peer still gets a direct path to us when we
 * have no NAT, or an endpoint-independent one that lets it in: its own trials open it.
 */
export function orderCandidates(
  endpoints: readonly string[],
  localPrefixes: readonly string[],
  opts: { ipv6?: boolean } = {},
): string[] {
  const prefixes = localPrefixes.flatMap((t) => {
    const p = parsePrefix(t);
    return p && p.bits > 0 ? [p] : [];
  });
  const near: string[] = [];
  const far: string[] = [];
  for (const e of endpoints) {
    const ep = parseEndpoint(e);
    if (!ep || near.includes(e) || far.includes(e)) continue;
    if (prefixes.some((p) => p.addr.family === ep.addr.family && prefixContains(p, ep.addr))) near.push(e);
    else far.push(e);
  }
  const varying = perDestinationAddresses(far);
  const usable = far.filter((e) => !varying.has(addressOf(e)));
  if (!opts.ipv6) return [...near, ...usable];
  // Both ends have IPv6: there is no NAT on that path (at most a stateful firewall, which a
  // simultaneous send opens), so it goes direct whatever the IPv4 NATs are. Tried first.
  const v6 = usable.filter((e) => e.startsWith('['));
  return [...near, ...v6, ...usable.filter((e) => !e.startsWith('['))];
}

/**
 * The addresses a peer reported with more than one port: reflectors saw its mapping change with
 * the destination (an endpoint-dependent NAT). Its own addresses all carry the one listen port.
 */
function addressOf(endpoint: string): string {
  return endpoint.slice(0, endpoint.lastIndexOf(':'));
}

export function perDestinationAddresses(endpoints: readonly string[]): Set<string> {
  const ports = new Map<string, Set<number>>();
  for (const e of endpoints) {
    const ep = parseEndpoint(e);
    if (!ep) continue;
    const ip = addressOf(e);
    ports.set(ip, (ports.get(ip) ?? new Set()).add(ep.port));
  }
  return new Set([...ports].filter(([, p]) => p.size > 1).map(([ip]) => ip));
}
