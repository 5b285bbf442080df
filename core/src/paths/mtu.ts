import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';

// The tunnel interface's MTU, chosen from what the paths to the peers allow. WireGuard wraps each
// packet in an outer IP header (20 bytes IPv4, 40 IPv6), UDP (8) and its own 32 bytes, so a packet
// of the underlay's MTU minus 60 (IPv4 outer) or 80 (IPv6 outer) still leaves unfragmented. 1280
// (IPv6's minimum) fits any path, and is kept while a peer is relayed or its path is not known.
// The local link's MTU says nothing of the links beyond it, so a larger MTU stays only once a
// don't-fragment probe of that size crossed the path to each peer (otherwise: 1280, no black hole).

export const SAFE_MTU = 1280;
/** The largest MTU the helper takes (DesiredState.interface.mtu). */
export const MAX_MTU = 9000;
export const WG_OVERHEAD = { 4: 60, 6: 80 } as const;

export interface Underlay {
  /** The MTU towards the endpoint: the route's learned path MTU, else the outgoing interface's. */
  mtu: number;
  family: 4 | 6;
  /** The outgoing interface, for the reason shown in `weft status`. */
  dev: string;
}

export interface PeerMtuPath {
  name: string;
  path: 'direct' | 'relay';
  /** The underlay towards the peer's direct endpoint; null when it could not be read. */
  underlay: Underlay | null;
  /** A don't-fragment probe of the MTU being chosen: 'ok' crossed, 'lost' did not, absent untried. */
  probe?: 'ok' | 'lost';
}

export interface MtuChoice {
  mtu: number;
  /** Why, in words, for `weft status`. */
  reason: string;
}

/** The largest MTU every online peer's path carries; SAFE_MTU when one is relayed or unknown. */
export function chooseMtu(peers: readonly PeerMtuPath[]): MtuChoice {
  if (peers.length === 0) return { mtu: SAFE_MTU, reason: 'no peer online: the size that fits any path' };
  let best: MtuChoice | null = null;
  for (const p of peers) {
    if (p.path === 'relay')
      return { mtu: SAFE_MTU, reason: `${p.name} is relayed: the size that fits any path` };
    if (p.underlay === null)
      return { mtu: SAFE_MTU, reason: `the link towards ${p.name} is unknown: the size that fits any path` };
    const overhead = WG_OVERHEAD[p.underlay.family];
    const fits = pathFits(p.underlay);
    if (fits <= SAFE_MTU)
      return {
        mtu: SAFE_MTU,
        reason: `the path to ${p.name} (${p.underlay.dev}, ${p.underlay.mtu} bytes) is too narrow for more`,
      };
    if (p.probe === 'lost')
      return {
        mtu: SAFE_MTU,
        reason: `a don't-fragment probe to ${p.name} of the larger size got no answer: the size that fits any path`,
      };
    if (best === null || fits < best.mtu) {
      best = {
        mtu: fits,
        reason:
          `direct paths; the narrowest, to ${p.name}, is ${p.underlay.mtu} bytes (${p.underlay.dev}) ` +
          `minus ${overhead} for WireGuard over IPv${p.underlay.family}`,
      };
    }
  }
  return best as MtuChoice;
}

/** The MTU a peer's direct path allows before probing: its underlay minus WireGuard's bytes. */
export function pathFits(underlay: Underlay): number {
  return Math.min(MAX_MTU, underlay.mtu - WG_OVERHEAD[underlay.family]);
}

export interface ProbeRequest {
  /** The peer's tunnel address (IPv4 or IPv6, no prefix length), routed into the tunnel, whose MTU is already `mtu`. */
  tunnelAddress: string;
  /** The peer's direct endpoint, for the outer path when the peer's filter drops ICMP. */
  endpoint: string;
  mtu: number;
  /** WireGuard's bytes around the packet on this path (60 or 80). */
  overhead: number;
}

/**
 * Sends don't-fragment pings of exactly `mtu` bytes through the tunnel to the peer; when none comes
 * back (the peer's filter may drop ICMP), pings of the outer size (`mtu` plus WireGuard's bytes) to
 * the endpoint's address answer the same question about the path. True when either got a reply.
 */
export async function probePath(req: ProbeRequest): Promise<boolean> {
  const ping = (address: string, size: number) => {
    const v6 = address.includes(':');
    const payload = size - (v6 ? 48 : 28);
    const argv = [v6 ? '-6' : '-4', '-n', '-q', '-M', 'do', '-s', String(payload), '-c', '3', '-i', '0.2'];
    argv.push('-W', '1', '-w', '2', address);
    return new Promise<boolean>((resolve) =>
      execFile('ping', argv, { timeout: 5000 }, (err) => resolve(err === null)),
    );
  };
  if (await ping(req.tunnelAddress, req.mtu)) return true;
  const outer = endpointAddress(req.endpoint);
  return outer !== null && (await ping(outer.address, req.mtu + req.overhead));
}

/** Splits a WireGuard endpoint ("198.18.0.2:41641", "[fd00::2]:41641") into its address. */
export function endpointAddress(endpoint: string): { address: string; family: 4 | 6 } | null {
  const v6 = endpoint.match(/^\[([0-9a-fA-F:.]+)\]:\d+$/);
  if (v6) return { address: v6[1] as string, family: 6 };
  const v4 = endpoint.match(/^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/);
  return v4 ? { address: v4[1] as string, family: 4 } : null;
}

/**
 * Reads `ip route get ADDR`: the outgoing interface, and the path MTU the kernel learned from
 * "fragmentation needed" answers when there is one ("cache … mtu 1400").
 */
export function parseRouteGet(out: string): { dev: string; pmtu: number | null } | null {
  const dev = out.match(/\bdev (\S+)/);
  if (!dev) return null;
  const mtu = out.match(/\bmtu (\d+)/);
  return { dev: dev[1] as string, pmtu: mtu ? Number(mtu[1]) : null };
}

/** The underlay towards a direct endpoint, as the OS routes it now; null when it cannot be read. */
export async function readUnderlay(endpoint: string): Promise<Underlay | null> {
  const addr = endpointAddress(endpoint);
  if (addr === null) return null;
  const out = await new Promise<string | null>((resolve) =>
    execFile('ip', [`-${addr.family}`, 'route', 'get', addr.address], { timeout: 2000 }, (err, stdout) =>
      resolve(err ? null : String(stdout)),
    ),
  );
  const route = out === null ? null : parseRouteGet(out);
  if (route === null || !/^[\w.@-]{1,15}$/.test(route.dev)) return null;
  const devMtu = Number((await readFile(`/sys/class/net/${route.dev}/mtu`, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(devMtu) || devMtu <= 0) return null;
  return { mtu: Math.min(devMtu, route.pmtu ?? devMtu), family: addr.family, dev: route.dev };
}

/** Probe results and underlays kept (paths times sizes asked); past it they are forgotten and asked again. */
const MAX_KEPT = 1024;
/** How long an endpoint's underlay is taken as read (netmap deltas come often; `ip` is a process). */
const UNDERLAY_TTL_MS = 30_000;
/** Peers probed at once. */
const PROBES_AT_ONCE = 16;

/** An online peer as the tracker sees it. */
export interface MtuPeer {
  name: string;
  path: 'direct' | 'relay';
  /** The WireGuard endpoint requested for it; null while none. */
  endpoint: string | null;
  /** Its first tunnel address, without prefix length. */
  address: string | null;
}

export interface MtuTrackerOptions {
  /** The online peers and their paths now. */
  peers: () => MtuPeer[];
  /** Waits until the helper applied the current state (with the chosen MTU); false if it failed. */
  applied: () => Promise<boolean>;
  /** A new choice (`mtuChanged`: its MTU differs from the last one, so the state must be re-applied). */
  onChoice: (choice: MtuChoice, mtuChanged: boolean) => void;
  readUnderlay?: (endpoint: string) => Promise<Underlay | null>;
  probePath?: (req: ProbeRequest) => Promise<boolean>;
  now?: () => number;
}

/**
 * Keeps the MTU choice current: `refresh()` (on any change of peers or paths) reads the underlays,
 * chooses, and probes the paths not yet probed at the size chosen, once the helper has applied it.
 * One refresh runs at a time; a request during a run runs once more after it.
 */
export class MtuTracker {
  choice: MtuChoice = { mtu: SAFE_MTU, reason: 'no path known yet: the size that fits any path' };
  private running: Promise<void> | null = null;
  private again = false;
  /** Probe results by "endpoint|MTU": a path is probed once per size asked of it. */
  private readonly probes = new Map<string, 'ok' | 'lost'>();
  private readonly underlays = new Map<string, { at: number; underlay: Underlay | null }>();

  constructor(private readonly opts: MtuTrackerOptions) {}

  refresh(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async run(): Promise<void> {
    do {
      this.again = false;
      const peers = await Promise.all(
        this.opts.peers().map(async (p) => ({
          ...p,
          underlay: p.path === 'direct' && p.endpoint ? await this.underlayOf(p.endpoint) : null,
        })),
      );
      // The size the local links allow, then what the probes of that size said about the paths.
      const candidate = chooseMtu(peers).mtu;
      const withProbes: PeerMtuPath[] = peers.map((p) => {
        const probe = this.probes.get(`${p.endpoint}|${candidate}`);
        return probe === undefined ? p : { ...p, probe };
      });
      this.set(chooseMtu(withProbes));
      const untried = peers.filter(
        (p, i) =>
          candidate > SAFE_MTU && withProbes[i]?.probe === undefined && p.underlay && p.endpoint && p.address,
      );
      if (untried.length === 0 || this.choice.mtu !== candidate) continue;
      // Probes of `candidate` bytes leave only once the interface has that MTU.
      if (!(await this.opts.applied())) continue;
      for (let i = 0; i < untried.length; i += PROBES_AT_ONCE) {
        await Promise.all(untried.slice(i, i + PROBES_AT_ONCE).map((p) => this.probe(p, candidate)));
      }
      this.again = true;
    } while (this.again);
  }

  private async probe(p: MtuPeer & { underlay: Underlay | null }, mtu: number): Promise<void> {
    const endpoint = p.endpoint as string;
    const ok = await (this.opts.probePath ?? probePath)({
      tunnelAddress: p.address as string,
      endpoint,
      mtu,
      overhead: WG_OVERHEAD[(p.underlay as Underlay).family],
    });
    if (this.probes.size >= MAX_KEPT) this.probes.clear();
    this.probes.set(`${endpoint}|${mtu}`, ok ? 'ok' : 'lost');
    // A router's "fragmentation needed" for the probe taught the kernel the path's MTU (and the
    // kernel then fragments the outer packets, so the probe may still cross): read it again.
    this.underlays.delete(endpoint);
  }

  /** The underlay towards an endpoint, read at most every UNDERLAY_TTL_MS. */
  private async underlayOf(endpoint: string): Promise<Underlay | null> {
    const now = (this.opts.now ?? Date.now)();
    const known = this.underlays.get(endpoint);
    if (known !== undefined && now - known.at < UNDERLAY_TTL_MS) return known.underlay;
    const underlay = await (this.opts.readUnderlay ?? readUnderlay)(endpoint);
    if (this.underlays.size >= MAX_KEPT) this.underlays.clear();
    this.underlays.set(endpoint, { at: now, underlay });
    return underlay;
  }

  private set(choice: MtuChoice): void {
    if (choice.reason === this.choice.reason) return;
    const changed = choice.mtu !== this.choice.mtu;
    this.choice = choice;
    this.opts.onChoice(choice, changed);
  }
}
