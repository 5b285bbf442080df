// When the hub's held deltas go out (NetmapHub's `schedule`). An isolated change goes on the next
// event-loop turn; during a burst (a mass reconnect after a restart) flushes are at least `gapMs`
// apart, so each node gets one message per gap with everything that changed for it, not one per
// turn. At 10,000 per-person nodes a reconnect turn held only a few connects, and every shared
// server was sent a message for each: a million small messages, most of control's restart.

export function pacedFlush(gapMs: number, now: () => number = () => performance.now()) {
  let last = Number.NEGATIVE_INFINITY;
  return (flush: () => void): void => {
    const run = () => {
      last = now();
      flush();
    };
    const wait = last + gapMs - now();
    if (wait <= 0) setImmediate(run);
    else setTimeout(run, wait);
  };
}

/** The gap between two flushes in a burst: short against the 1 s fan-out goal. */
export const FLUSH_GAP_MS = 100;
