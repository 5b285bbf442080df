// When the hub's held deltas go out (NetmapHub's `schedule`). After a quick flush the next goes on
// the next event-loop turn, so an isolated change is not delayed. After a long one (a mass reconnect
// after a restart: each shared server, seen by every member, coming online is a message to every
// online member) the next waits `factor` times as long, capped: flushing then takes at most
// 1 / (1 + factor) of control's time, and what piles up meanwhile is merged into one message per
// node. At 10,000 per-person nodes, one flush per turn was millions of small socket writes, a third
// of a restart's CPU (a quarter still with a factor of 3).

/** A flush that took t ms is followed by a pause of FLUSH_PAUSE_FACTOR × t, at most FLUSH_PAUSE_MAX_MS. */
export const FLUSH_PAUSE_FACTOR = 6;
/** Short against the 1 s fan-out goal: a change in a burst waits at most this for its flush. */
export const FLUSH_PAUSE_MAX_MS = 500;

export function pacedFlush(
  factor = FLUSH_PAUSE_FACTOR,
  maxPauseMs = FLUSH_PAUSE_MAX_MS,
  now: () => number = () => performance.now(),
) {
  /** Before this time the next flush waits. */
  let pausedUntil = Number.NEGATIVE_INFINITY;
  return (flush: () => void): void => {
    const run = () => {
      const start = now();
      flush();
      const end = now();
      // Never shortens a pause already set: a flush scheduled before an early one (the hub's
      // 256-change bound) may find little left, and must not cancel the long flush's pause.
      pausedUntil = Math.max(pausedUntil, end + Math.min(maxPauseMs, (end - start) * factor));
    };
    const wait = pausedUntil - now();
    if (wait <= 0) setImmediate(run);
    // Unreferenced: a paused flush must not hold a stopping control up (its streams are ended).
    else setTimeout(run, wait).unref();
  };
}
