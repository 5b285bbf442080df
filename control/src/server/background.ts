import { errorText, type Logger } from '../log.js';

/** Fire-and-forget work (last-seen writes, refreshes) that shutdown waits for before closing the database. */
export class Background {
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly log: Logger) {}

  run(what: string, fn: () => Promise<void>): void {
    const task = fn()
      .catch((err) => this.log.error(`${what}: ${errorText(err)}`))
      .finally(() => this.running.delete(task));
    this.running.add(task);
  }

  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }
}
