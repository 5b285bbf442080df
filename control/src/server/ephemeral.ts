import type { RunExclusive } from '../db/open.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../log.js';
import type { NetmapHub } from '../netmap/hub.js';
import type { NetmapSync } from '../netmap/sync.js';
import type { Background } from './background.js';

// Ephemeral nodes (registered with an --ephemeral key: CI jobs, containers) are deleted once they
// have been offline for a grace period, so short-lived machines do not pile up in the tailnet. A
// periodic sweep rather than a timer per disconnect also catches nodes that never connected and
// nodes left offline across a restart.

export const EPHEMERAL_GRACE_MS = 2 * 60_000;

export function startEphemeralSweeper(
  deps: {
    store: Store;
    hub: NetmapHub;
    sync: NetmapSync;
    log: Logger;
    background: Background;
    exclusive: RunExclusive;
  },
  graceMs = EPHEMERAL_GRACE_MS,
): () => void {
  const sweep = async () => {
    const cutoff = Date.now() - graceMs;
    let deleted = 0;
    for (const node of await deps.store.listNodes()) {
      if (!node.ephemeral || (node.streamedBy ?? null) !== null || deps.hub.isOnline(node.id)) continue;
      if (Date.parse(node.lastSeen ?? node.createdAt) > cutoff) continue;
      if (await deps.store.deleteNode(node.id)) {
        deps.log.info(
          `deleted ephemeral node ${node.name}: offline since ${node.lastSeen ?? 'registration'}`,
        );
        deleted++;
      }
    }
    if (deleted > 0) await deps.sync.refresh();
  };
  const timer = setInterval(
    () =>
      deps.background.run('ephemeral node sweep', async () => {
        await deps.exclusive('ephemeral node sweep', sweep);
      }),
    Math.max(1_000, Math.floor(graceMs / 4)),
  );
  timer.unref();
  return () => clearInterval(timer);
}
