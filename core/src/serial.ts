/**
 * Runs operations one at a time, in call order; a failed operation does not stop the ones after it
 * (its caller gets the rejection).
 */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(op: () => Promise<T>): Promise<T> {
    const next = this.tail.then(op, op);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
