// When a change has reached every node it concerns: each node reports that its picture of the map
// changed, the change's test is asked of that node's picture, and the first time it holds is that
// node's arrival time. Nodes outside `expect` are ignored; a node counts once.

export class FanOut<Picture> {
  private readonly arrived = new Map<number, number>();
  private readonly expected: ReadonlySet<number>;

  constructor(
    expect: readonly number[],
    private readonly reached: (picture: Picture) => boolean,
    private readonly t0: number,
  ) {
    this.expected = new Set(expect);
  }

  /** Node `index`'s picture changed at `now`: records its arrival if the change is in it now. */
  changed(index: number, picture: Picture, now: number): void {
    if (!this.expected.has(index) || this.arrived.has(index)) return;
    if (this.reached(picture)) this.arrived.set(index, now - this.t0);
  }

  get done(): boolean {
    return this.arrived.size === this.expected.size;
  }

  /** Arrival times (ms after t0) of the nodes reached so far. */
  times(): number[] {
    return [...this.arrived.values()];
  }

  get expectedCount(): number {
    return this.expected.size;
  }
}
