import type {
  DnsSettings,
  FilterRule,
  NetMap,
  NodeView,
  RelayMap,
  StreamServerMessage,
} from '@weft/protocol';
import { FanOutTimer } from '../metrics/fan-out-timer.js';
import { toNodeView } from '../tailnet/node-view.js';
import { isExpired, type NodeRecord } from '../tailnet/records.js';
import { adminApprovedRoutes, electPrimaries, isExitRoute } from '../tailnet/routes.js';
import { withWire } from './message-text.js';
import { SentRecord } from './sent-record.js';
import type { SharedVisibility, Visibility, VisibilityPolicy } from './visibility.js';

// Computes each connected node's netmap and the deltas that keep it current. It knows nothing about
// WebSockets or the database: it is fed snapshots of the nodes and sessions that can take a message.
// Work per change is proportional to (connected nodes × changed nodes); a node's whole peer list is
// recomputed only when the policy says its visibility may have changed, and once per class of nodes
// that see alike (see Group), not per node. Changes to a few nodes come in alone (apply); update()
// takes the whole table, for what cannot be narrowed to nodes.

/** One node's live stream, whatever carries it. */
export interface StreamSession {
  readonly nodeId: string;
  /**
   * The same message object goes to every node of a class that is sent the same bytes, so a
   * transport may serialise it once (see stream-sender.ts).
   */
  send(message: StreamServerMessage): void;
  /** Ends the stream from the server side. */
  close(reason: string): void;
  /**
   * True while the transport holds more unsent bytes than it should: the hub then stops building
   * deltas for it, and sends a whole map once it has drained (resync).
   */
  backlogged?(): boolean;
  /**
   * The transport encodes messages its own way (Tailscale's map responses), never as their JSON:
   * the hub then does not put a whole map's JSON bytes together for it.
   */
  readonly ownEncoding?: boolean;
}

interface Subscriber {
  session: StreamSession;
  visibility: Visibility;
  /**
   * Which view of each peer (by slot) this node last received, so only real changes are sent: its
   * group's record when it has one (see Group).
   */
  sent: SentRecord;
  /** The streams it shares its record with (see Visibility.shared); null: the record is its own. */
  group: Group | null;
  selfJson: string;
  filterJson: string;
  /** Skipped changes while its transport was backlogged: it needs a whole map (resync). */
  behind: boolean;
  /** What it is to be sent at the next flush (batched hubs only). */
  pending: Outgoing | null;
  /**
   * Peers' presence-only changes held for the next presence release (see `holdPresence`); disjoint
   * from `pending`, which carries them when it goes first.
   */
  held: Outgoing | null;
}

/** What one node is to be sent; changes until the next flush merge into one, the latest winning. */
interface Outgoing {
  upserted: Map<string, CachedView>;
  removed: Set<string>;
  packetFilter?: FilterRule[];
  self?: CachedView;
  /** When the oldest change merged here was asked for (see FanOutTimer); unset when not timed. */
  askedAt?: number;
}

interface CachedView {
  view: NodeView;
  json: string;
  /** `json` as UTF-8, made when a whole map first carries it (see sendFull). */
  bytes?: Buffer;
  /** Which version of a node's shared view this is; 0 for a view built for one viewer. */
  seq: number;
  /** Its JSON's hash, made when a record first holds it (see SentRecord.token). */
  hash?: readonly [number, number];
}

/**
 * The in-step streams whose visibilities share one key, and the one record of what they were sent.
 * After every propagate() an in-step stream's record is the current view of every peer it sees, so
 * streams that see the same peers the same way would keep equal records: the group keeps one, of
 * every node the class sees, its own members included (a member skips its own slot), and each
 * change is compared with it once (see Steps). Under allow-all that is one record of N peers, not
 * N records of N. A stream that falls behind, ends or is replaced leaves; an empty group is dropped
 * (nothing would keep its record current).
 */
interface Group {
  key: string;
  record: SentRecord;
  members: Set<Subscriber>;
  /** Its members' whole maps' peers, put together once (see ClassMap); null until one is needed. */
  map: ClassMap | null;
}

/** Peers in one chunk of a ClassMap: a peer's change puts its chunk's bytes together again, not the map's. */
const MAP_CHUNK = 1024;

/**
 * Every peer a group's class sees, its members included, as a member's whole map carries them: at
 * 10,000 allow-all nodes a connect walked every peer and copied 3 MB of views into its own map, N²
 * during a mass reconnect. The bytes are kept in chunks, each peer's entry with a leading comma and
 * its offset, so a member's map is the chunks with its own entry cut out (two views of one chunk, no
 * copy). A peer's view that moves drops its chunk's bytes; anything that may move who the class sees
 * (a join, a delete, a new identity, a policy) drops the whole map (see propagate). The bytes of all
 * classes' maps together are bounded (see CLASS_MAPS_KEPT).
 */
interface ClassMap {
  ids: string[];
  /** Each peer's index in `ids`. */
  at: Map<string, number>;
  /** Each peer's view as the class sees it; a chunk's are current unless it is stale. */
  views: CachedView[];
  /** Per chunk of MAP_CHUNK peers: one of their views moved since they were read. */
  stale: boolean[];
  /**
   * Per chunk, their entries (`,{…}`) in a buffer of its own; null until a member needs them (one
   * with its own encoding never does), or once one of them moved.
   */
  bytes: (Buffer | null)[];
  /** Per chunk, where each entry starts in its bytes, then the bytes' length. */
  starts: number[][];
  /** The bytes its chunks hold. */
  size: number;
}

/**
 * The class maps' bytes kept together, in maps of the largest class kept: a map pays off only while
 * its class's members connect one after another, and with G classes that each see the whole tailnet
 * every connect moves a peer in each of them, so keeping all G (G × N × ~300 B, 300 MB at 10,000
 * nodes and 100 classes) saved next to nothing. Over the budget the least recently used maps go; the
 * one in use never does, so one class of the whole tailnet (allow-all) always keeps its map.
 */
const CLASS_MAPS_KEPT = 4;
/** Below this many bytes no map is evicted: a small tailnet's many small classes all keep theirs. */
const CLASS_MAPS_FLOOR = 1024 * 1024;

/** What a peer's comparison with a record gave: its view to send, its removal, or nothing. */
type Step = CachedView | 'removed' | 'same';

/** One propagate()'s comparisons with one group's record: each peer is compared once per change. */
interface Steps {
  byPeer: Map<string, Step>;
  /** Those that are not 'same', once the whole class was compared (a member's visibility moved). */
  all: [string, Step][] | null;
}

type Delta = Extract<StreamServerMessage, { type: 'delta' }>;

/** How a node's view moved at a refresh: not at all, in its online state or last seen only, or more. */
type ViewChange = false | 'presence' | 'view';

/** What a policy may look at: when it changes, visibility has to be decided again. */
function identityOf(node: NodeRecord): string {
  return JSON.stringify([
    node.userId,
    node.userName,
    node.userEmail,
    node.userGroups,
    node.tags,
    node.ipv4,
    node.ipv6,
    node.approvedRoutes,
    node.advertisedRoutes,
  ]);
}

/** Primaries in a fixed order: which router was met first does not make them move. */
const primariesKey = (primaries: ReadonlyMap<string, string>) => JSON.stringify([...primaries].sort());

/** What a whole map's bytes start with, before self's JSON (see sendFull); its token first. */
const fullHead = (mapToken: string | undefined) =>
  Buffer.from(`{"type":"full",${mapToken === undefined ? '' : `"mapToken":"${mapToken}",`}"netmap":{"self":`);
const PEERS_HEAD = Buffer.from(',"peers":[');
const COMMA = Buffer.from(',');
/** The pieces of a delta's bytes, in the order send() sets its keys (JSON.stringify's order). */
const DELTA_HEAD = Buffer.from('{"type":"delta"');
const DELTA_TOKEN = Buffer.from(',"mapToken":');
const DELTA_SELF = Buffer.from(',"self":');
const DELTA_FILTER = Buffer.from(',"packetFilter":');
const DELTA_UPSERTED = Buffer.from(',"peersUpserted":[');
const DELTA_END = Buffer.from('}');
const PEERS_END = Buffer.from(']');

/**
 * `text` as UTF-8 in a buffer of its own: Buffer.from puts small strings in a shared 8 KiB slab,
 * and one kept view would then hold its whole slab alive.
 */
export function ownBytes(text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  bytes.write(text);
  return bytes;
}

/**
 * A batch is sent once it has merged this many changes, without waiting for its scheduled flush: that
 * waits for the event loop, which a mass reconnect keeps busy for as long as nodes keep arriving (at
 * 10,000 nodes it did not run once in a 20 s connect, every node's deltas piled up, and the one flush
 * at the end serialised a gigabyte of JSON, most of control's RSS). Larger batches mean fewer
 * messages (in-process at 10,000 per-person: 64 sent 793,000 messages, 256 sent 210,000, at 9 and
 * 18 MiB of deltas' JSON), and each is a WebSocket frame to write.
 */
const MAX_BATCHED_CHANGES = 256;

export const DELETED_REASON = 'this node was deleted from the tailnet';
export const EXPIRED_REASON = 'key expired';

export class NetmapHub {
  private nodes = new Map<string, NodeRecord>();
  private views = new Map<string, CachedView>();
  private subscribers = new Map<string, Subscriber>();
  /** Streams sharing one record, by their visibilities' key (see Group). */
  private groups = new Map<string, Group>();
  /** The groups with a ClassMap. */
  private mapped = new Set<Group>();
  /**
   * Those whose maps hold bytes, least recently used first: the budget looks through these, not
   * every class's (per person, thousands of small classes keep views only between their connects).
   */
  private holding = new Set<Group>();
  /** The bytes the class maps' chunks hold together (see CLASS_MAPS_KEPT). */
  private mappedBytes = 0;
  /** The current propagate()'s comparisons, per group (see Steps). */
  private steps = new Map<Group, Steps>();
  private viewSeq = 0;
  /** Routers' shared views before their latest refresh (see SentRecord.record). */
  private previousViews = new Map<string, CachedView>();
  /** Each node's slot, the number streams' sent records know it by (see SentRecord). */
  private slots = new Map<string, number>();
  private slotIds = new Map<number, string>();
  private nextSlot = 0;
  /** Subscribers with something pending, in the order they first got it (batched hubs only). */
  private outbox: Subscriber[] = [];
  private flushScheduled = false;
  /** Changes merged into the pending batch since the last flush (see MAX_BATCHED_CHANGES). */
  private batchedChanges = 0;
  /** Subscribers holding presence changes, in the order they first held them (see holdPresence). */
  private presenceOutbox: Subscriber[] = [];
  private presenceScheduled = false;
  /**
   * The empty batch propagate() fills for a subscriber with none pending, kept until it is queued:
   * most watchers of a change get nothing (their peers' presence is held), and a shared server
   * coming online visited every online member with a new Map and Set each.
   */
  private scratch: Outgoing = { upserted: new Map(), removed: new Set() };
  /** Streams closeAll ended, until their close arrives (see disconnect). */
  private readonly ending = new Set<StreamSession>();
  /** Nodes in the database whose key has expired: out of every map until they log in again. */
  private expired = new Set<string>();
  /** Times each delta a reload writes (see NetmapSync, PolicySync). */
  readonly fanOut = new FanOutTimer();
  /** This server's replica id (see Presence): rows naming it are the streams in `subscribers`. */
  replica: string | null = null;
  /** The relays every node is told about (in each full map); undefined when none are configured. */
  relayMap: RelayMap | undefined;
  /** The tailnet's DNS settings (in each full map, and to every node when they change). */
  private dns: DnsSettings | undefined;
  /** Nodes that advertise routes: their views differ by viewer (routes as the policy allows). */
  private routers = new Set<string>();
  /** Without a policy: each approved subnet's primary router (peers route it there). */
  private primaries = new Map<string, string>();

  constructor(
    private readonly policy: VisibilityPolicy,
    private readonly tailnetRanges: string[],
    private readonly clock: () => Date = () => new Date(),
    /**
     * Given: deltas are held and merged per node until `schedule` calls the flush it is passed
     * (control: the next event-loop turn) or MAX_BATCHED_CHANGES have merged, so a burst of changes
     * (a mass reconnect) costs each node one message per batch, not one per change. Absent: each
     * change is sent at once.
     */
    private readonly schedule?: (flush: () => void) => void,
    /**
     * Given (with `schedule`): peers' presence-only changes are held per node until `holdPresence`
     * calls the release it is passed (control: `presenceHoldMs` later), then go out at the next
     * flush; a node sent anything else before then gets them with it. Absent: they go as any change.
     */
    private readonly holdPresence?: (release: () => void) => void,
  ) {}

  has(nodeId: string): boolean {
    return this.nodes.has(nodeId);
  }

  /**
   * Streaming here, or to another replica as the database said at the last update. The database's
   * word on this replica's own streams is ignored: the subscribers are the truth, and are current
   * without a reload.
   */
  isOnline(nodeId: string): boolean {
    const by = this.nodes.get(nodeId)?.streamedBy ?? null;
    return this.subscribers.has(nodeId) || (by !== null && by !== this.replica);
  }

  /** The nodes streaming to this replica. */
  streams(): string[] {
    return [...this.subscribers.keys()];
  }

  view(nodeId: string): NodeView | undefined {
    return this.views.get(nodeId)?.view;
  }

  /** Why a node is not (or no longer) in the tailnet, as its logout message says. */
  goneReason(nodeId: string): string {
    return this.expired.has(nodeId) ? EXPIRED_REASON : DELETED_REASON;
  }

  /** The node as the hub knows it (undefined when deleted or expired). */
  record(nodeId: string): NodeRecord | undefined {
    return this.nodes.get(nodeId);
  }

  /** Every node in the tailnet (expired ones excepted). */
  records(): Iterable<NodeRecord> {
    return this.nodes.values();
  }

  /**
   * Replaces the known nodes with `all` and sends every connected node what changed for it. Nodes
   * whose key has expired count as gone: peers drop them and their own stream is logged out.
   */
  update(all: readonly NodeRecord[]): void {
    const now = this.clock();
    const next = all.filter((n) => !isExpired(n, now));
    this.expired = new Set(all.filter((n) => isExpired(n, now)).map((n) => n.id));
    const previous = this.nodes;
    this.nodes = new Map(next.map((n) => [n.id, n]));
    this.routers.clear();
    this.settle(
      next,
      previous,
      [...previous.values()].filter((n) => !this.nodes.has(n.id)),
    );
  }

  /**
   * Applies the database's current rows of the nodes `ids` alone (`rows`: those that still exist),
   * as update() would with the whole table: a join, delete or report costs its watchers, not a
   * reload of every node.
   */
  apply(ids: Iterable<string>, rows: readonly NodeRecord[]): void {
    const now = this.clock();
    const found = new Map(rows.map((n) => [n.id, n]));
    const previous = new Map<string, NodeRecord>();
    const next: NodeRecord[] = [];
    const removed: NodeRecord[] = [];
    for (const id of new Set(ids)) {
      const old = this.nodes.get(id);
      if (old) previous.set(id, old);
      const row = found.get(id);
      if (row !== undefined && !isExpired(row, now)) {
        this.expired.delete(id);
        this.nodes.set(id, row);
        next.push(row);
        continue;
      }
      if (row === undefined) this.expired.delete(id);
      else this.expired.add(id);
      if (old) {
        this.nodes.delete(id);
        removed.push(old);
      }
    }
    this.settle(next, previous, removed);
  }

  /**
   * Brings views, routers and primaries up to date after `next` nodes were (re)written and `removed`
   * ones left (`previous`: the records they replaced), and sends each connected node what changed.
   */
  private settle(
    next: readonly NodeRecord[],
    previous: ReadonlyMap<string, NodeRecord>,
    removed: readonly NodeRecord[],
  ): void {
    const reidentified = next.filter((n) => {
      const old = previous.get(n.id);
      return old === undefined || identityOf(old) !== identityOf(n);
    });
    for (const gone of removed) {
      this.views.delete(gone.id);
      this.routers.delete(gone.id);
      const sub = this.subscribers.get(gone.id);
      if (sub) {
        this.subscribers.delete(gone.id);
        this.leaveGroup(sub);
        sub.session.send({ type: 'logout', reason: this.goneReason(gone.id) });
        sub.session.close(this.expired.has(gone.id) ? 'key expired' : 'node deleted');
      }
    }
    for (const n of next) {
      if (n.advertisedRoutes.length > 0) this.routers.add(n.id);
      else {
        this.routers.delete(n.id);
        this.previousViews.delete(n.id);
      }
    }
    const primariesMoved = this.electPrimaries();
    const changed: string[] = [];
    const presence = new Set<string>();
    for (const n of next) {
      const change = this.refreshView(n.id);
      if (change) changed.push(n.id);
      if (change === 'presence') presence.add(n.id);
    }
    // Another router became primary of a subnet: every router's views may differ.
    if (primariesMoved) {
      for (const id of this.routers) {
        presence.delete(id);
        if (!changed.includes(id)) changed.push(id);
      }
    }
    this.propagate(
      changed,
      removed.map((n) => n.id),
      [...reidentified, ...removed],
      undefined,
      presence,
    );
    // Every stream that can take a delta has forgotten them; one that could not is sent a whole map
    // (a new record) before anything else. A node that comes back gets a new slot.
    for (const gone of removed) {
      this.previousViews.delete(gone.id);
      const slot = this.slots.get(gone.id);
      this.slots.delete(gone.id);
      if (slot !== undefined) this.slotIds.delete(slot);
    }
  }

  /** `nodeId`'s slot, given on first use. */
  private slotOf(nodeId: string): number {
    let slot = this.slots.get(nodeId);
    if (slot === undefined) {
      slot = this.nextSlot++;
      this.slots.set(nodeId, slot);
      this.slotIds.set(slot, nodeId);
    }
    return slot;
  }

  /** Elects each subnet's primary router again; whether any moved. */
  private electPrimaries(): boolean {
    // Only routers have approved routes, so only they can be primaries.
    const routerRecords = [...this.routers].map((id) => this.nodes.get(id) as NodeRecord);
    const primaries = electPrimaries(routerRecords, (n) => this.approvedOf(n));
    const moved = primariesKey(primaries) !== primariesKey(this.primaries);
    this.primaries = primaries;
    return moved;
  }

  /**
   * Starts streaming to `session`: sends its full map (or `resume`, when `mapToken`, the token of
   * the map the node holds, is that of the peers it would be sent), and tells its peers if it is now
   * online.
   */
  connect(session: StreamSession, mapToken?: string): void {
    const self = this.nodes.get(session.nodeId);
    if (self === undefined) throw new Error(`node ${session.nodeId} is not known`);
    const replaced = this.subscribers.get(session.nodeId);
    if (replaced) this.leaveGroup(replaced);
    const sub: Subscriber = {
      session,
      visibility: this.policy.visibilityOf(self, this.nodes),
      sent: new SentRecord(),
      group: null,
      selfJson: '',
      filterJson: '',
      behind: false,
      pending: null,
      held: null,
    };
    this.subscribers.set(session.nodeId, sub);
    replaced?.session.close('replaced by a newer stream');
    const change = this.refreshView(session.nodeId);
    this.start(sub, self, mapToken);
    // A node online already (a replaced stream, a stream another replica or the previous run held)
    // changes nothing for its peers: no propagation (a restart's herd would pay for each).
    if (change)
      this.propagate([session.nodeId], [], [], undefined, this.presenceOnly(session.nodeId, change));
  }

  /**
   * A stream that fell behind has drained: it is sent a whole map in place of the deltas it
   * skipped, so what a slow node costs is bounded by one map, not by the changes it missed.
   */
  resync(session: StreamSession): void {
    const sub = this.subscribers.get(session.nodeId);
    const self = this.nodes.get(session.nodeId);
    if (sub?.session !== session || !sub.behind || self === undefined) return;
    sub.behind = false;
    sub.visibility = this.policy.visibilityOf(self, this.nodes);
    this.start(sub, self);
  }

  /**
   * Sends `sub` (in no group) its whole map: into its key's group when there is one, whose record
   * is what the map carries already; else the map makes its record, and the group's if it has a key.
   * A node whose `mapToken` is the token of that record holds those peers: it is sent `resume`.
   */
  private start(sub: Subscriber, self: NodeRecord, mapToken?: string): void {
    const key = sub.visibility.shared?.key;
    const group = key === undefined ? undefined : this.groups.get(key);
    if (group !== undefined) {
      this.join(sub, group);
      this.sendFull(sub, self, mapToken);
      return;
    }
    sub.sent = new SentRecord();
    this.sendFull(sub, self, mapToken, key ?? null);
  }

  private join(sub: Subscriber, group: Group): void {
    sub.group = group;
    sub.sent = group.record;
    group.members.add(sub);
  }

  /**
   * Makes `sub`'s own record, current for its visibility, the record of a new group: with its own
   * view when the class sees its members, or a later member's change would never reach the others.
   */
  private formGroup(sub: Subscriber, key: string): void {
    const group: Group = { key, record: sub.sent, members: new Set(), map: null };
    this.groups.set(key, group);
    this.join(sub, group);
    this.fitOwnSlots(group);
  }

  /**
   * Makes each member's own slot in its group's record what the class sees of it: its current view
   * when the class sees its members, else nothing. Nothing else compares a member with itself, and
   * a group re-keyed or merged without a whole comparison (a policy change that moved no one's
   * peers) may hold a lone member's slot its new class sees differently: a later member would then
   * never be told of that member's removal, or be told of a removal of a peer it never had. Sends
   * nothing: a member's peers that did move were compared, and the others held its view already.
   */
  private fitOwnSlots(group: Group): void {
    for (const sub of group.members) {
      const id = sub.session.nodeId;
      const self = this.nodes.get(id) as NodeRecord;
      if ((sub.visibility.shared as SharedVisibility).canSee(self)) {
        group.record.record(this.slotOf(id), this.peerView(sub.visibility, self));
      } else {
        const slot = this.slots.get(id);
        if (slot !== undefined) group.record.delete(slot);
      }
    }
  }

  /**
   * `sub` leaves its group. Given `keep`, with a record of its own as the group's is now (it is
   * compared stream by stream from then on; its own slot is never sent to it); else an empty one (it
   * is behind or gone: a whole map will make its record).
   */
  private leaveGroup(sub: Subscriber, keep = false): void {
    const group = sub.group;
    if (group === null) return;
    group.members.delete(sub);
    sub.group = null;
    const last = group.members.size === 0;
    if (last) this.dropClassMap(group);
    if (last && this.groups.get(group.key) === group) this.groups.delete(group.key);
    if (keep) {
      sub.sent = last ? group.record : group.record.clone();
      // A group's record holds its members; a stream's own never holds the stream, so its token
      // counts only its peers (one that left with its peers as they were was never resumed).
      const own = this.slots.get(sub.session.nodeId);
      if (own !== undefined) sub.sent.delete(own);
    } else sub.sent = new SentRecord();
  }

  /** Bytes of every stream's record of what it was sent (a group's once), the views' JSON aside. */
  recordBytes(): number {
    let bytes = 0;
    const counted = new Set<SentRecord>();
    for (const sub of this.subscribers.values()) {
      if (counted.has(sub.sent)) continue;
      counted.add(sub.sent);
      bytes += sub.sent.bytes;
    }
    return bytes;
  }

  /** Bytes the class maps' chunks hold, every group's together (see CLASS_MAPS_KEPT). */
  classMapBytes(): number {
    let bytes = 0;
    for (const group of this.groups.values()) {
      for (const chunk of group.map?.bytes ?? []) bytes += chunk?.length ?? 0;
    }
    return bytes;
  }

  /**
   * Sends `sub` its whole map, or `resume` when `mapToken` is its record's token. Given `form` (a key
   * or null), the map is walked and makes `sub`'s record, then the group of the key; else `sub` is
   * in a group, whose record the map carries already.
   */
  private sendFull(sub: Subscriber, self: NodeRecord, mapToken?: string, form?: string | null): void {
    // The whole map has them.
    sub.pending = null;
    sub.held = null;
    sub.selfJson = (this.views.get(self.id) as CachedView).json;
    sub.filterJson = JSON.stringify(sub.visibility.packetFilter);
    // A session with its own encoding (Tailscale's) is never given a token, nor resumed.
    const own = sub.session.ownEncoding === true;
    // A member's map is its class's: put together once (see ClassMap), not peer by peer.
    const group = form === undefined ? sub.group : null;
    if (group !== null) {
      const token = own ? undefined : this.joinToken(sub, group, self);
      if (token !== undefined && token === mapToken) {
        this.resume(sub, self, token);
        return;
      }
      const parts = own
        ? undefined
        : [Buffer.concat([fullHead(token), Buffer.from(sub.selfJson), PEERS_HEAD])];
      const netmap = this.mapOf(self, sub.visibility, this.classPeers(group, sub, parts));
      if (parts === undefined) sub.session.send({ type: 'full', netmap });
      else
        sub.session.send(withWire({ type: 'full', mapToken: token, netmap }, [...parts, restBytes(netmap)]));
      return;
    }
    if (own) {
      sub.session.send({ type: 'full', netmap: this.fullMap(self, sub.visibility, sub.sent) });
      if (typeof form === 'string') this.formGroup(sub, form);
      return;
    }
    // The walk fills the record and keeps the views: a resume (every node of a killed replica)
    // needs only the token, so the map's bytes and object are made after the comparison.
    const views = this.walk(self, sub.visibility, sub.sent);
    // Its token is its record's once the group it forms holds its members' own slots.
    if (typeof form === 'string') this.formGroup(sub, form);
    const token = sub.sent.token();
    if (token === mapToken) {
      this.resume(sub, self, token);
      return;
    }
    // The bytes are put together from the peers' kept JSON, in JSON.stringify's order (self, peers,
    // the rest): at 10,000 nodes a mass reconnect sends millions of peer views, and serialising
    // each again (then encoding the text) was most of a connect's cost, and a gigabyte of strings
    // for the garbage collector.
    const parts: Buffer[] = [fullHead(token), Buffer.from(sub.selfJson), PEERS_HEAD];
    views.forEach((cached, i) => {
      if (i > 0) parts.push(COMMA);
      parts.push(viewBytes(cached));
    });
    const rest = this.restOf(self, sub.visibility);
    parts.push(restBytes(rest));
    const netmap = { ...rest, peers: views.map((cached) => cached.view) };
    sub.session.send(withWire({ type: 'full', mapToken: token, netmap }, Buffer.concat(parts)));
  }

  /**
   * The token of `group`'s record once `sub`, joining it, has its own slot as the class sees it now:
   * its view may have just moved (it came online), and the propagation that records it sends it
   * nothing (a stream is never sent itself), so a whole map named by the record's token now would
   * leave it holding a token its peers' record no longer has.
   */
  private joinToken(sub: Subscriber, group: Group, self: NodeRecord): string {
    const seen = (sub.visibility.shared as SharedVisibility).canSee(self);
    return group.record.tokenWith(this.slotOf(self.id), seen ? this.peerView(sub.visibility, self) : null);
  }

  /** Tells `sub`, whose peers are its record's (token `mapToken`), everything else a whole map has. */
  private resume(sub: Subscriber, self: NodeRecord, mapToken: string): void {
    sub.session.send({ type: 'resume', mapToken, netmap: this.restOf(self, sub.visibility) });
  }

  /**
   * The peers of `sub`'s whole map (it is in `group`): its class's, itself cut out. Given `parts`
   * (bytes that end with the peers' opening bracket), the peers' bytes are added to it as views of
   * the class's chunks.
   */
  private classPeers(group: Group, sub: Subscriber, parts?: Buffer[]): NodeView[] {
    const map = this.classMap(group, sub.visibility, parts !== undefined);
    const cut = map.at.get(sub.session.nodeId);
    const peers: NodeView[] = [];
    map.views.forEach((cached, i) => {
      if (i !== cut) peers.push(cached.view);
    });
    if (parts === undefined) return peers;
    const opened = parts.length;
    // The first entry sent loses its leading comma.
    const add = (bytes: Buffer) => {
      if (bytes.length > 0) parts.push(parts.length === opened ? bytes.subarray(1) : bytes);
    };
    map.bytes.forEach((bytes, c) => {
      const chunk = bytes as Buffer;
      if (cut === undefined || Math.floor(cut / MAP_CHUNK) !== c) {
        add(chunk);
        return;
      }
      const starts = map.starts[c] as number[];
      const k = cut % MAP_CHUNK;
      add(chunk.subarray(0, starts[k]));
      add(chunk.subarray(starts[k + 1]));
    });
    return peers;
  }

  /**
   * `group`'s ClassMap with every chunk's views current, made or read again as needed; with every
   * chunk's bytes too when `withBytes`.
   */
  private classMap(group: Group, visibility: Visibility, withBytes: boolean): ClassMap {
    if (group.map === null) {
      const shared = visibility.shared as SharedVisibility;
      const ids: string[] = [];
      for (const node of this.nodes.values()) if (shared.canSee(node)) ids.push(node.id);
      const chunks = Math.ceil(ids.length / MAP_CHUNK);
      group.map = {
        ids,
        at: new Map(ids.map((id, i) => [id, i])),
        views: new Array(ids.length),
        stale: new Array(chunks).fill(true),
        bytes: new Array(chunks).fill(null),
        starts: [],
        size: 0,
      };
    }
    const map = group.map;
    this.mapped.add(group);
    for (let c = 0; c < map.stale.length; c++) {
      const end = Math.min(map.ids.length, (c + 1) * MAP_CHUNK);
      if (map.stale[c]) {
        for (let i = c * MAP_CHUNK; i < end; i++) {
          // The class's members see each peer with the same view (see Visibility.shared).
          map.views[i] = this.peerView(visibility, this.nodes.get(map.ids[i] as string) as NodeRecord);
        }
        map.stale[c] = false;
      }
      if (withBytes && map.bytes[c] === null) this.chunkBytes(map, c, end);
    }
    if (withBytes) {
      // Last in the set: the most recently used.
      this.holding.delete(group);
      if (map.size > 0) this.holding.add(group);
      this.fitClassMaps(group);
    }
    return map;
  }

  /**
   * Puts chunk `c`'s entries (up to `end`) together in a buffer of its own: Buffer.concat takes a
   * small one from the shared 8 KiB slab, which a kept chunk would hold alive (see ownBytes).
   */
  private chunkBytes(map: ClassMap, c: number, end: number): void {
    const starts: number[] = [];
    let length = 0;
    for (let i = c * MAP_CHUNK; i < end; i++) {
      starts.push(length);
      length += COMMA.length + viewBytes(map.views[i] as CachedView).length;
    }
    starts.push(length);
    const chunk = Buffer.allocUnsafeSlow(length);
    let at = 0;
    for (let i = c * MAP_CHUNK; i < end; i++) {
      at += COMMA.copy(chunk, at);
      at += viewBytes(map.views[i] as CachedView).copy(chunk, at);
    }
    map.bytes[c] = chunk;
    map.starts[c] = starts;
    map.size += length;
    this.mappedBytes += length;
  }

  /** Evicts the least recently used class maps but `using`'s while they hold over their budget. */
  private fitClassMaps(using: Group): void {
    const size = (using.map as ClassMap).size;
    if (this.mappedBytes <= Math.max(CLASS_MAPS_FLOOR, CLASS_MAPS_KEPT * size)) return;
    let largest = 0;
    for (const group of this.holding) largest = Math.max(largest, (group.map as ClassMap).size);
    const budget = Math.max(CLASS_MAPS_FLOOR, CLASS_MAPS_KEPT * largest);
    for (const group of this.holding) {
      if (this.mappedBytes <= budget) return;
      if (group !== using) this.dropClassMap(group);
    }
  }

  private dropClassMap(group: Group): void {
    if (group.map === null) return;
    this.mappedBytes -= group.map.size;
    group.map = null;
    this.mapped.delete(group);
    this.holding.delete(group);
  }

  /** The class maps' chunks holding `ids` must be read again: their views moved. */
  private classViewsMoved(ids: readonly string[]): void {
    for (const group of this.mapped) {
      const map = group.map as ClassMap;
      for (const id of ids) {
        const i = map.at.get(id);
        if (i === undefined) continue;
        const c = Math.floor(i / MAP_CHUNK);
        map.stale[c] = true;
        const chunk = map.bytes[c];
        if (chunk === null || chunk === undefined) continue;
        map.size -= chunk.length;
        this.mappedBytes -= chunk.length;
        map.bytes[c] = null;
      }
      if (map.size === 0) this.holding.delete(group);
    }
  }

  /** Whether `sub` can take a delta now; a backlogged one is marked behind until resync. */
  private reachable(sub: Subscriber): boolean {
    if (sub.behind) return false;
    if (sub.session.backlogged?.() === true) {
      sub.behind = true;
      this.leaveGroup(sub);
    }
    return !sub.behind;
  }

  /** The node's whole map as a stream would start with it, without subscribing (one-shot requests). */
  snapshot(nodeId: string): NetMap | undefined {
    const self = this.nodes.get(nodeId);
    if (self === undefined) return undefined;
    if (!this.views.has(nodeId)) this.refreshView(nodeId);
    return this.fullMap(self, this.policy.visibilityOf(self, this.nodes));
  }

  /** `self`'s map under `visibility`; records each peer's view as sent in `sent` (a new record), when given. */
  private fullMap(self: NodeRecord, visibility: Visibility, sent?: SentRecord): NetMap {
    return this.mapOf(
      self,
      visibility,
      this.walk(self, visibility, sent).map((cached) => cached.view),
    );
  }

  /**
   * The views of `self`'s peers under `visibility`, in a whole map's order; each recorded as sent in
   * `sent` (a new record), when given: a one-shot request keeps no record.
   */
  private walk(self: NodeRecord, visibility: Visibility, sent?: SentRecord): CachedView[] {
    const views: CachedView[] = [];
    const slots: number[] = [];
    // A policy's own list holds only the peers it lets the node see; without one, each is asked.
    const listed = visibility.peerIds !== undefined;
    for (const peer of this.candidates(visibility)) {
      if (peer.id === self.id || (!listed && !visibility.canSee(peer))) continue;
      views.push(this.peerView(visibility, peer));
      if (sent) slots.push(this.slotOf(peer.id));
    }
    if (sent === undefined) return views;
    // Recorded once the count is known: the record is sized once.
    sent.reserve(views.length);
    views.forEach((cached, i) => {
      sent.append(slots[i] as number, cached);
    });
    sent.fit();
    return views;
  }

  private mapOf(self: NodeRecord, visibility: Visibility, peers: NodeView[]): NetMap {
    const { self: view, ...rest } = this.restOf(self, visibility);
    // JSON.stringify's order is a whole map's bytes' order (see sendFull): self, peers, the rest.
    return { self: view, peers, ...rest };
  }

  /** Everything a whole map has but its peers (a resume's netmap). */
  private restOf(self: NodeRecord, visibility: Visibility): Omit<NetMap, 'peers'> {
    return {
      self: (this.views.get(self.id) as CachedView).view,
      packetFilter: visibility.packetFilter,
      tailnetRanges: this.tailnetRanges,
      ...(this.relayMap ? { relayMap: this.relayMap } : {}),
      ...(this.dns ? { dns: this.dns } : {}),
    };
  }

  /** Nodes online (streaming to any replica) and streams held here: what the metrics' gauges show. */
  onlineCounts(): { online: number; streams: number } {
    let online = 0;
    for (const id of this.nodes.keys()) if (this.isOnline(id)) online++;
    return { online, streams: this.subscribers.size };
  }

  /** New DNS settings: every connected node is sent them (names come from the peers it sees). */
  dnsChanged(dns: DnsSettings): void {
    this.dns = dns;
    const delta: Delta = { type: 'delta', dns };
    for (const sub of this.subscribers.values()) if (this.reachable(sub)) sub.session.send(delta);
  }

  /**
   * The stream ended; peers learn the node is offline. A session already replaced changes nothing
   * (false). `reloading`: the caller reads the node again at once (its last seen, just written), and
   * that reload tells them both in one change: one pass over its watchers, not two (at 10,000
   * allow-all each pass is over every stream, and a burst of drops held control for seconds).
   */
  disconnect(session: StreamSession, reloading = false): boolean {
    // Ended by shutdown: still the node's current stream (its last seen is recorded), but there is
    // nobody left to tell.
    if (this.ending.delete(session)) return true;
    const sub = this.subscribers.get(session.nodeId);
    if (sub?.session !== session) return false;
    this.subscribers.delete(session.nodeId);
    this.leaveGroup(sub);
    if (!reloading) this.retell([session.nodeId]);
    return true;
  }

  /** Tells the watchers of `nodeIds` how their views moved as the hub knows them (the reload meant to failed). */
  retell(nodeIds: Iterable<string>): void {
    for (const id of nodeIds) {
      const change = this.refreshView(id);
      if (change) this.propagate([id], [], [], undefined, this.presenceOnly(id, change));
    }
  }

  /**
   * The policy itself changed: every connected node's packet filter is decided again, and the peers
   * of `peersMoved` nodes (or of all); each is sent what differs.
   */
  policyChanged(peersMoved: ReadonlySet<string> | 'all'): void {
    // autoApprovers may approve other routes now: each router's own view is decided again (only a
    // node that advertises routes can have any approved, so the others' views cannot move), and so
    // is which router is primary for each subnet (as settle() does).
    const changed = [...this.routers].filter((id) => this.refreshView(id));
    if (this.electPrimaries()) for (const id of this.routers) if (!changed.includes(id)) changed.push(id);
    this.propagate(changed, [], [], { peersMoved });
  }

  /** The routes `node` is approved for (advertised, and approved by an admin or autoApprovers). */
  approvedOf(node: NodeRecord): string[] {
    // Nothing advertised, nothing approved: most nodes, and no need to ask the policy.
    if (node.advertisedRoutes.length === 0) return [];
    return this.policy.approvedRoutes ? this.policy.approvedRoutes(node) : adminApprovedRoutes(node);
  }

  /**
   * `peer` as one viewer sees it: its allowedIPs carry the approved routes the viewer is sent (by
   * the policy, or without one every exit route and the subnets it is primary for).
   */
  private peerView(visibility: Visibility, peer: NodeRecord): CachedView {
    const cached = this.views.get(peer.id) as CachedView;
    if (!this.routers.has(peer.id)) return cached;
    const routes = visibility.routesOf
      ? visibility.routesOf(peer)
      : this.approvedOf(peer).filter((r) => isExitRoute(r) || this.primaries.get(r) === peer.id);
    const view = toNodeView(peer, cached.view.online, routes, true);
    return { view, json: JSON.stringify(view), seq: 0 };
  }

  /** Ends every stream (shutdown); returns the nodes whose streams it ended. */
  closeAll(reason: string): string[] {
    const ended = [...this.subscribers.keys()];
    for (const sub of this.subscribers.values()) {
      this.ending.add(sub.session);
      sub.session.close(reason);
      sub.group = null;
    }
    this.subscribers.clear();
    for (const group of this.mapped) this.dropClassMap(group);
    this.groups.clear();
    return ended;
  }

  /** Recomputes a node's view; whether, and how, it differs from before. */
  private refreshView(nodeId: string): ViewChange {
    const node = this.nodes.get(nodeId);
    if (node === undefined) return false;
    const view = toNodeView(node, this.isOnline(nodeId), this.approvedOf(node));
    const json = JSON.stringify(view);
    const before = this.views.get(nodeId);
    if (before?.json === json) return false;
    if (before !== undefined && this.routers.has(nodeId)) this.previousViews.set(nodeId, before);
    this.views.set(nodeId, { view, json, seq: ++this.viewSeq });
    if (before === undefined || this.holdPresence === undefined) return 'view';
    // The same keys in the same order: equal JSON with the old presence is an equal rest.
    const { online, lastSeen } = before.view;
    return JSON.stringify({ ...view, online, lastSeen }) === before.json ? 'presence' : 'view';
  }

  /** `nodeId` alone when its change was presence-only (it may be held), else none. */
  private presenceOnly(nodeId: string, change: ViewChange): ReadonlySet<string> | undefined {
    return change === 'presence' ? new Set([nodeId]) : undefined;
  }

  /** The nodes a visibility may see: its own list when it has one, else every node. */
  private *candidates(visibility: Visibility): Iterable<NodeRecord> {
    if (!visibility.peerIds) {
      yield* this.nodes.values();
      return;
    }
    for (const id of visibility.peerIds()) {
      const node = this.nodes.get(id);
      if (node) yield node;
    }
  }

  private propagate(
    changed: readonly string[],
    removed: readonly string[],
    reidentified: readonly NodeRecord[],
    /** A new policy: every node's visibility is decided again, and these nodes' peers too. */
    policy?: { peersMoved: ReadonlySet<string> | 'all' },
    /** Those of `changed` whose views moved in presence only: held for their watchers (holdPresence). */
    presence?: ReadonlySet<string>,
  ) {
    if (policy === undefined && changed.length === 0 && removed.length === 0 && reidentified.length === 0) {
      return;
    }
    // Who a class sees may move with anything but views; a view moves its own chunk (see ClassMap).
    if (policy !== undefined || removed.length > 0 || reidentified.length > 0) {
      for (const group of this.mapped) this.dropClassMap(group);
    } else this.classViewsMoved(changed);
    const moved = policy?.peersMoved ?? new Set<string>();
    const affected =
      reidentified.length > 0 ? this.policy.affectedBy(reidentified, this.nodes) : new Set<string>();
    const reidentifiedIds = new Set(reidentified.map((n) => n.id));
    // Receivers sent the same bytes share one message object (see shareDelta).
    const shared = new Map<string, Delta>();
    // Only nodes' views changed (online, endpoints): just their watchers can need a message.
    const onlyViews = policy === undefined && removed.length === 0 && reidentified.length === 0;
    // Presence is held only where nothing else moved with it (visibility cannot have).
    const hold = onlyViews && this.schedule !== undefined && presence !== undefined && presence.size > 0;
    // Held presence is no batch to bound: it waits for its release.
    const allHeld = hold && changed.every((peerId) => presence.has(peerId));
    const isFull = (id: string) =>
      affected === 'all' || moved === 'all' || moved.has(id) || reidentifiedIds.has(id);
    // Only nodes' views changed: nobody's visibility is decided again.
    const decided = onlyViews
      ? undefined
      : this.decide(
          (id) => isFull(id) || policy !== undefined || (affected !== 'all' && affected.has(id)),
          isFull,
        );
    const watched = onlyViews ? this.watchersOf(changed) : null;
    // A join or a new identity (nothing removed, no new policy) moves nothing for the others.
    const visited =
      decided !== undefined && policy === undefined && removed.length === 0 && affected !== 'all'
        ? this.concernedBy(decided, [...changed, ...reidentifiedIds])
        : null;
    for (const sub of watched?.keys() ?? visited ?? this.subscribers.values()) {
      const id = sub.session.nodeId;
      const before = decided?.before.get(sub);
      // One with a delta pending or held was asked when it got it, and flush() asks again: a node that
      // every connect of a mass reconnect concerns (a shared server) would otherwise be asked each time.
      // One decided again was asked then.
      if (sub.behind) continue;
      if (before === undefined && sub.pending === null && sub.held === null && !this.reachable(sub)) continue;
      const out: Outgoing = sub.pending ?? this.scratch;
      out.askedAt ??= this.fanOut.since ?? undefined;

      // The same filter object is the same filter (see PolicyVisibility): not serialised to compare.
      if (before !== undefined && sub.visibility.packetFilter !== before.packetFilter) {
        const filterJson = JSON.stringify(sub.visibility.packetFilter);
        if (filterJson !== sub.filterJson) {
          sub.filterJson = filterJson;
          out.packetFilter = sub.visibility.packetFilter;
        }
      }
      const group = sub.group;
      if (group !== null && decided?.full.has(group)) {
        // Its class was compared whole once; each member is sent what moved.
        for (const [peerId, step] of this.compareClass(sub)) this.put(sub, peerId, step, out);
      } else if (group === null && isFull(id)) {
        this.eachToCompare(sub, (peerId) => this.sync(sub, peerId, out));
      } else {
        // Only pairs with a changed node can have changed (see VisibilityPolicy.affectedBy).
        for (const peerId of watched?.get(sub) ?? changed) {
          const step = this.step(sub, peerId);
          if (step === 'same' || peerId === id) continue;
          // Held unless a message to it is pending anyway with this peer in it.
          const held = hold && presence.has(peerId) && !out.upserted.has(peerId);
          this.put(sub, peerId, step, held ? this.heldFor(sub) : out);
        }
        for (const peerId of reidentifiedIds) this.sync(sub, peerId, out);
        for (const peerId of removed) this.sync(sub, peerId, out);
        // Decided again: which routes it is sent may have moved with it (with its class's, in a group).
        if (group === null ? before !== undefined : decided?.moved.has(group)) {
          for (const peerId of this.routers) this.sync(sub, peerId, out);
        }
      }

      const selfView = this.views.get(id) as CachedView;
      if (selfView.json !== sub.selfJson) {
        sub.selfJson = selfView.json;
        out.self = selfView;
      }
      if (isEmpty(out)) {
        if (out === this.scratch) out.askedAt = undefined;
        continue;
      }
      if (out === this.scratch) this.scratch = { upserted: new Map(), removed: new Set() };
      // Sent at once, a group's record may still have its members' own slots fitted (regroup).
      if (this.schedule === undefined) this.send(sub, out, shared, decided === undefined);
      else this.queue(sub, out);
    }
    this.steps.clear();
    if (decided !== undefined) this.regroup(decided);
    if (!allHeld && this.outbox.length > 0 && ++this.batchedChanges >= MAX_BATCHED_CHANGES) this.flush();
  }

  /**
   * Decides again the visibility of each in-step stream `again` names, before any is compared (so a
   * group is compared against its members' new visibilities), and regroups them: a group whose
   * members all take one new key takes it; a member whose key moves apart from the rest leaves with
   * a copy of the group's record as it was, and is compared stream by stream.
   */
  private decide(again: (id: string) => boolean, isFull: (id: string) => boolean): Decided {
    const decided: Decided = { before: new Map(), full: new Set(), moved: new Set(), merges: [], loose: [] };
    for (const sub of this.subscribers.values()) {
      const id = sub.session.nodeId;
      if (!again(id)) continue;
      if (sub.behind || (sub.pending === null && sub.held === null && !this.reachable(sub))) continue;
      decided.before.set(sub, sub.visibility);
      // A subscriber's node is known: settle() ends the streams of nodes that leave.
      sub.visibility = this.policy.visibilityOf(this.nodes.get(id) as NodeRecord, this.nodes);
      if (sub.group !== null) decided.moved.add(sub.group);
      else if (sub.visibility.shared !== undefined) decided.loose.push(sub);
    }
    for (const group of decided.moved) {
      const byKey = new Map<string | undefined, Subscriber[]>();
      for (const sub of group.members) {
        const key = sub.visibility.shared?.key;
        const subs = byKey.get(key);
        if (subs === undefined) byKey.set(key, [sub]);
        else subs.push(sub);
      }
      // The group stays with the members that keep its key, else with the most that share one.
      let keep = byKey.get(group.key);
      let keepKey = group.key;
      if (keep === undefined) {
        for (const [key, subs] of byKey) {
          if (key !== undefined && subs.length > (keep?.length ?? 0)) [keep, keepKey] = [subs, key];
        }
      }
      for (const [key, subs] of byKey) {
        if (subs === keep) continue;
        for (const sub of subs) {
          this.leaveGroup(sub, true);
          if (key !== undefined) decided.loose.push(sub);
        }
      }
      if (keep === undefined || keepKey === group.key) continue;
      if (this.groups.get(group.key) === group) this.groups.delete(group.key);
      group.key = keepKey;
      // Two groups with one key: both records will be its truth once compared, so one is dropped then.
      if (this.groups.has(keepKey)) decided.merges.push(group);
      else this.groups.set(keepKey, group);
    }
    for (const group of decided.moved) {
      for (const sub of group.members) if (isFull(sub.session.nodeId)) decided.full.add(group);
    }
    return decided;
  }

  /**
   * After the comparisons, every in-step record is the truth for its visibility: a group re-keyed
   * onto another's key joins it, and a stream with a key but a record of its own joins its key's
   * group, or makes its record that group's.
   */
  private regroup(decided: Decided): void {
    const touched = new Set(decided.moved);
    for (const group of decided.merges) {
      if (group.members.size === 0) continue;
      const into = this.groups.get(group.key);
      if (into === undefined) {
        this.groups.set(group.key, group);
        continue;
      }
      for (const sub of group.members) this.join(sub, into);
      group.members.clear();
      this.dropClassMap(group);
      touched.add(into);
    }
    for (const sub of decided.loose) {
      const key = sub.visibility.shared?.key;
      if (key === undefined || sub.group !== null || sub.behind) continue;
      if (this.subscribers.get(sub.session.nodeId) !== sub) continue;
      const group = this.groups.get(key);
      if (group === undefined) this.formGroup(sub, key);
      else {
        this.join(sub, group);
        touched.add(group);
      }
    }
    for (const group of touched) if (group.members.size > 0) this.fitOwnSlots(group);
  }

  /**
   * Calls `each` with every peer whose entry in `sub`'s record may have to move: every node it may
   * see, itself (a group's record may hold it), and every one recorded that it no longer sees.
   */
  private eachToCompare(sub: Subscriber, each: (peerId: string) => void): void {
    const seen = new Set<number>();
    for (const peer of this.candidates(sub.visibility)) {
      seen.add(this.slotOf(peer.id));
      each(peer.id);
    }
    const id = sub.session.nodeId;
    if (!seen.has(this.slotOf(id))) {
      seen.add(this.slotOf(id));
      each(id);
    }
    for (const slot of sub.sent.recorded()) {
      const peerId = this.slotIds.get(slot);
      if (!seen.has(slot) && peerId !== undefined) each(peerId);
    }
  }

  /** What moved for `sub`'s whole class (it is in a group), compared once per propagate(). */
  private compareClass(sub: Subscriber): [string, Step][] {
    const steps = this.stepsOf(sub.group as Group);
    if (steps.all === null) {
      const all: [string, Step][] = [];
      this.eachToCompare(sub, (peerId) => {
        const step = this.step(sub, peerId);
        if (step !== 'same') all.push([peerId, step]);
      });
      steps.all = all;
    }
    return steps.all;
  }

  private stepsOf(group: Group): Steps {
    let steps = this.steps.get(group);
    if (steps === undefined) {
      steps = { byPeer: new Map(), all: null };
      this.steps.set(group, steps);
    }
    return steps;
  }

  /** Makes `out` what `sub` is sent at the next flush (batched hubs): merged into what it has pending. */
  private queue(sub: Subscriber, out: Outgoing): void {
    if (sub.pending !== null) {
      if (sub.pending !== out) mergeInto(sub.pending, out);
      return;
    }
    sub.pending = out;
    this.outbox.push(sub);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      (this.schedule as (flush: () => void) => void)(() => this.flush());
    }
  }

  /** What `sub` holds of its peers' presence, made (and its release scheduled) on first use. */
  private heldFor(sub: Subscriber): Outgoing {
    if (sub.held !== null) return sub.held;
    sub.held = { upserted: new Map(), removed: new Set() };
    this.presenceOutbox.push(sub);
    if (!this.presenceScheduled) {
      this.presenceScheduled = true;
      (this.holdPresence as (release: () => void) => void)(() => this.releasePresence());
    }
    return sub.held;
  }

  /** Queues every held presence change for the next flush. */
  private releasePresence(): void {
    this.presenceScheduled = false;
    const subs = this.presenceOutbox;
    this.presenceOutbox = [];
    for (const sub of subs) {
      const held = sub.held;
      sub.held = null;
      // Replaced, gone, or sent it already (a whole map, or a flush that carried it).
      if (held === null || isEmpty(held) || this.subscribers.get(sub.session.nodeId) !== sub) continue;
      if (sub.pending === null && !this.reachable(sub)) continue; // resync sends a whole map
      this.queue(sub, held);
    }
  }

  /** Sends every pending delta (batched hubs). */
  private flush(): void {
    this.flushScheduled = false;
    this.batchedChanges = 0;
    const subs = this.outbox;
    this.outbox = [];
    const shared = new Map<string, Delta>();
    for (const sub of subs) {
      const out = sub.pending;
      sub.pending = null;
      // Replaced, gone, or fallen behind since (a whole map will carry it).
      if (out === null || this.subscribers.get(sub.session.nodeId) !== sub || !this.reachable(sub)) continue;
      // A message goes anyway: it carries the presence held for it.
      if (sub.held !== null) {
        mergeInto(out, sub.held);
        sub.held = null;
      }
      this.send(sub, out, shared, true);
    }
  }

  /**
   * Sends `sub` what `out` holds; with its record's token when `inStep` (its peers are then its
   * record's once it applies this), else none: it forgets its token. Nothing is held back from a
   * message that goes: a flush merges the held presence into it, and a hub that sends at once holds
   * none.
   */
  private send(sub: Subscriber, out: Outgoing, shared: Map<string, Delta>, inStep: boolean): void {
    const delta: Delta = { type: 'delta' };
    if (inStep && !sub.session.ownEncoding) delta.mapToken = sub.sent.token();
    if (out.self) delta.self = out.self.view;
    if (out.packetFilter) delta.packetFilter = out.packetFilter;
    if (out.upserted.size > 0) delta.peersUpserted = [...out.upserted.values()].map((c) => c.view);
    if (out.removed.size > 0) delta.peersRemoved = [...out.removed];
    const message = shareDelta(shared, delta, out, sub);
    if (message === delta && !sub.session.ownEncoding) withWire(delta, deltaBytes(delta, out, sub));
    sub.session.send(message);
    this.fanOut.delivered(out.askedAt);
  }

  /**
   * The subscribers that may see any of `nodeIds`, and those nodes' own, each with the nodes of
   * `nodeIds` it may see: visibility goes both ways, so these are the nodes' own peer lists. Null
   * when the policy cannot list peers (allow-all, where every node does watch every other). This
   * keeps a mass reconnect linear under a policy: a node coming online costs its peers, not the
   * whole tailnet; and a watcher is stepped through the changed nodes it sees, not through all of
   * them (3,300 nodes of a killed replica going offline were 11 M steps for 3,333 streams).
   */
  private watchersOf(nodeIds: readonly string[]): Map<Subscriber, string[]> | null {
    const out = new Map<Subscriber, string[]>();
    const add = (watcherId: string, nodeId: string) => {
      const sub = this.subscribers.get(watcherId);
      if (sub === undefined) return;
      const seen = out.get(sub);
      if (seen === undefined) out.set(sub, [nodeId]);
      else seen.push(nodeId);
    };
    for (const id of nodeIds) {
      const node = this.nodes.get(id);
      if (node === undefined) continue;
      // A stream behind is decided again only at its resync: its visibility may be an old policy's.
      const own = this.subscribers.get(id);
      const visibility =
        own !== undefined && !own.behind ? own.visibility : this.policy.visibilityOf(node, this.nodes);
      if (!visibility.peerIds) return null;
      // One node's list holds each peer once and not the node (see Visibility.peerIds).
      add(id, id);
      for (const peerId of visibility.peerIds()) add(peerId, id);
    }
    return out;
  }

  /**
   * The streams a join or new identity of `nodeIds` can move anything for: those decided again, the
   * members of their groups, and the nodes' watchers (their own streams too). Any other stream sees
   * none of them, did not before (its peers would have moved: it would be decided again), and keeps
   * its visibility. Null when the policy cannot list watchers (allow-all: everyone is one). A
   * person's new device at 10,000 per-person nodes stepped every stream through it for its 203.
   */
  private concernedBy(decided: Decided, nodeIds: readonly string[]): Set<Subscriber> | null {
    const watchers = this.watchersOf(nodeIds);
    if (watchers === null) return null;
    const out = new Set(watchers.keys());
    for (const sub of decided.before.keys()) out.add(sub);
    for (const group of decided.moved) for (const sub of group.members) out.add(sub);
    return out;
  }

  /** Brings one peer in `sub`'s map up to date: added or changed if visible, removed if not. */
  private sync(sub: Subscriber, peerId: string, out: Outgoing): void {
    this.put(sub, peerId, this.step(sub, peerId), out);
  }

  /**
   * Compares `peerId` as `sub` may see it now with `sub`'s record, and records it: once per group
   * and propagate() (the other members take the same step). A group compares its own members too
   * (see put).
   */
  private step(sub: Subscriber, peerId: string): Step {
    const group = sub.group;
    const steps = group === null ? undefined : this.stepsOf(group);
    const known = steps?.byPeer.get(peerId);
    if (known !== undefined) return known;
    const peer = this.nodes.get(peerId);
    const visible =
      peer !== undefined &&
      (group === null
        ? sub.visibility.canSee(peer)
        : (sub.visibility.shared as SharedVisibility).canSee(peer));
    let step: Step = 'same';
    if (visible) {
      const cached = this.peerView(sub.visibility, peer);
      // A node that just began advertising routes nobody approved has the shared view it had: the
      // viewer holds that one, and the per-viewer view that now replaces it may be the same bytes.
      const previous = this.previousViews.get(peerId) ?? this.views.get(peerId);
      if (sub.sent.record(this.slotOf(peerId), cached, previous)) step = cached;
    } else {
      const slot = this.slots.get(peerId);
      if (slot !== undefined && sub.sent.delete(slot)) step = 'removed';
    }
    steps?.byPeer.set(peerId, step);
    return step;
  }

  /** Puts a step in what `sub` is to be sent; a stream is never sent itself. */
  private put(sub: Subscriber, peerId: string, step: Step, out: Outgoing): void {
    if (step === 'same' || peerId === sub.session.nodeId) return;
    if (step === 'removed') {
      out.upserted.delete(peerId);
      out.removed.add(peerId);
    } else {
      out.removed.delete(peerId);
      out.upserted.set(peerId, step);
    }
    if (out !== sub.held) this.unhold(sub, peerId);
  }

  /** What is held of `peerId` for `sub` is older than what it is now to be sent: it must not follow. */
  private unhold(sub: Subscriber, peerId: string): void {
    sub.held?.upserted.delete(peerId);
    sub.held?.removed.delete(peerId);
  }
}

/** One propagate()'s visibility decisions (see NetmapHub.decide). */
interface Decided {
  /** Each stream decided again, and its visibility before. */
  before: Map<Subscriber, Visibility>;
  /** Groups a member of which is to be compared whole: every member is (same class, same peers). */
  full: Set<Group>;
  /** Groups with a member decided again: each member's routes are compared again. */
  moved: Set<Group>;
  /** Groups re-keyed onto a key another group has: merged once compared. */
  merges: Group[];
  /** Streams with a key and a record of their own: they join their key's group once compared. */
  loose: Subscriber[];
}

const isEmpty = (out: Outgoing) =>
  out.upserted.size === 0 && out.removed.size === 0 && !out.packetFilter && !out.self;

/**
 * Adds `later`'s changes to `into`: a peer in both takes `later`'s (upserted or removed). The hub's
 * held presence is disjoint from what is pending (sync drops a held view a newer one replaces), so
 * order only matters for what each carries alone.
 */
function mergeInto(into: Outgoing, later: Outgoing): void {
  for (const [peerId, view] of later.upserted) {
    into.removed.delete(peerId);
    into.upserted.set(peerId, view);
  }
  for (const peerId of later.removed) {
    into.upserted.delete(peerId);
    into.removed.add(peerId);
  }
  if (later.packetFilter) into.packetFilter = later.packetFilter;
  if (later.self) into.self = later.self;
  if (later.askedAt !== undefined) into.askedAt = Math.min(into.askedAt ?? later.askedAt, later.askedAt);
}

/**
 * `delta`'s JSON as UTF-8, put together from the views' kept JSON (see sendFull): with presence
 * merged into each node's delta, a restart's deltas are mostly unique (each member's own devices
 * differ) and each would otherwise be serialised peer by peer.
 */
function deltaBytes(delta: Delta, out: Outgoing, sub: Subscriber): Buffer {
  const parts: Buffer[] = [DELTA_HEAD];
  if (delta.mapToken !== undefined) parts.push(DELTA_TOKEN, Buffer.from(JSON.stringify(delta.mapToken)));
  if (out.self) parts.push(DELTA_SELF, viewBytes(out.self));
  // Set with the filter it names (propagate).
  if (out.packetFilter) parts.push(DELTA_FILTER, Buffer.from(sub.filterJson));
  if (out.upserted.size > 0) {
    parts.push(DELTA_UPSERTED);
    let first = true;
    for (const cached of out.upserted.values()) {
      if (!first) parts.push(COMMA);
      first = false;
      parts.push(viewBytes(cached));
    }
    parts.push(PEERS_END);
  }
  if (delta.peersRemoved) parts.push(Buffer.from(`,"peersRemoved":${JSON.stringify(delta.peersRemoved)}`));
  parts.push(DELTA_END);
  return Buffer.concat(parts);
}

/** A whole map's bytes after its peers' (`],` then the rest of its JSON, in JSON.stringify's order). */
function restBytes(map: Omit<NetMap, 'peers'> & Partial<Pick<NetMap, 'peers'>>): Buffer {
  const { self: _self, peers: _peers, ...rest } = map;
  return Buffer.from(`],${JSON.stringify(rest).slice(1)}}`);
}

/** A view's JSON as UTF-8, kept with it (a shared view is sent to many). */
function viewBytes(cached: CachedView): Buffer {
  cached.bytes ??= ownBytes(cached.json);
  return cached.bytes;
}

/** Between a delta key's parts: JSON text never holds it raw (JSON.stringify escapes control characters). */
const KEY_PART = '\u0001';

/**
 * The message object an earlier receiver of the same bytes got, or `delta` (remembered for the next):
 * a change that reaches a thousand nodes with the same peers is then serialised once. Shared views
 * are named by their version; views built for one viewer (routers) and self by their JSON. The key's
 * parts are joined, not serialised as one array: a policy change at 10,000 nodes escaped every
 * node's filter JSON again for its key (each filter names its node's own addresses).
 */
function shareDelta(shared: Map<string, Delta>, delta: Delta, out: Outgoing, sub: Subscriber): Delta {
  // Each view ends with a newline, which neither a version nor JSON text holds raw.
  let views = '';
  for (const c of out.upserted.values()) views += `${c.seq > 0 ? c.seq : c.json}\n`;
  const key = [
    delta.mapToken ?? '',
    views,
    delta.peersRemoved ? JSON.stringify(delta.peersRemoved) : '',
    out.packetFilter ? sub.filterJson : '',
    out.self ? out.self.json : '',
  ].join(KEY_PART);
  const earlier = shared.get(key);
  if (earlier) return earlier;
  shared.set(key, delta);
  return delta;
}
