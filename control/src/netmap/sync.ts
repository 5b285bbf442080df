import type { Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import { CoalescingRefresh } from '../refresh.js';
import type { NodeRecord } from '../tailnet/records.js';
import type { NetmapHub } from './hub.js';

// Keeps the hub's picture of the tailnet in step with the database. Any writer (this server, the
// admin CLI, another replica) only has to commit and call refresh() or trigger the change feed.
// Reloading the node list is one indexed query; the hub then sends only what differs.
//
// Time changes the picture too: a node key expires with no write at all. After every load a timer
// is set for the next deadline, so an expired node leaves its peers' maps at its deadline rather
// than at the next unrelated change.

/** setTimeout's longest delay; a later deadline is reached in several hops. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Fire just after the deadline: expiry is "deadline <= now", and timers may round down by a millisecond. */
const DEADLINE_SLACK_MS = 5;

export class NetmapSync {
  private readonly refresher = new CoalescingRefresh((askedAt) => this.load(askedAt));
  private deadlineTimer: NodeJS.Timeout | null = null;
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

  private async load(askedAt: number): Promise<void> {
    const nodes = await this.store.listNodes();
    this.hub.fanOut.during(askedAt, () => this.hub.update(nodes));
    this.onLoad(nodes);
    this.scheduleNextExpiry(nodes);
  }

  private scheduleNextExpiry(nodes: readonly NodeRecord[]): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
    if (this.closed) return;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const node of nodes) {
      const at = node.keyExpiry === null ? Number.NaN : Date.parse(node.keyExpiry);
      if (at > now && at < next) next = at;
    }
    if (next === Number.POSITIVE_INFINITY) return;
    this.deadlineTimer = setTimeout(
      () => this.refresh().catch((err) => this.log.error(`expiring node keys: ${errorText(err)}`)),
      Math.min(next - now + DEADLINE_SLACK_MS, MAX_TIMER_MS),
    );
    this.deadlineTimer.unref();
  }
}
