import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { SentRecord, type SentView } from './sent-record.js';

// The record's own contract; that the hub sends neither stale nor repeated views through it is
// hub-apply.test.ts's property test.

const shared = (seq: number) => ({ seq, json: `{"v":${seq}}` });
const own = (json: string) => ({ seq: 0, json });

describe('SentRecord', () => {
  it('finds what a whole map appended in any order, and keeps it sorted through inserts and deletes', () => {
    const sent = new SentRecord();
    const slots = [40, 3, 17, 99, 0, 58, 21, 8, 77, 12, 5];
    for (const slot of slots) sent.append(slot, shared(slot + 1000));
    expect([...sent.recorded()]).toEqual([...slots].sort((a, b) => a - b));
    for (const slot of slots) expect(sent.record(slot, shared(slot + 1000))).toBe(false);
    expect(sent.record(18, shared(1))).toBe(true);
    expect(sent.delete(40)).toBe(true);
    expect(sent.delete(40)).toBe(false);
    expect(sent.record(40, shared(1040))).toBe(true);
    expect([...sent.recorded()]).toEqual([0, 3, 5, 8, 12, 17, 18, 21, 40, 58, 77, 99]);
  });

  it('is not copied while a whole map of a count reserved is appended, out of order too', () => {
    const sent = new SentRecord();
    sent.reserve(300);
    const copies = vi.spyOn(Int32Array.prototype, 'set');
    // Every third slot, backwards: sorted form (dense would not save a tenth), sorted at fit.
    for (let slot = 897; slot >= 0; slot -= 3) sent.append(slot, shared(slot + 1));
    const copied = copies.mock.calls.length;
    copies.mockRestore();
    expect(copied).toBe(0);
    sent.fit();
    expect([...sent.recorded()]).toEqual(Array.from({ length: 300 }, (_, i) => 3 * i));
  });

  it('is copied a logarithmic number of times while a whole map is appended', () => {
    const copies = vi.spyOn(Int32Array.prototype, 'set');
    const sent = new SentRecord();
    for (let slot = 0; slot < 10_000; slot++) sent.append(slot, shared(slot));
    sent.fit();
    const copied = copies.mock.calls.length;
    copies.mockRestore();
    expect(copied).toBeLessThanOrEqual(15);
    expect(sent.recorded().length).toBe(10_000);
  });

  it('clones into a record that changes apart from its original, sorted, dense and unsorted alike', () => {
    // Appended out of order and not looked up yet; every slot of a range, fitted (dense).
    const cases: [number[], boolean][] = [
      [[9, 2, 5], false],
      [Array.from({ length: 50 }, (_, i) => i), true],
    ];
    for (const [slots, fit] of cases) {
      const sent = new SentRecord();
      for (const slot of slots) sent.append(slot, slot === 5 ? own('{"r":5}') : shared(slot + 100));
      if (fit) sent.fit();
      const copy = sent.clone();
      expect(copy.delete(2)).toBe(true);
      expect(copy.record(5, own('{"r":6}'))).toBe(true);
      expect(copy.record(60, shared(1))).toBe(true);
      expect([...sent.recorded()]).toEqual([...slots].sort((a, b) => a - b));
      expect(sent.record(5, own('{"r":5}'))).toBe(false);
      expect(sent.record(9, shared(109))).toBe(false);
      expect([...copy.recorded()]).toEqual([...slots.filter((s) => s !== 2), 60].sort((a, b) => a - b));
      expect(copy.record(9, shared(109))).toBe(false);
    }
  });

  it('appends to a record fitted while empty', () => {
    const sent = new SentRecord();
    sent.fit();
    sent.append(5, shared(1));
    expect([...sent.recorded()]).toEqual([5]);
    expect(sent.record(5, shared(1))).toBe(false);
  });

  it('keeps 16 bytes a pair when it holds most slots (allow-all), 20 when it holds few', () => {
    const all = new SentRecord();
    for (let slot = 10_000; slot > 0; slot--) all.append(slot, shared(slot));
    all.fit();
    expect(all.bytes).toBeLessThanOrEqual(16 * 10_001);
    const few = new SentRecord();
    for (let slot = 0; slot < 10_000; slot += 50) few.append(slot, shared(slot));
    few.fit();
    // And room for a few joins (see the next test).
    expect(few.bytes).toBe(20 * 208);
  });

  it('takes the joins right after a whole map without growing', () => {
    const sent = new SentRecord();
    for (let slot = 0; slot < 10_000; slot += 50) sent.append(slot, shared(slot));
    sent.fit();
    const fitted = sent.bytes;
    for (let slot = 10_000; slot < 10_008; slot++) expect(sent.record(slot, shared(slot))).toBe(true);
    expect(sent.bytes).toBe(fitted);
  });

  it('answers the same held densely: joins past its end, leaves, and back to sorted once mostly empty', () => {
    const sent = new SentRecord();
    for (let slot = 0; slot < 100; slot++) if (slot !== 42) sent.append(slot, shared(slot + 1));
    sent.fit();
    expect(sent.bytes).toBeLessThanOrEqual(16 * 100);
    expect(sent.record(42, shared(1))).toBe(true);
    expect(sent.record(42, shared(1))).toBe(false);
    expect(sent.record(7, shared(8))).toBe(false);
    expect(sent.record(7, own('{"v":8}'))).toBe(true);
    expect(sent.record(7, own('{"v":8}'))).toBe(false);
    // A node that joins gets the next slot, past the record's end.
    expect(sent.record(130, shared(5))).toBe(true);
    expect(sent.record(130, shared(5))).toBe(false);
    expect(sent.delete(130)).toBe(true);
    expect(sent.delete(130)).toBe(false);
    expect(sent.record(130, shared(6))).toBe(true);
    const held = [...Array.from({ length: 100 }, (_, i) => i), 130];
    expect([...sent.recorded()]).toEqual(held);
    for (const slot of held) if (slot % 10 !== 0) expect(sent.delete(slot)).toBe(true);
    expect([...sent.recorded()]).toEqual(held.filter((s) => s % 10 === 0));
    // Sorted again: dense it would be 16 bytes for each of 131 slots.
    expect(sent.bytes).toBeLessThan(16 * 131);
    expect(sent.record(50, shared(51))).toBe(false);
    expect(sent.record(51, shared(52))).toBe(true);
  });

  it('a new version is a change; the same version again is not', () => {
    const sent = new SentRecord();
    expect(sent.record(1, shared(5))).toBe(true);
    expect(sent.record(1, shared(5))).toBe(false);
    expect(sent.record(1, shared(6))).toBe(true);
    expect(sent.record(1, shared(6))).toBe(false);
  });

  it("compares a viewer's own views by JSON, and across kinds by JSON too", () => {
    const sent = new SentRecord();
    sent.append(7, shared(3));
    // Became a router: its view for this viewer is the shared view it had (no change) ...
    expect(sent.record(7, own('{"v":3}'), shared(3))).toBe(false);
    expect(sent.record(7, own('{"v":3}'))).toBe(false);
    // ... until it differs; without the previous shared view at hand it is sent.
    expect(sent.record(7, own('{"r":1}'))).toBe(true);
    expect(sent.record(7, own('{"r":1}'))).toBe(false);
    expect(sent.delete(7)).toBe(true);
    // A previous shared view other than the one sent proves nothing.
    sent.append(7, shared(9));
    expect(sent.record(7, own('{"v":9}'), shared(8))).toBe(true);
    // No longer a router: a shared view with the JSON it has is no change, other JSON is.
    expect(sent.record(7, shared(9))).toBe(false);
    expect(sent.record(7, own('{"v":9}'))).toBe(true);
    expect(sent.record(7, shared(10))).toBe(true);
  });

  it('costs at most a tenth more than the sorted form while nodes come and go (slots are never given twice)', () => {
    const sent = new SentRecord();
    const live = 1_000;
    for (let slot = 0; slot < live; slot++) sent.append(slot, shared(slot + 1));
    sent.fit();
    expect(sent.bytes).toBeLessThan(live * 20);
    let next = live;
    let worst = 0;
    for (let gone = 0; gone < 2_000; gone++) {
      expect(sent.delete(gone)).toBe(true); // a node leaves
      expect(sent.record(next++, shared(1))).toBe(true); // another joins, at a slot never given before
      worst = Math.max(worst, sent.bytes / live);
    }
    expect(worst).toBeLessThanOrEqual(22);
    expect(sent.recorded()).toEqual(Int32Array.from({ length: live }, (_, i) => 2_000 + i));
  });

  it('counts a slot appended twice once, in the dense form too', () => {
    const sent = new SentRecord();
    for (let slot = 0; slot < 100; slot++) sent.append(slot, shared(slot + 1));
    sent.fit();
    sent.append(5, shared(7));
    expect(sent.recorded()).toEqual(Int32Array.from({ length: 100 }, (_, i) => i));
    expect(sent.record(5, shared(7))).toBe(false);
  });

  it("keeps its token the digest of the views it holds, whatever their order, through every form's changes", () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('record' as const),
        slot: fc.integer({ min: 0, max: 120 }),
        v: fc.nat(3),
      }),
      fc.record({ kind: fc.constant('own' as const), slot: fc.integer({ min: 0, max: 120 }), v: fc.nat(3) }),
      fc.record({ kind: fc.constant('delete' as const), slot: fc.integer({ min: 0, max: 120 }) }),
      fc.record({ kind: fc.constant('clone' as const) }),
    );
    const start = fc.array(fc.integer({ min: 0, max: 120 }), { maxLength: 120 });
    fc.assert(
      fc.property(start, fc.array(op, { maxLength: 200 }), (appended, ops) => {
        let sent = new SentRecord();
        const held = new Map<number, SentView>();
        const viewOf = (slot: number, v: number, mine: boolean) =>
          mine ? own(`{"own":${slot},"v":${v}}`) : shared(slot * 10 + v + 1);
        for (const slot of new Set(appended)) {
          sent.append(slot, viewOf(slot, 0, false));
          held.set(slot, viewOf(slot, 0, false));
        }
        sent.fit();
        for (const o of ops) {
          if (o.kind === 'clone') sent = sent.clone();
          else if (o.kind === 'delete') {
            sent.delete(o.slot);
            held.delete(o.slot);
          } else {
            const view = viewOf(o.slot, o.v, o.kind === 'own');
            sent.record(o.slot, view);
            held.set(o.slot, view);
          }
          // The same views recorded afresh, in reverse order: the same token.
          const fresh = new SentRecord();
          for (const [slot, view] of [...held].reverse()) fresh.append(slot, { ...view });
          expect(sent.token()).toBe(fresh.token());
        }
      }),
      { numRuns: 200 },
    );
  });

  it('gives another token when any view differs, and one of its format for an empty record', () => {
    const a = new SentRecord();
    const b = new SentRecord();
    for (let slot = 0; slot < 50; slot++) {
      a.append(slot, shared(slot + 1));
      b.append(slot, shared(slot + 1));
    }
    expect(a.token()).toBe(b.token());
    b.record(20, shared(99));
    expect(b.token()).not.toBe(a.token());
    b.record(20, shared(21));
    expect(b.token()).toBe(a.token());
    b.delete(7);
    expect(b.token()).not.toBe(a.token());
    expect(new SentRecord().token()).toMatch(/^1\.0\.0{16}$/);
  });
});
