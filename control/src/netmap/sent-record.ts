// What one stream was last sent of each peer, so only real changes are sent. At 10,000 nodes where
// shared servers see everyone, a hub keeps millions of (stream, peer) pairs: as a Map entry each
// (about 40 bytes on V8's heap) they were most of control's live memory, and V8 sizes its heap by
// what is live. Here a pair is the peer's slot (a number the hub gives each node) and the version of
// the peer's shared view that was sent: 12 bytes in two typed arrays sorted by slot, outside V8's
// heap. A view made for this viewer alone (a router's routes as this viewer may see them) has no
// version (0): its JSON is kept instead. A record that holds most slots (allow-all: every node sees
// every other, 100 million pairs at 10,000 nodes) keeps only the versions, indexed by slot: 8 bytes
// a pair.

/** A peer view as sent: its version (0 for one made for this viewer alone) and its JSON. */
export interface SentView {
  readonly seq: number;
  readonly json: string;
}

/** A dense record's version for a slot it does not hold (versions are 0 or more). */
const ABSENT = -1;

export class SentRecord {
  /**
   * The recorded slots, sorted, their versions at the same index in `seqs`; null when dense: `seqs`
   * is then indexed by slot, ABSENT where nothing is recorded.
   */
  private slots: Int32Array | null = new Int32Array(8);
  private seqs = new Float64Array(8);
  private count = 0;
  /** Appended out of slot order since the last lookup (see append). */
  private unsorted = false;
  /** JSON of the views made for this viewer alone, by slot. */
  private readonly own = new Map<number, string>();

  /**
   * Records `view` as sent for `slot`; whether it differs from what was sent before (it must be
   * sent). Versions name the same content only within one kind of view: a peer that became a router
   * (its views now made per viewer) is compared by JSON with the shared view it had before
   * (`previous`: its last shared view, when the hub still has it), the other way round with the
   * JSON kept here, so a viewer whose view did not move is not sent it again.
   */
  record(slot: number, view: SentView, previous?: SentView): boolean {
    let i = this.find(slot);
    if (i >= 0) {
      const was = this.seqs[i] as number;
      const same =
        was === view.seq
          ? view.seq !== 0 || this.own.get(slot) === view.json
          : was === 0
            ? this.own.get(slot) === view.json
            : view.seq === 0 && previous?.seq === was && previous.json === view.json;
      this.keep(i, slot, view);
      return !same;
    }
    if (this.slots === null) {
      this.setDense(slot, view);
      return true;
    }
    i = ~i;
    this.grow();
    this.slots.copyWithin(i + 1, i, this.count);
    this.seqs.copyWithin(i + 1, i, this.count);
    this.slots[i] = slot;
    this.count++;
    this.keep(i, slot, view);
    this.balance();
    return true;
  }

  /**
   * Records `view` as sent for `slot`, a peer not recorded yet (a whole map being built): no search
   * and no moving, so a map of 10,000 peers is recorded in linear time even when its peers come in
   * no particular order (they are sorted once, at the next lookup).
   */
  append(slot: number, view: SentView): void {
    if (this.slots === null) {
      this.setDense(slot, view);
      return;
    }
    // Doubling, as fit() gives the slack back: by an eighth, a record was copied some fifty times on
    // its way to 9,800 peers. A record fitted while empty has no room to double.
    if (this.count === this.slots.length) this.resize(Math.max(8, this.count * 2));
    if (this.count > 0 && (this.slots[this.count - 1] as number) > slot) this.unsorted = true;
    this.slots[this.count] = slot;
    this.count++;
    this.keep(this.count - 1, slot, view);
  }

  /** Forgets `slot`; whether it was recorded. */
  delete(slot: number): boolean {
    const i = this.find(slot);
    if (i < 0) return false;
    if (this.slots === null) this.seqs[i] = ABSENT;
    else {
      this.slots.copyWithin(i, i + 1, this.count);
      this.seqs.copyWithin(i, i + 1, this.count);
    }
    this.count--;
    this.own.delete(slot);
    this.balance();
    return true;
  }

  /** Gives back the room `append` grew into (once a whole map is recorded). */
  fit(): void {
    if (this.slots !== null) this.resize(this.count);
    this.balance();
  }

  /** The recorded slots, as a copy (the caller may delete while going through them). */
  recorded(): Int32Array {
    this.sort();
    if (this.slots !== null) return this.slots.slice(0, this.count);
    const out = new Int32Array(this.count);
    let n = 0;
    this.seqs.forEach((seq, slot) => {
      if (seq !== ABSENT) out[n++] = slot;
    });
    return out;
  }

  /** A record of its own with the same content, to change apart from this one. */
  clone(): SentRecord {
    const copy = new SentRecord();
    copy.slots = this.slots?.slice() ?? null;
    copy.seqs = this.seqs.slice();
    copy.count = this.count;
    copy.unsorted = this.unsorted;
    for (const [slot, json] of this.own) copy.own.set(slot, json);
    return copy;
  }

  /** Bytes of the typed arrays (outside V8's heap), the views' JSON aside. */
  get bytes(): number {
    return this.seqs.byteLength + (this.slots?.byteLength ?? 0);
  }

  private keep(i: number, slot: number, view: SentView): void {
    this.seqs[i] = view.seq;
    if (view.seq === 0) this.own.set(slot, view.json);
    else this.own.delete(slot);
  }

  /** Records a slot a dense record does not hold, growing it by an eighth when the slot is past its end. */
  private setDense(slot: number, view: SentView): void {
    if (slot >= this.seqs.length) {
      const seqs = new Float64Array(Math.max(slot + 1, this.seqs.length + (this.seqs.length >> 3)));
      seqs.fill(ABSENT, this.seqs.length);
      seqs.set(this.seqs);
      this.seqs = seqs;
    }
    // Counted once: append's callers give each slot once, but a slip must not skew the count.
    if (this.seqs[slot] === ABSENT) this.count++;
    this.keep(slot, slot, view);
    this.balance();
  }

  /**
   * Takes the smaller form: dense costs 8 bytes for each slot up to its end, sorted 12 for each one
   * recorded. Dense only when it saves a fifth, back to sorted once it costs a quarter more, so a
   * record near the line does not change form at every join and leave. The hub never gives a slot
   * twice: as nodes come and go a dense record's array fills with holes, and without that bound a
   * long-lived one would cost up to twice the sorted form.
   */
  private balance(): void {
    if (this.slots === null) {
      if (this.seqs.length * 8 * 4 > this.count * 12 * 5) this.toSorted();
      return;
    }
    this.sort();
    if (this.count === 0) return;
    const span = (this.slots[this.count - 1] as number) + 1;
    if (span * 8 * 5 <= this.count * 12 * 4) this.toDense(span);
  }

  private toDense(span: number): void {
    const slots = this.slots as Int32Array;
    const seqs = new Float64Array(span).fill(ABSENT);
    for (let i = 0; i < this.count; i++) seqs[slots[i] as number] = this.seqs[i] as number;
    this.slots = null;
    this.seqs = seqs;
  }

  private toSorted(): void {
    const slots = new Int32Array(this.count);
    const seqs = new Float64Array(this.count);
    let n = 0;
    this.seqs.forEach((seq, slot) => {
      if (seq === ABSENT) return;
      slots[n] = slot;
      seqs[n++] = seq;
    });
    this.slots = slots;
    this.seqs = seqs;
  }

  /** Room for one more, growing by an eighth: millions of pairs are kept, slack costs megabytes. */
  private grow(): void {
    const slots = this.slots as Int32Array;
    if (this.count === slots.length) this.resize(this.count + Math.max(8, this.count >> 3));
  }

  private resize(capacity: number): void {
    const current = this.slots as Int32Array;
    if (capacity === current.length) return;
    const slots = new Int32Array(capacity);
    const seqs = new Float64Array(capacity);
    slots.set(current.subarray(0, this.count));
    seqs.set(this.seqs.subarray(0, this.count));
    this.slots = slots;
    this.seqs = seqs;
  }

  /** `slot`'s index (dense: the slot), or the one's complement of where it would go. */
  private find(slot: number): number {
    if (this.slots === null) return slot < this.seqs.length && this.seqs[slot] !== ABSENT ? slot : ~slot;
    this.sort();
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.slots[mid] as number;
      if (at === slot) return mid;
      if (at < slot) lo = mid + 1;
      else hi = mid - 1;
    }
    return ~lo;
  }

  private sort(): void {
    if (!this.unsorted) return;
    this.unsorted = false;
    const from = this.slots as Int32Array; // only appends unsort, and a dense record is in order
    const order = new Uint32Array(this.count)
      .map((_, i) => i)
      .sort((a, b) => (from[a] as number) - (from[b] as number));
    const slots = new Int32Array(from.length);
    const seqs = new Float64Array(this.seqs.length);
    order.forEach((at, to) => {
      slots[to] = from[at] as number;
      seqs[to] = this.seqs[at] as number;
    });
    this.slots = slots;
    this.seqs = seqs;
  }
}
