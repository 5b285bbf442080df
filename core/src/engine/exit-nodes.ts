import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import {
  type DesiredState,
  EXIT_ROUTE_SHARE,
  EXIT_ROUTES,
  type ExitNodeInfo,
  type ExitNodeList,
  exitRouteFamilies,
  type Family,
  familyBits,
  formatPrefix,
  maskAddr,
  type NetMap,
  type NodeView,
  type Prefs,
  parseAddr,
  parsePrefix,
  prefixContains,
  type Status,
} from '@weft/protocol';
import { WeftError } from '../errors.js';

// Exit nodes and subnet routes, engine side. Pure functions turn the netmap and the user's choices
// into the routing parts of the helper's desired state (which peer carries 0.0.0.0/0 and ::/0,
// which subnet routes go into the tunnel, the router role, the exit-node bypass and allowed LAN) and
// into the status fields; the rest resolves the servers that must stay outside the tunnel and
// measures latency to exit nodes, and ExitNodeState keeps both for the engine.

const EXIT = new Set(EXIT_ROUTES);

/** What this node offers control: its subnets, and 0.0.0.0/0 + ::/0 as an exit node. */
export function advertisedRoutes(p: Prefs): string[] {
  return [...new Set([...p.advertiseRoutes.map(canonical), ...(p.advertiseExitNode ? EXIT_ROUTES : [])])];
}

/** What the desired state needs besides the netmap and the prefs: facts about this machine. */
export interface RouteInputs {
  prefs: Prefs;
  /** Prefixes of the networks this machine is on (never routed into the tunnel). */
  localPrefixes: string[];
  /** Control and relay servers' addresses as /32 and /128: reached outside the tunnel. */
  bypass: string[];
}

function canonical(route: string): string {
  const p = parsePrefix(route);
  return p === null ? route : formatPrefix({ addr: maskAddr(p.addr, p.bits), bits: p.bits });
}

/** A peer's approved routes (allowedIPs beyond its own addresses), split into subnets and exit. */
function routesOf(peer: NodeView): { subnets: string[]; exit: string[] } {
  const own = new Set(peer.addresses.map(canonical));
  const extra = peer.allowedIPs.map(canonical).filter((r) => !own.has(r));
  return { subnets: extra.filter((r) => !EXIT.has(r)), exit: extra.filter((r) => EXIT.has(r)) };
}

/**
 * Refuses an exit node the netmap does not offer this node, with a clear WeftError; null (none)
 * and undefined (no change asked) pass.
 */
export function checkExitNodeChoice(netmap: NetMap | null, id: string | null | undefined): void {
  if (id === undefined || id === null) return;
  if (netmap && id === netmap.self.id) {
    throw new WeftError('invalid-request', 'this node cannot be its own exit node');
  }
  const peer = netmap?.peers.find((p) => p.id === id);
  if (!peer) throw new WeftError('invalid-request', `no peer with id ${id} in the tailnet`);
  if (!peer.exitNodeOption) {
    throw new WeftError(
      'conflict',
      `${peer.name} does not offer an exit node to this node (it must advertise one, and an admin or the policy approve it)`,
    );
  }
}

/** The route choices in one line, for the log. */
export function describeRoutes(p: Prefs): string {
  const allowLan = p.exitNodeId ? ` (allow LAN ${p.exitNodeAllowLan ? 'on' : 'off'})` : '';
  return `exit node ${p.exitNodeId ?? 'none'}${allowLan}, advertising ${advertisedRoutes(p).join(', ') || 'nothing'}, accept routes ${p.acceptRoutes ? 'on' : 'off'}`;
}

/** The peer offering the exit node `id`, if the netmap offers it to us. */
export function exitPeer(netmap: NetMap, id: string | null): NodeView | undefined {
  if (id === null) return undefined;
  const peer = netmap.peers.find((p) => p.id === id);
  return peer?.exitNodeOption && routesOf(peer).exit.length > 0 ? peer : undefined;
}

/** This node's approved routes it still offers: what its helper forwards (the router role). */
export function ownRoutes(netmap: NetMap, prefs: Prefs): string[] {
  const offered = new Set(advertisedRoutes(prefs));
  const { subnets, exit } = routesOf(netmap.self);
  return [...subnets, ...exit].filter((r) => offered.has(r));
}

/**
 * The routing parts of the desired state, on top of `state` (the tunnel to every peer):
 * - peers' approved subnets (with accept-routes) in their allowedIPs and routed into the tunnel,
 *   except subnets this machine is on itself (the helper never takes over an existing route);
 * - the chosen exit node's 0.0.0.0/0 and ::/0 in its allowedIPs (never in `routes`), and
 *   `exitNode` with the allowed LAN and the servers to bypass. A chosen exit node the netmap does
 *   not offer (offline for good, unapproved) still sets `exitNode`: internet traffic is then
 *   blocked, never sent in the clear;
 * - `router` with this node's approved routes, masqueraded, when it serves any.
 */
export function applyRoutes(state: DesiredState, netmap: NetMap, inp: RouteInputs): DesiredState {
  const { prefs } = inp;
  const mine = ownRoutes(netmap, prefs);
  const local = new Set(inp.localPrefixes.map(canonical));
  const exit = exitPeer(netmap, prefs.exitNodeId);
  const routed = new Set<string>();
  const exitBudget = new ExitRouteBudget(state.routes);
  // Per peer: every approved route it offers (out of allowedIPs unless wanted), and those wanted.
  const offeredByKey = new Map<string, Set<string>>();
  const extraByKey = new Map<string, string[]>();
  for (const peer of [...netmap.peers].sort((a, b) => (a.nodeKey < b.nodeKey ? -1 : 1))) {
    const { subnets, exit: exitRoutes } = routesOf(peer);
    offeredByKey.set(peer.nodeKey, new Set([...subnets, ...exitRoutes]));
    const extra: string[] = [];
    if (prefs.acceptRoutes) {
      for (const r of subnets) {
        // One peer per prefix (WireGuard holds one); control sends each subnet's primary only.
        if (local.has(r) || mine.includes(r) || routed.has(r)) continue;
        // Subnets that would make the routes an exit route (a /1 pair, say) only come through the
        // exit-node path: the helper refuses them in `routes`, and would refuse the whole state.
        if (!exitBudget.fits(r, () => [...state.routes, ...routed])) continue;
        routed.add(r);
        extra.push(r);
      }
    }
    if (exit && peer.id === exit.id) extra.push(...exitRoutes);
    if (extra.length > 0) extraByKey.set(peer.nodeKey, extra);
  }
  const peers = state.peers.map((p) => {
    const offered = offeredByKey.get(p.publicKey);
    if (!offered || offered.size === 0) return p;
    const extra = extraByKey.get(p.publicKey) ?? [];
    return { ...p, allowedIPs: [...p.allowedIPs.filter((r) => !offered.has(canonical(r))), ...extra] };
  });
  const routes = [...state.routes, ...[...routed].filter((r) => !state.routes.includes(r))];
  const next: DesiredState = { ...state, peers, routes };
  if (mine.length > 0) next.router = { routes: mine, masquerade: true };
  if (prefs.exitNodeId !== null && prefs.exitNodeId !== netmap.self.id) {
    next.exitNode = {
      allowedLan: prefs.exitNodeAllowLan ? lanPrefixesOnly(inp.localPrefixes) : [],
      bypass: inp.bypass,
    };
  }
  return next;
}

/**
 * Keeps a growing set of routes short of an exit route (protocol/src/exit-route.ts). The sizes are
 * summed as routes are added; only when that sum (which overlaps can only inflate) passes the share
 * is the exact union computed, so the usual case stays linear.
 */
class ExitRouteBudget {
  private readonly sum: Record<Family, bigint> = { 4: 0n, 6: 0n };

  constructor(initial: readonly string[]) {
    for (const r of initial) this.add(r);
  }

  /** Whether `r` can join the routes so far (`current`) without making them an exit route; adds it if so. */
  fits(r: string, current: () => string[]): boolean {
    const p = parsePrefix(r);
    if (p === null) return false;
    const family = p.addr.family;
    const space = 1n << BigInt(familyBits(family));
    const size = 1n << BigInt(familyBits(family) - p.bits);
    if (
      (this.sum[family] + size) * EXIT_ROUTE_SHARE > space &&
      exitRouteFamilies([...current(), r]).length > 0
    )
      return false;
    this.sum[family] += size;
    return true;
  }

  private add(r: string): void {
    const p = parsePrefix(r);
    if (p !== null) this.sum[p.addr.family] += 1n << BigInt(familyBits(p.addr.family) - p.bits);
  }
}

/** The local prefixes worth keeping reachable with allow-LAN (not host routes). */
function lanPrefixesOnly(prefixes: string[]): string[] {
  return [...new Set(prefixes.map(canonical))].filter((p) => {
    const pp = parsePrefix(p);
    return pp !== null && pp.bits > 0 && pp.bits < (pp.addr.family === 4 ? 32 : 128);
  });
}

const NOT_LAN = ['127.0.0.0/8', '169.254.0.0/16', '::1/128', 'fe80::/10'];

/**
 * The prefixes of the networks this machine is directly on, from its interfaces (not the tunnel's,
 * not loopback or link-local, nothing inside the tailnet's own ranges).
 */
export function localPrefixes(
  source: () => Array<{ iface: string; address: string; cidr?: string | null }>,
  tunnelInterface: string,
  tailnetRanges: readonly string[],
): string[] {
  const skip = [...NOT_LAN, ...tailnetRanges].flatMap((t) => parsePrefix(t) ?? []);
  const out = new Set<string>();
  for (const { iface, address, cidr } of source()) {
    if (iface === tunnelInterface || !cidr) continue;
    const addr = parseAddr(address);
    const p = parsePrefix(cidr);
    if (!addr || !p || skip.some((s) => prefixContains(s, addr))) continue;
    out.add(formatPrefix({ addr: maskAddr(p.addr, p.bits), bits: p.bits }));
  }
  return [...out].sort();
}

/** This machine's addresses with their prefixes, from `os.networkInterfaces()`. */
export function osInterfacePrefixes(): Array<{ iface: string; address: string; cidr: string | null }> {
  return Object.entries(networkInterfaces()).flatMap(([iface, list]) =>
    (list ?? []).filter((a) => !a.internal).map((a) => ({ iface, address: a.address, cidr: a.cidr })),
  );
}

/** Adds the routing fields to a Status: exit-node options and choice, latencies, routes, prefs. */
export function routeStatus(
  status: Status,
  netmap: NetMap | null,
  prefs: Prefs,
  latency: ReadonlyMap<string, number | null>,
): Status {
  const byId = new Map((netmap?.peers ?? []).map((p) => [p.id, p]));
  const peers = status.peers.map((s) => {
    const p = byId.get(s.id);
    if (!p) return s;
    const { subnets, exit } = routesOf(p);
    const option = p.exitNodeOption === true && exit.length > 0;
    const ms = latency.get(s.id);
    return {
      ...s,
      exitNodeOption: option,
      exitNode: option && prefs.exitNodeId === s.id,
      ...(ms !== undefined ? { latencyMs: ms } : {}),
      ...(prefs.acceptRoutes && subnets.length > 0 ? { routes: subnets } : {}),
    };
  });
  return {
    ...status,
    peers,
    exitNode: prefs.exitNodeId === null ? null : { id: prefs.exitNodeId, allowLan: prefs.exitNodeAllowLan },
    recommendedExitNodeId: recommend(
      peers.filter((p) => p.exitNodeOption),
      latency,
    ),
    prefs: {
      exitNodeAllowLan: prefs.exitNodeAllowLan,
      advertiseExitNode: prefs.advertiseExitNode,
      advertiseRoutes: prefs.advertiseRoutes,
      useTailnetDns: prefs.useTailnetDns,
    },
  };
}

/** Why the chosen exit node does not carry traffic, if it does not (a health line). */
export function exitNodeProblem(netmap: NetMap | null, prefs: Prefs): string | null {
  if (prefs.exitNodeId === null || netmap === null) return null;
  const peer = netmap.peers.find((p) => p.id === prefs.exitNodeId);
  const name = peer?.name ?? prefs.exitNodeId;
  const blocked = `internet traffic is blocked until it is back (or choose another: weft set --exit-node=NAME, or none: --exit-node=)`;
  if (!exitPeer(netmap, prefs.exitNodeId)) return `exit node ${name} is not available: ${blocked}`;
  if (peer && !peer.online) return `exit node ${name} is offline: ${blocked}`;
  return null;
}

/** The online exit node with the lowest measured latency (ties: by name); null when none answered. */
export function recommend(
  options: ReadonlyArray<{ id: string; name: string; online: boolean }>,
  latency: ReadonlyMap<string, number | null>,
): string | null {
  let best: { id: string; name: string; ms: number } | null = null;
  for (const o of options) {
    const ms = latency.get(o.id);
    if (!o.online || ms === undefined || ms === null) continue;
    if (!best || ms < best.ms || (ms === best.ms && o.name < best.name))
      best = { id: o.id, name: o.name, ms };
  }
  return best?.id ?? null;
}

/** The exit nodes on offer, with latencies as measured. */
export function exitNodeList(
  netmap: NetMap | null,
  prefs: Prefs,
  latency: ReadonlyMap<string, number | null>,
): { exitNodes: ExitNodeInfo[]; recommended: string | null } {
  const exitNodes = (netmap?.peers ?? [])
    .filter((p) => exitPeer(netmap as NetMap, p.id))
    .map((p) => ({
      id: p.id,
      name: p.name,
      tags: p.tags,
      addresses: p.addresses.map((a) => a.replace(/\/\d+$/, '')),
      online: p.online,
      latencyMs: latency.get(p.id) ?? null,
      selected: prefs.exitNodeId === p.id,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { exitNodes, recommended: recommend(exitNodes, latency) };
}

// --- the engine's exit-node state --------------------------------------------------------------

/**
 * What the engine keeps for exit nodes besides the prefs: the last measured latencies and the
 * servers that stay outside the tunnel. `change` fires when those servers' addresses change (the
 * desired state must be re-applied).
 */
export class ExitNodeState extends EventEmitter<{ change: [] }> {
  /** Last measured round trip to exit nodes, by peer id (null: no answer). */
  private readonly latency = new Map<string, number | null>();
  /** Control and relay servers, which stay outside the tunnel while an exit node is in use. */
  private readonly servers = new ServerAddresses();

  constructor() {
    super();
    this.servers.on('change', () => this.emit('change'));
  }

  /**
   * What routing needs to know of this machine: the networks it is on (never routed into the
   * tunnel), and the control and relay servers' addresses, reached outside the tunnel while an
   * exit node is in use (new host names are looked up).
   */
  machineFacts(controlUrl: string, netmap: NetMap, tunnelInterface: string): Omit<RouteInputs, 'prefs'> {
    this.servers.set([controlUrl, ...relayUrls(netmap)]);
    return {
      localPrefixes: localPrefixes(osInterfacePrefixes, tunnelInterface, netmap.tailnetRanges),
      bypass: this.servers.prefixes(),
    };
  }

  /** The exit nodes on offer, their latency measured first when `measure` (through the tunnel). */
  async list(netmap: NetMap | null, prefs: Prefs, measure: boolean): Promise<ExitNodeList> {
    if (measure) await measureExitNodes(exitNodeList(netmap, prefs, this.latency).exitNodes, this.latency);
    return exitNodeList(netmap, prefs, this.latency);
  }

  /** Adds the routing fields to a status, and why the chosen exit node fails while `wanted` up. */
  status(status: Status, netmap: NetMap | null, prefs: Prefs, wanted: boolean): Status {
    const problem = wanted ? exitNodeProblem(netmap, prefs) : null;
    const withHealth = problem ? { ...status, health: [...status.health, problem] } : status;
    return routeStatus(withHealth, status.self ? netmap : null, prefs, this.latency);
  }

  close(): void {
    this.servers.close();
  }
}

// --- servers outside the tunnel -----------------------------------------------------------------

/** The relays' URLs from the netmap's relay map (absent without relays). */
export function relayUrls(netmap: NetMap): string[] {
  const map = (netmap as { relayMap?: { regions: Array<{ url: string }> } }).relayMap;
  return (map?.regions ?? []).map((r) => r.url);
}

export type Resolve = (host: string) => Promise<string[]>;

const resolveAll: Resolve = async (host) => (await lookup(host, { all: true })).map((a) => a.address);

/**
 * The addresses of the control and relay servers, which the engine reaches outside the tunnel
 * while an exit node is in use (the helper's `exitNode.bypass`). Host names are resolved when they
 * first appear and again every `refreshMs`; `change` fires when the addresses change.
 */
export class ServerAddresses extends EventEmitter<{ change: [] }> {
  private readonly known = new Map<string, string[]>();
  private wanted: string[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly resolve: Resolve = resolveAll,
    refreshMs = 5 * 60_000,
  ) {
    super();
    this.timer = setInterval(() => this.refresh(), refreshMs);
    this.timer.unref();
  }

  /** The servers (URLs) that must stay reachable outside the tunnel. */
  set(urls: readonly string[]): void {
    const hosts = [...new Set(urls.flatMap((u) => hostOf(u) ?? []))].sort();
    if (hosts.join(' ') === this.wanted.join(' ')) return;
    this.wanted = hosts;
    for (const h of hosts) if (!this.known.has(h)) void this.lookup(h);
  }

  /** The addresses as /32 and /128 prefixes. */
  prefixes(): string[] {
    const out = new Set<string>();
    for (const h of this.wanted) {
      for (const a of this.known.get(h) ?? []) {
        const addr = parseAddr(a);
        if (addr) out.add(formatPrefix({ addr, bits: addr.family === 4 ? 32 : 128 }));
      }
    }
    return [...out].sort();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private refresh(): void {
    for (const h of this.wanted) void this.lookup(h);
  }

  private async lookup(host: string): Promise<void> {
    const literal = parseAddr(host.replace(/^\[|\]$/g, ''));
    let addrs: string[];
    if (literal) addrs = [host.replace(/^\[|\]$/g, '')];
    else {
      try {
        addrs = (await this.resolve(host)).sort();
      } catch {
        return; // kept as it was; tried again at the next refresh
      }
    }
    if (JSON.stringify(this.known.get(host)) === JSON.stringify(addrs)) return;
    this.known.set(host, addrs);
    this.emit('change');
  }
}

function hostOf(url: string): string | null {
  try {
    return new URL(url).hostname || null;
  } catch {
    return null;
  }
}

// --- latency -------------------------------------------------------------------------------------

/**
 * Round trip to a peer's tunnel address, in ms, or null without an answer. ICMP echo through the
 * tunnel with the system's `ping` (three probes, the best one counts, so a first WireGuard handshake
 * does not); where `ping` is missing, the time a TCP connection to port 1 takes to be answered
 * (accepted or refused). Bounded: at most about 2.5 s.
 */
/** Measures the latency to each online exit node (through the tunnel) into `latency`. */
export async function measureExitNodes(
  nodes: readonly ExitNodeInfo[],
  latency: Map<string, number | null>,
): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      const v4 = n.addresses.find((a) => !a.includes(':')) ?? n.addresses[0];
      latency.set(n.id, n.online && v4 ? await measureLatency(v4) : null);
    }),
  );
}

export async function measureLatency(address: string): Promise<number | null> {
  const ping = await new Promise<number | null | 'missing'>((resolve) => {
    execFile(
      'ping',
      ['-n', '-q', '-c', '3', '-i', '0.2', '-W', '1', '-w', '2', address],
      { timeout: 3000 },
      (err, stdout) => {
        if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return resolve('missing');
        const m = /= [\d.]+\/[\d.]+\/[\d.]+/.exec(stdout);
        const min = m ? Number(m[0].slice(2).split('/')[0]) : Number.NaN;
        resolve(Number.isFinite(min) ? min : null);
      },
    );
  });
  if (ping !== 'missing') return ping;
  return tcpLatency(address);
}

function tcpLatency(address: string, timeoutMs = 1500): Promise<number | null> {
  return new Promise((resolve) => {
    const started = performance.now();
    const s = connect({ host: address, port: 1, timeout: timeoutMs });
    const done = (answered: boolean) => {
      s.destroy();
      resolve(answered ? Math.round((performance.now() - started) * 100) / 100 : null);
    };
    s.once('connect', () => done(true));
    s.once('timeout', () => done(false));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED'));
  });
}
