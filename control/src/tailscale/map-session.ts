import {
  DEFAULT_BASE_DOMAIN,
  type NetMap,
  type NodeView,
  type StreamServerMessage,
  type TsMapResponse,
  type TsNode,
  type TsPeerChange,
} from '@weft/protocol';
import { ownBytes, type StreamSession } from '../netmap/hub.js';
import { toDerpMap, toTsDnsConfig, toTsNode, tsNodeId, tsUserProfile } from './tailcfg-views.js';

// A Tailscale client's map stream as the hub sees it: a StreamSession that turns Weft's full map and
// deltas into MapResponses. The first is whole (Node, Peers, DERPMap, PacketFilter, UserProfiles);
// after it, a peer whose only change is its endpoints, online state or home relay goes out as a
// PeersChangedPatch, any other change as the whole node in PeersChanged, a peer gone as PeersRemoved.

const EXPIRED_AT = '1970-01-01T00:00:01Z';

/**
 * The hub hands every viewer the same view object for a peer (unless its routes differ by viewer),
 * so a peer is translated once per change, not once per viewer. Never mutated once made.
 */
const peerNodes = new WeakMap<NodeView, { domain: string; node: TsNode }>();
function peerNode(view: NodeView, domain: string): TsNode {
  let cached = peerNodes.get(view);
  if (cached?.domain !== domain) {
    cached = { domain, node: toTsNode(view, false, domain) };
    peerNodes.set(view, cached);
  }
  return cached.node;
}

export class TsMapSession implements StreamSession {
  /** Weft node id → the view the client holds, to patch against and to find its number. */
  private readonly peers = new Map<string, NodeView>();
  private self: NodeView | null = null;
  private selfJson = '';
  /** The DNS base domain node names end in. */
  private domain = DEFAULT_BASE_DOMAIN;
  /** Messages become MapResponses here: the hub need not make a whole map's JSON bytes. */
  readonly ownEncoding = true;

  constructor(
    readonly nodeId: string,
    private readonly write: (response: TsMapResponse) => void,
    private readonly end: (reason: string) => void,
    /** Whether its transport is over its bound (the hub then holds deltas back: StreamSender). */
    readonly backlogged: () => boolean = () => false,
  ) {}

  send(message: StreamServerMessage): void {
    const response = this.translate(message);
    if (response !== null) this.write(response);
    if (message.type === 'logout') this.end(message.reason);
  }

  close(reason: string): void {
    this.end(reason);
  }

  translate(message: StreamServerMessage): TsMapResponse | null {
    if (message.type === 'full') return this.full(message.netmap);
    // The hub resumes only sessions that gave a token, and this one (its own encoding) has none.
    if (message.type === 'resume') throw new Error('a Tailscale session is never resumed');
    if (message.type === 'logout') {
      // The client learns it must log in again from its own node's key expiry.
      if (this.self === null) return null;
      return { Node: { ...toTsNode(this.self, true, this.domain), KeyExpiry: EXPIRED_AT, Expired: true } };
    }
    const response: TsMapResponse = {};
    const users = new Set<string | null>();
    if (message.dns) {
      response.DNSConfig = toTsDnsConfig(message.dns);
      if (message.dns.baseDomain !== this.domain) {
        // Every node's Name ends in the base domain: the whole peer list goes out again.
        this.domain = message.dns.baseDomain;
        this.selfJson = '';
        response.Peers = [...this.peers.values()].map((p) => peerNode(p, this.domain));
      }
    }
    const self = message.self ?? (this.selfJson === '' ? this.self : null);
    if (self) {
      this.self = self;
      const node = toTsNode(self, true, this.domain);
      // Its own last seen and online state are not in a client's own node: often nothing to send.
      const json = JSON.stringify(node);
      if (json !== this.selfJson) {
        this.selfJson = json;
        response.Node = node;
        users.add(self.user);
      }
    }
    const changed: TsNode[] = [];
    const patches: TsPeerChange[] = [];
    for (const peer of message.peersUpserted ?? []) {
      const before = this.peers.get(peer.id);
      this.peers.set(peer.id, peer);
      const patch = before ? sharedPatchOf(before, peer) : null;
      if (patch !== null) {
        if (Object.keys(patch).length > 1) patches.push(patch);
        continue;
      }
      changed.push(peerNode(peer, this.domain));
      users.add(peer.user);
    }
    const removed: number[] = [];
    for (const id of message.peersRemoved ?? []) {
      const before = this.peers.get(id);
      if (before === undefined) continue;
      this.peers.delete(id);
      removed.push(numberOf(before));
    }
    if (changed.length > 0) response.PeersChanged = changed;
    if (patches.length > 0) response.PeersChangedPatch = patches;
    if (removed.length > 0) response.PeersRemoved = removed;
    if (message.packetFilter) response.PacketFilter = message.packetFilter;
    if (users.size > 0) response.UserProfiles = [...users].map(tsUserProfile);
    return Object.keys(response).length > 0 ? response : null;
  }

  private full(netmap: NetMap): TsMapResponse {
    this.self = netmap.self;
    this.domain = netmap.dns?.baseDomain ?? DEFAULT_BASE_DOMAIN;
    this.selfJson = JSON.stringify(toTsNode(netmap.self, true, this.domain));
    this.peers.clear();
    for (const peer of netmap.peers) this.peers.set(peer.id, peer);
    return fullMapResponse(netmap);
  }
}

/** A translated node's JSON as UTF-8, kept while the node is (a shared peer node's outlives a frame). */
const nodeBytes = new WeakMap<TsNode, Buffer>();
function bytesOf(node: TsNode): Buffer {
  let bytes = nodeBytes.get(node);
  if (bytes === undefined) {
    bytes = ownBytes(JSON.stringify(node));
    nodeBytes.set(node, bytes);
  }
  return bytes;
}

const COMMA = Buffer.from(',');
const CLOSE_LIST = Buffer.from(']');

/**
 * `response`'s JSON, as JSON.stringify writes it, in parts to be joined: the nodes of Peers and
 * PeersChanged are shared by every viewer of the same view (peerNode), so each is serialised once
 * per change and its bytes reused, not once in every receiver's map. At 1,000 Tailscale clients a
 * mass connect sends every node's whole map, each a serialisation of up to 1,000 nodes, and that
 * text (then its bytes) was most of the garbage control made.
 */
export function mapResponseParts(response: TsMapResponse): Buffer[] {
  const parts: Buffer[] = [];
  let text = '{';
  for (const [key, value] of Object.entries(response)) {
    if (value === undefined) continue;
    if (text.length > 1 || parts.length > 0) text += ',';
    text += `${JSON.stringify(key)}:`;
    if ((key === 'Peers' || key === 'PeersChanged') && Array.isArray(value)) {
      parts.push(Buffer.from(`${text}[`));
      text = '';
      (value as TsNode[]).forEach((node, i) => {
        if (i > 0) parts.push(COMMA);
        parts.push(bytesOf(node));
      });
      parts.push(CLOSE_LIST);
      continue;
    }
    text += JSON.stringify(value);
  }
  parts.push(Buffer.from(`${text}}`));
  return parts;
}

/** The whole map as one MapResponse (a stream's first message, or a one-shot request's answer). */
export function fullMapResponse(netmap: NetMap): TsMapResponse {
  const users = new Set([netmap.self.user, ...netmap.peers.map((p) => p.user)]);
  const domain = netmap.dns?.baseDomain ?? DEFAULT_BASE_DOMAIN;
  return {
    Node: toTsNode(netmap.self, true, domain),
    DERPMap: toDerpMap(netmap.relayMap),
    Peers: netmap.peers.map((p) => peerNode(p, domain)),
    // Weft's compiled rules are already in tailcfg.FilterRule's shape.
    PacketFilter: netmap.packetFilter,
    UserProfiles: [...users].map(tsUserProfile),
    Domain: domain,
    ...(netmap.dns ? { DNSConfig: toTsDnsConfig(netmap.dns) } : {}),
    CollectServices: false,
    ControlTime: new Date().toISOString(),
  };
}

/**
 * A change's patch, made once for all the sessions that held the same view before it: every
 * viewer of a peer holds the hub's same view object, so at N nodes a peer's change was otherwise
 * compared (two JSON serialisations of the whole view) N times. Never mutated once made.
 */
const patches = new WeakMap<NodeView, WeakMap<NodeView, TsPeerChange | null>>();
export function sharedPatchOf(before: NodeView, after: NodeView): TsPeerChange | null {
  let byAfter = patches.get(before);
  if (byAfter === undefined) {
    byAfter = new WeakMap();
    patches.set(before, byAfter);
  }
  let patch = byAfter.get(after);
  if (patch === undefined) {
    patch = patchOf(before, after);
    byAfter.set(after, patch);
  }
  return patch;
}

const numberOf = (view: NodeView) => tsNodeId((view.addresses[0] ?? '').split('/')[0] as string);

function patchOf(before: NodeView, after: NodeView): TsPeerChange | null {
  const rest = (v: NodeView) =>
    JSON.stringify({ ...v, endpoints: 0, online: 0, lastSeen: 0, homeRelay: 0, discoKey: 0 });
  if (rest(before) !== rest(after)) return null;
  const patch: TsPeerChange = { NodeID: numberOf(after) };
  if (JSON.stringify(before.endpoints) !== JSON.stringify(after.endpoints)) patch.Endpoints = after.endpoints;
  if (before.online !== after.online) patch.Online = after.online;
  if (after.lastSeen && before.lastSeen !== after.lastSeen) patch.LastSeen = after.lastSeen;
  if (after.homeRelay && before.homeRelay !== after.homeRelay) patch.DERPRegion = after.homeRelay;
  if (after.discoKey && before.discoKey !== after.discoKey) {
    patch.DiscoKey = peerNode(after, DEFAULT_BASE_DOMAIN).DiscoKey as string;
  }
  return patch;
}
