// What one stream was last sent of each peer, so only real changes are sent. At 10,000 nodes where
// shared servers see everyone, a hub keeps millions of (stream, peer) pairs: as a Map entry each
// (about 40 bytes on V8's heap) they were most of control's live memory, and V8 sizes its heap by
// what is live. Here a pair is the peer's slot (a number the hub gives each node) and the version of
// the peer's shared view that was sent: 12 bytes in two typed arrays sorted by slot, outside V8's
// heap. A view made for this viewer alone (a router's routes as this viewer may see them) has no
// version (0): its JSON is kept instead. A record that holds most slots (allow-all: every node sees
// every other, 100 million pairs at 10,000 nodes) keeps only the versions, indexed by slot: 8 bytes
// a pair.
// A record also keeps the digest of what it holds (see token), for a node that reconnects to ask
// whether the peers it holds are still what control would send: each pair's view hash (8 bytes
// more a pair, also outside the heap) is kept so a slot's change takes its old hash out.

import { createHash } from 'node:crypto';

/** A peer view as sent: its version (0 for one made for this viewer alone) and its JSON. */
export interface SentView {
  readonly seq: number;
  readonly json: string;
  /** Its JSON's hash, made on first use (a shared view is hashed once, however many records hold it). */
  hash?: readonly [number, number];
}

/** The token's format: a node holding a token of another format simply does not match. */
const TOKEN_FORMAT = '1';

/** A token: the format, the count of views, then the lanes' sums in hex. */
function tokenText(count: number, sum: Uint32Array): string {
  const hex = (lane: number) => lane.toString(16).padStart(8, '0');
  return `${TOKEN_FORMAT}.${count}.${hex(sum[0] as number)}${hex(sum[1] as number)}`;
}

/** Adds (`sign` 1) or takes out (-1) hash `a`, `b` from `sum`, lane by lane; Uint32Array wraps mod 2^32. */
function addLanes(sum: Uint32Array, a: number, b: number, sign: 1 | -1): void {
  sum[0] = (sum[0] as number) + sign * a;
  sum[1] = (sum[1] as number) + sign * b;
}

/** `view`'s 64-bit hash as two 32-bit lanes: sha-256 of its JSON, truncated. */
export function viewHash(view: SentView): readonly [number, number] {
  if (view.hash === undefined) {
    const digest = createHash('sha256').update(view.json).digest();
    view.hash = [digest.readUInt32BE(0), digest.readUInt32BE(4)];
  }
  return view.hash;
}

/** Bytes a dense record takes per slot up to its end (version, hash), a sorted one per entry (slot too). */
const DENSE_BYTES = 16;
const SORTED_BYTES = 20;

/** Entries a fitted record has room for without growing: a few joins (20 bytes each, sorted). */
const FIT_ROOM = 8;

/** A dense record's version for a slot it does not hold (versions are 0 or more). */
const ABSENT = -1;

export class SentRecord {
  /**
   * The recorded slots, sorted, their versions at the same index in `seqs`; null when dense: `seqs`
   * is then indexed by slot, ABSENT where nothing is recorded.
   */
  private slots: Int32Array | null = new Int32Array(8);
  private seqs = new Float64Array(8);
  /** Each entry's view hash, two lanes at twice its index in `seqs`. */
  private hashes = new Uint32Array(16);
  /** The sum of every entry's hash, lane by lane, mod 2^32 (see token). */
  private readonly sum = new Uint32Array(2);
  /** token() since the last change (every member of a group is sent it with each delta). */
  private tokenText: string | null = null;
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
      this.keep(i, slot, view, true);
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
    this.hashes.copyWithin(2 * (i + 1), 2 * i, 2 * this.count);
    this.slots[i] = slot;
    this.count++;
    this.keep(i, slot, view, false);
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
    this.keep(this.count - 1, slot, view, false);
  }

  /**
   * Room for `capacity` entries at once, for a whole map about to be appended: grown by doubling,
   * a record of a few hundred peers was copied some six times, most of a resumed connect's cost.
   */
  reserve(capacity: number): void {
    if (this.slots !== null && capacity > this.slots.length) this.resize(capacity);
  }

  /** Forgets `slot`; whether it was recorded. */
  delete(slot: number): boolean {
    const i = this.find(slot);
    if (i < 0) return false;
    this.add(i, -1);
    if (this.slots === null) this.seqs[i] = ABSENT;
    else {
      this.slots.copyWithin(i, i + 1, this.count);
      this.seqs.copyWithin(i, i + 1, this.count);
      this.hashes.copyWithin(2 * i, 2 * (i + 1), 2 * this.count);
    }
    this.count--;
    this.own.delete(slot);
    this.balance();
    return true;
  }

  /**
   * Gives back the room `append` grew into (once a whole map is recorded), but for FIT_ROOM entries:
   * fitted exactly, every record took the next join by copying itself into new arrays, and a shared
   * server's join at 10,000 per-person nodes (9,800 records of their own) spent more in those copies
   * and the garbage collection they set off than in all the rest of its work.
   */
  fit(): void {
    if (this.slots !== null) this.resize(this.count + FIT_ROOM);
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

  /**
   * The digest of the views recorded, whatever their order: the count and the lanes' sums, after the
   * format. Equal tokens name the same views (a peer's view carries its id, so the same peers too).
   */
  token(): string {
    this.tokenText ??= tokenText(this.count, this.sum);
    return this.tokenText;
  }

  /** The token this record would have with `slot` holding `view` (null: not holding it). */
  tokenWith(slot: number, view: SentView | null): string {
    const sum = new Uint32Array(this.sum);
    let count = this.count;
    const i = this.find(slot);
    if (i >= 0) {
      addLanes(sum, this.hashes[2 * i] as number, this.hashes[2 * i + 1] as number, -1);
      count--;
    }
    if (view !== null) {
      addLanes(sum, ...viewHash(view), 1);
      count++;
    }
    return tokenText(count, sum);
  }

  /** A record of its own with the same content, to change apart from this one. */
  clone(): SentRecord {
    const copy = new SentRecord();
    copy.slots = this.slots?.slice() ?? null;
    copy.seqs = this.seqs.slice();
    copy.hashes = this.hashes.slice();
    copy.sum.set(this.sum);
    copy.count = this.count;
    copy.unsorted = this.unsorted;
    for (const [slot, json] of this.own) copy.own.set(slot, json);
    return copy;
  }

  /** Bytes of the typed arrays (outside V8's heap), the views' JSON aside. */
  get bytes(): number {
    return this.seqs.byteLength + this.hashes.byteLength + (this.slots?.byteLength ?? 0);
  }

  /** Sets entry `i` to `view`; `replacing`: it held another view, whose hash leaves the sum. */
  private keep(i: number, slot: number, view: SentView, replacing: boolean): void {
    if (replacing) this.add(i, -1);
    const [a, b] = viewHash(view);
    this.hashes[2 * i] = a;
    this.hashes[2 * i + 1] = b;
    this.add(i, 1);
    this.seqs[i] = view.seq;
    if (view.seq === 0) this.own.set(slot, view.json);
    else if (this.own.size > 0) this.own.delete(slot);
  }

  /** Records a slot a dense record does not hold, growing it by an eighth when the slot is past its end. */
  private setDense(slot: number, view: SentView): void {
    if (slot >= this.seqs.length) {
      const seqs = new Float64Array(Math.max(slot + 1, this.seqs.length + (this.seqs.length >> 3)));
      seqs.fill(ABSENT, this.seqs.length);
      seqs.set(this.seqs);
      this.seqs = seqs;
      const hashes = new Uint32Array(2 * seqs.length);
      hashes.set(this.hashes);
      this.hashes = hashes;
    }
    // Counted once: append's callers give each slot once, but a slip must not skew the count.
    const absent = this.seqs[slot] === ABSENT;
    if (absent) this.count++;
    this.keep(slot, slot, view, !absent);
    this.balance();
  }

  /**
   * Takes the smaller form: dense costs 16 bytes for each slot up to its end, sorted 20 for each one
   * recorded. Dense only when it saves a tenth, back to sorted once it costs a tenth more, so a
   * record near the line does not change form at every join and leave. The hub never gives a slot
   * twice: as nodes come and go a dense record's array fills with holes, and without that bound a
   * long-lived one would cost up to twice the sorted form.
   */
  private balance(): void {
    if (this.slots === null) {
      if (this.seqs.length * DENSE_BYTES * 10 > this.count * SORTED_BYTES * 11) this.toSorted();
      return;
    }
    this.sort();
    if (this.count === 0) return;
    const span = (this.slots[this.count - 1] as number) + 1;
    if (span * DENSE_BYTES * 10 <= this.count * SORTED_BYTES * 9) this.toDense(span);
  }

  /** Adds (`sign` 1) or takes out (-1) entry `i`'s hash from the sum. */
  private add(i: number, sign: 1 | -1): void {
    this.tokenText = null;
    addLanes(this.sum, this.hashes[2 * i] as number, this.hashes[2 * i + 1] as number, sign);
  }

  private toDense(span: number): void {
    const slots = this.slots as Int32Array;
    const seqs = new Float64Array(span).fill(ABSENT);
    const hashes = new Uint32Array(2 * span);
    for (let i = 0; i < this.count; i++) {
      const slot = slots[i] as number;
      seqs[slot] = this.seqs[i] as number;
      hashes.set(this.hashes.subarray(2 * i, 2 * i + 2), 2 * slot);
    }
    this.slots = null;
    this.seqs = seqs;
    this.hashes = hashes;
  }

  private toSorted(): void {
    const slots = new Int32Array(this.count);
    const seqs = new Float64Array(this.count);
    const hashes = new Uint32Array(2 * this.count);
    let n = 0;
    this.seqs.forEach((seq, slot) => {
      if (seq === ABSENT) return;
      slots[n] = slot;
      hashes.set(this.hashes.subarray(2 * slot, 2 * slot + 2), 2 * n);
      seqs[n++] = seq;
    });
    this.slots = slots;
    this.seqs = seqs;
    this.hashes = hashes;
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
    const hashes = new Uint32Array(2 * capacity);
    slots.set(current.subarray(0, this.count));
    seqs.set(this.seqs.subarray(0, this.count));
    hashes.set(this.hashes.subarray(0, 2 * this.count));
    this.slots = slots;
    this.seqs = seqs;
    this.hashes = hashes;
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
    // Each entry's slot and index as one number (below 2^53), sorted by the typed array's own
    // numeric sort: a comparator called from it was most of a resumed connect's record-keeping.
    const n = this.count;
    const order = new Float64Array(n);
    for (let i = 0; i < n; i++) order[i] = (from[i] as number) * n + i;
    order.sort();
    const slots = new Int32Array(from.length);
    const seqs = new Float64Array(this.seqs.length);
    const hashes = new Uint32Array(this.hashes.length);
    // Lane by lane, not by subarray: an object for each entry cost more than the sort.
    for (let to = 0; to < n; to++) {
      const at = (order[to] as number) % n;
      slots[to] = from[at] as number;
      seqs[to] = this.seqs[at] as number;
      hashes[2 * to] = this.hashes[2 * at] as number;
      hashes[2 * to + 1] = this.hashes[2 * at + 1] as number;
    }
    this.slots = slots;
    this.seqs = seqs;
    this.hashes = hashes;
  }
}
