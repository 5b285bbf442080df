import { SerialQueue } from '@weft/protocol';
import type { Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import { CoalescingRefresh } from '../refresh.js';
import type { NodeRecord } from '../tailnet/records.js';
import type { NetmapHub } from './hub.js';

// Keeps the hub's picture of the tailnet in step with the database. A writer that changed known
// nodes commits and calls refreshNodes(ids): only those rows are read and applied, so a join costs
// its watchers rather than a reload of every node (O(N) each, which made 10,000 registrations
// quadratic). So do a reaped replica's streams and another replica's commits that the change feed
// names by node. What cannot be narrowed to nodes (a change the feed cannot name, a user, a key
// deadline) calls refresh(), which reloads the node list. Both go through one queue:
// a reload read before a node's commit must not be applied after that node's own read. A partial
// read that fails falls back to a reload: the change feed skips this process's own commits, so
// nothing else would bring the committed change to the hub.
//
// Time changes the picture too: a node key expires with no write at all. After every load a timer
// is set for the next deadline, so an expired node leaves its peers' maps at its deadline rather
// than at the next unrelated change.

/** setTimeout's longest delay; a later deadline is reached in several hops. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Fire just after the deadline: expiry is "deadline <= now", and timers may round down by a millisecond. */
const DEADLINE_SLACK_MS = 5;

export class NetmapSync {
  private readonly queue = new SerialQueue();
  private readonly refresher = new CoalescingRefresh((askedAt) => this.queue.run(() => this.load(askedAt)));
  /** The nodes the next queued partial read will take, when it was first asked for, and when it is done. */
  private batch: { ids: Set<string>; askedAt: number; done: Promise<void> } | null = null;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private deadlineAt = Number.POSITIVE_INFINITY;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly hub: NetmapHub,
    private readonly log: Logger,
    /** Also told every load (the relays' member list follows the same node table). */
    private readonly onLoad: (nodes: readonly NodeRecord[]) => void = () => {},
  ) {}

  /** Stops the deadline timer (shutdown). */
  close(): void {
    this.closed = true;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
  }

  /** Resolves once the hub reflects every commit made before the call. */
  refresh(): Promise<void> {
    return this.refresher.run();
  }

  /**
   * Resolves once the hub reflects every commit to the nodes `ids` made before the call. Callers
   * arriving while the queue is busy share one read.
   */
  refreshNodes(ids: Iterable<string>): Promise<void> {
    if (this.batch === null) {
      const batch = { ids: new Set<string>(), askedAt: performance.now(), done: Promise.resolve() };
      batch.done = this.queue
        .run(() => {
          this.batch = null;
          return this.loadNodes([...batch.ids], batch.askedAt);
        })
        .catch((err) => {
          this.log.warn(`reading ${batch.ids.size} changed node(s) failed, reloading all: ${errorText(err)}`);
          // Without the database, peers still learn what the hub knows itself: a stream that ended
          // here waits for this read to tell them (NetmapHub.disconnect).
          return this.refresh().catch((again) => {
            this.hub.retell(batch.ids);
            throw again;
          });
        });
      this.batch = batch;
    }
    for (const id of ids) this.batch.ids.add(id);
    return this.batch.done;
  }

  private async load(askedAt: number): Promise<void> {
    const nodes = await this.store.listNodes();
    this.hub.fanOut.during(askedAt, () => this.hub.update(nodes));
    this.onLoad(nodes);
    this.scheduleNextExpiry(nodes);
  }

  private async loadNodes(ids: readonly string[], askedAt: number): Promise<void> {
    const rows = await this.store.nodesByIds(ids);
    const keysBefore = ids.map((id) => this.hub.record(id)?.nodeKey);
    this.hub.fanOut.during(askedAt, () => this.hub.apply(ids, rows));
    // The relays' member list only moves when a node key comes or goes.
    if (ids.some((id, i) => this.hub.record(id)?.nodeKey !== keysBefore[i]))
      this.onLoad([...this.hub.records()]);
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const node of rows) next = Math.min(next, deadlineOf(node, now));
    if (next < this.deadlineAt) this.scheduleAt(next, now);
  }

  private scheduleNextExpiry(nodes: readonly NodeRecord[]): void {
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const node of nodes) next = Math.min(next, deadlineOf(node, now));
    this.scheduleAt(next, now);
  }

  /** Reloads at `next` (a key deadline; infinity: none). */
  private scheduleAt(next: number, now: number): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
    this.deadlineAt = Number.POSITIVE_INFINITY;
    if (this.closed || next === Number.POSITIVE_INFINITY) return;
    this.deadlineAt = next;
    this.deadlineTimer = setTimeout(
      () => this.refresh().catch((err) => this.log.error(`expiring node keys: ${errorText(err)}`)),
      Math.min(next - now + DEADLINE_SLACK_MS, MAX_TIMER_MS),
    );
    this.deadlineTimer.unref();
  }
}

/** When `node`'s key expires, if later than `now`; infinity otherwise. */
function deadlineOf(node: NodeRecord, now: number): number {
  const at = node.keyExpiry === null ? Number.NaN : Date.parse(node.keyExpiry);
  return at > now ? at : Number.POSITIVE_INFINITY;
}
