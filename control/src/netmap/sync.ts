import type { Store } from '../db/store.js';
import type { NetmapHub } from './hub.js';

// Keeps the hub's picture of the tailnet in step with the database. Any writer (this server, the
// admin CLI, another replica) only has to commit and call refresh() or trigger the change feed.
// Reloading the node list is one indexed query; the hub then sends only what differs.

export class NetmapSync {
  private current: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly hub: NetmapHub,
  ) {}

  /** Resolves once the hub reflects every commit made before the call. */
  refresh(): Promise<void> {
    if (this.current === null) {
      this.current = this.load().finally(() => {
        this.current = null;
      });
      return this.current;
    }
    // A load is under way and may have read before the caller's commit: queue one more, shared by
    // every caller that arrives meanwhile.
    this.queued ??= this.current
      .catch(() => {})
      .then(() => {
        this.queued = null;
        return this.refresh();
      });
    return this.queued;
  }

  private async load(): Promise<void> {
    this.hub.update(await this.store.listNodes());
  }
}
