// Stream connects waiting for their hub work (the node's whole map, and telling its peers it is
// online), done for at most `turnMs` per event-loop turn, in arrival order. Done in the turn of each
// upgrade, a burst of thousands (an office back after an outage) kept control from accepting
// anything for seconds at a time: upgrades waited in the kernel's queue past the nodes' patience,
// the nodes gave up and came back to wait again, and control still did the work of each one that
// had left. Queued, each upgrade is answered at once, and a connect whose node has gone by its
// turn costs nothing: a connect is run no sooner than the turn after the one it was added in, so
// its socket has been read once more and a node that left before its upgrade was answered (its
// request and the end of its connection were both waiting) shows as closed.

interface Waiting {
  connect: () => void;
  /** Ends the stream instead, at shutdown: its upgrade was answered, so only closing it ends it. */
  drop: () => void;
  /** Drains finished when it was added: it runs in a later one. */
  turn: number;
}

export class ConnectQueue {
  private waiting: Waiting[] = [];
  /** Index of the next connect in `waiting` (taken from the front without moving the rest). */
  private head = 0;
  private turn = 0;
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly turnMs: number,
    /** Reports a connect (or drop) that threw; the queue goes on with the next. */
    private readonly failed: (err: unknown) => void,
  ) {}

  /** Runs `connect` in a later turn, after every connect added before it; once closed, `drop`. */
  add(connect: () => void, drop: () => void): void {
    if (this.closed) {
      this.run(drop);
      return;
    }
    this.waiting.push({ connect, drop, turn: this.turn });
    this.schedule();
  }

  /**
   * Drops the waiting connects and every one added later. Shutdown calls it before closing every
   * stream: a connect run after that would serve a map and announce its node online while control
   * stops, and a stream left open without one (not yet in the hub, so not closed with its streams)
   * held the shutdown up for good: it waits for every stream to end.
   */
  close(): void {
    this.closed = true;
    const dropped = this.waiting.slice(this.head);
    this.waiting = [];
    this.head = 0;
    for (const w of dropped) this.run(w.drop);
  }

  private run(step: () => void): void {
    try {
      step();
    } catch (err) {
      this.failed(err);
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.drain);
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    const turn = this.turn;
    const end = performance.now() + this.turnMs;
    let next = this.waiting[this.head];
    while (next !== undefined && next.turn < turn) {
      this.head++;
      this.run(next.connect);
      next = performance.now() < end ? this.waiting[this.head] : undefined;
    }
    this.turn++;
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
      return;
    }
    if (this.head > 1024) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    this.schedule();
  };
}
