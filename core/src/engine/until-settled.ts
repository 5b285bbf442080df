import type { EventEmitter } from 'node:events';
import type { WeftError } from '../errors.js';

/**
 * Waits until `check`, asked now and at every 'change', settles: 'done' resolves, an error
 * rejects, null waits on. After `timeoutMs` it rejects with `timeout()`.
 */
export function untilSettled(
  emitter: EventEmitter<{ change: [] }>,
  check: () => WeftError | 'done' | null,
  timeoutMs: number,
  timeout: () => WeftError,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (outcome: WeftError | 'done') => {
      clearTimeout(timer);
      emitter.off('change', listener);
      if (outcome === 'done') resolve();
      else reject(outcome);
    };
    const listener = () => {
      const outcome = check();
      if (outcome !== null) finish(outcome);
    };
    const timer = setTimeout(() => finish(timeout()), timeoutMs);
    emitter.on('change', listener);
    listener();
  });
}
