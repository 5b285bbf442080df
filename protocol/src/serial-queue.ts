/** Runs tasks one at a time in arrival order; a failed task does not stop the ones after it. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has finished. */
  async drain(): Promise<void> {
    await this.tail;
  }
}

/**
 * Runs `run` over items in batches, one batch at a time: the items added while a batch is on its
 * way go together in the next. A herd of thousands of requests (a killed replica's nodes arriving
 * at another) then costs a few database round trips, not one each, with no wait added when idle.
 * add() settles with its item's batch (a failed batch fails each of its items alone).
 */
export class BatchQueue<T, R> {
  private readonly serial = new SerialQueue();
  private gathering: { items: T[]; result: Promise<R> } | null = null;

  constructor(private readonly run: (items: readonly T[]) => Promise<R>) {}

  add(item: T): Promise<R> {
    if (this.gathering === null) {
      const items: T[] = [];
      const result = this.serial.run(() => {
        this.gathering = null;
        return this.run(items);
      });
      this.gathering = { items, result };
    }
    this.gathering.items.push(item);
    return this.gathering.result;
  }
}
