import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { STREAM_PATH } from '@weft/protocol';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Store } from '../db/store.js';
import { startBalancer } from '../testing/balancer.js';
import { buildControl, repoRoot, serveProcess } from '../testing/control-process.js';
import {
  cleanupAll,
  onCleanup,
  StreamClient,
  startTestControl,
  type TestControl,
  type TestControlOptions,
  TestMachine,
  twoOnline,
} from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';

// Several `weft-control serve` on one PostgreSQL. Nodes on different replicas see each other's
// changes (LISTEN/NOTIFY) and online state (rows in the database); a policy set through one is in
// force on the other; a replica killed with SIGKILL loses nothing written, its nodes come back
// through the load balancer on another replica, and the streams it held are dropped once its
// heartbeat is silent. A replica stopped cleanly while another runs is dropped the same way (its
// nodes move), and a killed one holds nothing for a restart's grace, even when it was the only one
// (the grace after a clean stop of the only replica: restart.test.ts).

const noPostgres = await postgresAbsence();

beforeAll(() => {
  if (noPostgres === null) buildControl();
}, 120_000);
afterEach(cleanupAll);

/** A real replica process, so it can be killed without a goodbye. */
async function replicaProcess(db: string): Promise<{ child: ChildProcess; url: string }> {
  const replica = await serveProcess(['--db', db], repoRoot);
  onCleanup(() => {
    if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill('SIGKILL');
  });
  return replica;
}

/** The same tailnet as `t`, reached at another URL (a load balancer, another replica). */
const via = (t: TestControl, url: string): TestControl => ({ ...t, control: { ...t.control, url } });

const peer = (s: StreamClient, name: string) => s.netmap?.peers.find((p) => p.name === name);

/** A reaper limit of 1 s and a restart's grace far longer than any test: nodes must not wait for it. */
const NO_GRACE_HERE = { heartbeatMs: 100, deadAfterMs: 1_000, limits: { restartGraceMs: 600_000 } };

describe.skipIf(noPostgres !== null)('control replicas on PostgreSQL', () => {
  it('nodes on different replicas see each other, their changes and the policy set through either', async () => {
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db } });
    const r2 = await startTestControl({ config: { db } });
    expect(r2.controlPublicKey).toBe(r1.controlPublicKey);
    // b joined on r2, online on r2: r1's node sees both, each within 1 s.
    const { sa, sb } = await twoOnline(r1, { bOn: r2, timeoutMs: 1_000 });

    sb.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
    await sa.until(
      'b endpoints',
      (c) => peer(c, 'b')?.endpoints.includes('198.18.0.12:41641') === true,
      1_000,
    );
    // b's stream ends on r2: r1 learns it from the database.
    sb.ws.close();
    await sa.until('b offline', (c) => peer(c, 'b')?.online === false, 1_000);

    // A policy set through r2 (its admin CLI) is in force on r1's stream: nobody may reach anyone.
    const { writeFileSync } = await import('node:fs');
    const file = join(await import('node:os').then((os) => os.tmpdir()), `weft-deny-${process.pid}.hujson`);
    writeFileSync(file, '{ "acls": [] }');
    onCleanup(async () => (await import('node:fs')).rmSync(file, { force: true }));
    expect((await r2.cli('policy', 'set', file)).code).toBe(0);
    await sa.until('b gone under the policy', (c) => peer(c, 'b') === undefined, 1_000);
    expect(sa.netmap?.packetFilter).toEqual([]);
  });

  it('another replica’s change to a node is read back alone, not as a reload of every node', async () => {
    // Spied before the replicas start: the store's timing wrapper keeps the method it first saw.
    const listNodes = vi.spyOn(Store.prototype, 'listNodes');
    const nodesByIds = vi.spyOn(Store.prototype, 'nodesByIds');
    onCleanup(() => void vi.restoreAllMocks());
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db } });
    const r2 = await startTestControl({ config: { db } });
    const { sa, sb, bNode } = await twoOnline(r1, { bOn: r2, timeoutMs: 5_000 });
    const reloads = listNodes.mock.calls.length;
    nodesByIds.mockClear();

    sb.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
    await sa.until(
      'b endpoints',
      (c) => peer(c, 'b')?.endpoints.includes('198.18.0.12:41641') === true,
      5_000,
    );
    // r1 learnt it by reading b alone (r2's read after its own write may come later: not awaited here).
    expect(listNodes.mock.calls.length).toBe(reloads);
    expect(nodesByIds.mock.calls.some(([ids]) => ids.includes(bNode.id))).toBe(true);
  });

  it('a node that reconnects to its replica stays online on the other (the replaced stream is no disconnect)', async () => {
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db } });
    const r2 = await startTestControl({ config: { db } });
    const { b, sa, sb: first } = await twoOnline(r1, { bOn: r2, timeoutMs: 5_000 });
    const second = await b.stream();
    await first.until('first replaced', (c) => c.closed !== null);
    await second.until('second has its map', (c) => c.netmap !== null);
    // The old stream's end must not remove the new stream's row: r1 would see b go offline. An
    // endpoint report afterwards makes r1 reload b, whatever else it coalesced.
    second.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
    await sa.until(
      'b endpoints',
      (c) => peer(c, 'b')?.endpoints.includes('198.18.0.12:41641') === true,
      5_000,
    );
    expect(peer(sa, 'b')?.online).toBe(true);
  });

  it('registrations at once on two replicas all get their own address', async () => {
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db } });
    const r2 = await startTestControl({ config: { db } });
    const key = await r1.key('--reusable');
    const machines = Array.from({ length: 40 }, (_, i) => new TestMachine(i % 2 === 0 ? r1 : r2));
    const nodes = await Promise.all(machines.map((m, i) => m.join(`m${i}`, key)));
    expect(new Set(nodes.map((n) => n.addresses[0])).size).toBe(40);
    expect(new Set(nodes.map((n) => n.name)).size).toBe(40);
  });

  it('a killed replica loses nothing written and its nodes come back on another', async () => {
    const db = await tempPostgres();
    const r2 = await startTestControl({ config: { db } });
    const r1 = await replicaProcess(db);
    const lb = await startBalancer([r1.url, r2.control.url]);
    const key = await r2.key('--reusable');
    // a and d reach control through the balancer (r1 while it lives); b is on r2.
    const a = new TestMachine(via(r2, lb.url));
    const d = new TestMachine(via(r2, lb.url));
    const b = new TestMachine(r2);
    await a.join('a', key);
    await d.join('d', key);
    await b.join('b', key);
    const sb = await b.stream();
    const sa = await a.stream();
    const sd = await d.stream();
    await sb.until(
      'a and d online on r1',
      (c) => peer(c, 'a')?.online === true && peer(c, 'd')?.online === true,
    );

    // A change written through r1 just before it dies.
    sa.send({ type: 'endpoints', endpoints: ['198.18.0.11:41641'] });
    await sb.until(
      'a endpoints',
      (c) => peer(c, 'a')?.endpoints.includes('198.18.0.11:41641') === true,
      1_000,
    );
    r1.child.kill('SIGKILL');
    // Mid-change: a deletion through r2 while r1's nodes are cut off.
    const deleted = r2.cli('nodes', 'delete', 'd');
    await sa.until('a cut off', (c) => c.closed !== null, 5_000);
    expect((await deleted).code).toBe(0);

    // a reconnects through the balancer, which now reaches r2: nothing written was lost.
    const back = await a.stream();
    await back.until('a back, with its endpoints', (c) => c.netmap !== null, 5_000);
    expect(back.netmap?.self.endpoints).toEqual(['198.18.0.11:41641']);
    // The deletion reaches r2's hub through the change feed, maybe just after a's first map.
    await back.until('d gone from a’s map', (c) => c.netmap?.peers.map((p) => p.name).join() === 'b', 5_000);
    await sb.until(
      'a online again, d gone',
      (c) => peer(c, 'a')?.online === true && peer(c, 'd') === undefined,
    );
    expect(sd.closed).not.toBeNull();
  });

  /**
   * Node d streaming on r1 (a real process, so it can be killed or paused) and b on r2 (in this
   * process: its reaper judges r1), once b sees d online.
   */
  async function dOnR1bOnR2(r2Options: TestControlOptions = {}) {
    const db = await tempPostgres();
    const r2 = await startTestControl({ config: { db }, ...r2Options });
    const r1 = await replicaProcess(db);
    const key = await r2.key('--reusable');
    const d = new TestMachine(via(r2, r1.url));
    const b = new TestMachine(r2);
    await d.join('d', key);
    await b.join('b', key);
    const sb = await b.stream();
    const sd = await d.stream();
    await sb.until('d online on r1', (c) => peer(c, 'd')?.online === true);
    return { r1, sd, sb };
  }

  it('drops the streams of a killed replica once its heartbeat is silent', async () => {
    const { r1, sb } = await dOnR1bOnR2();
    r1.child.kill('SIGKILL');
    // d never comes back: r2's reaper drops r1's rows after DEAD_AFTER_MS (10 s) without a heartbeat.
    // Bounded generously: on a loaded machine the replica's timers run late.
    await sb.until('d offline', (c) => peer(c, 'd')?.online === false, 40_000);
  }, 60_000);

  it('a paused replica is not taken for dead while its database sessions are open: its nodes stay online', async () => {
    const { r1, sd, sb } = await dOnR1bOnR2(NO_GRACE_HERE);
    const before = sb.messages.length;
    // r1's heartbeat stops, as when a burst of work holds its event loop; its sockets stay open.
    r1.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 3 * NO_GRACE_HERE.deadAfterMs));
    r1.child.kill('SIGCONT');
    // r1 serves d again: d's change reaches b through it.
    sd.send({ type: 'endpoints', endpoints: ['198.18.0.13:41641'] });
    await sb.until(
      'd endpoints',
      (c) => peer(c, 'd')?.endpoints.includes('198.18.0.13:41641') === true,
      10_000,
    );
    const offline = sb.messages
      .slice(before)
      .some((m) => m.type === 'delta' && m.peersUpserted?.some((p) => p.name === 'd' && !p.online));
    expect(offline).toBe(false);
    expect(sd.closed).toBeNull();
  });

  it("a clean stop of one of two replicas moves its nodes to the other, without a restart's grace", async () => {
    const db = await tempPostgres();
    // r2 counts as up at r1's stop (started more than r1's grace before it), not coming up.
    const r1 = await startTestControl({ config: { db }, ...NO_GRACE_HERE, limits: { restartGraceMs: 1 } });
    const r2 = await startTestControl({ config: { db }, ...NO_GRACE_HERE });
    const lb = await startBalancer([r1.control.url, r2.control.url]);
    const key = await r1.key('--reusable');
    // a reaches control through the balancer (r1 while it runs), d only r1, b r2.
    const a = new TestMachine(via(r1, lb.url));
    const d = new TestMachine(r1);
    const b = new TestMachine(r2);
    await a.join('a', key);
    await d.join('d', key);
    await b.join('b', key);
    const sb = await b.stream();
    await a.stream();
    await d.stream();
    await sb.until('a and d online', (c) => peer(c, 'a')?.online === true && peer(c, 'd')?.online === true);
    await r1.control.close();
    const back = await a.stream();
    await back.until('a back, on r2', (c) => c.netmap !== null, 5_000);
    expect(peer(back, 'b')?.online).toBe(true);
    // d does not come back: offline once r1's last heartbeat is older than r2's reaper allows.
    await sb.until('d offline', (c) => peer(c, 'd')?.online === false, 20_000);
    expect(peer(sb, 'a')?.online).toBe(true);
  }, 60_000);

  it("a surge rollout: the only replica stopped just after the next one started holds its nodes for that one's grace", async () => {
    const db = await tempPostgres();
    const r1 = await startTestControl({ config: { db }, ...NO_GRACE_HERE });
    const key = await r1.key('--reusable');
    const d = new TestMachine(r1);
    await d.join('d', key);
    await d.stream();
    // The new replica starts (within r1's grace) before r1 stops; b watches d from it.
    const r2 = await startTestControl({ config: { db }, ...NO_GRACE_HERE });
    const b = new TestMachine(via(r1, r2.control.url));
    await b.join('b', key);
    const sb = await b.stream();
    await sb.until('d online', (c) => peer(c, 'd')?.online === true);
    await r1.control.close();
    // d does not come back, but r2's grace (10 minutes here) holds it: online past the limit after
    // which r2's reaper would have dropped r1's rows.
    await new Promise((r) => setTimeout(r, 3 * NO_GRACE_HERE.deadAfterMs));
    expect(peer(sb, 'd')?.online).toBe(true);
    expect(sb.closed).toBeNull();
  }, 60_000);

  it("a killed replica, the only one, holds nothing: its nodes not back go offline at the reaper's limit", async () => {
    const db = await tempPostgres();
    // r0 sets the tailnet up and stops cleanly, the only replica: r1 starts in its restart's grace.
    const r0 = await startTestControl({ config: { db } });
    const key = await r0.key('--reusable');
    await r0.control.close();
    const r1 = await replicaProcess(db);
    const a = new TestMachine(via(r0, r1.url));
    const d = new TestMachine(via(r0, r1.url));
    await a.join('a', key);
    await d.join('d', key);
    const sa = await a.stream();
    await d.stream();
    // The process holds presence-only changes for its default 3 s (presenceHoldMs).
    await sa.until('d online', (c) => peer(c, 'd')?.online === true, 10_000);
    r1.child.kill('SIGKILL');
    await sa.until('a cut off', (c) => c.closed !== null, 5_000);
    // The next replica: a killed replica's streams are not held for its grace.
    const r2 = await startTestControl({ config: { db }, ...NO_GRACE_HERE });
    const back = await StreamClient.open(r2.control.url, a.sign('GET', STREAM_PATH, ''));
    await back.until('a back', (c) => c.netmap !== null, 5_000);
    await back.until('d offline', (c) => peer(c, 'd')?.online === false, 20_000);
  }, 60_000);
});
