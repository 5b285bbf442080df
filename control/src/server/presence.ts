import { randomBytes } from 'node:crypto';
import { BatchQueue } from '@weft/protocol';
import type { RunExclusive } from '../db/open.js';
import type { HeldStream, Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import type { NetmapSync } from '../netmap/sync.js';
import { DEFAULT_LIMITS } from './limits.js';

// Online state in the database, so that replicas agree on it: each stream's row names the replica
// holding it, and each replica writes a heartbeat. When a replica is killed its nodes reconnect
// elsewhere (taking their rows over); the rows of nodes that do not come back are dropped by one
// replica's reaper (an exclusive job) once the dead replica's heartbeat is DEAD_AFTER_MS old and
// its database sessions have ended (a busy or paused one's are open: CONNECTED_DEAD_AFTER).
// A live replica can be taken for dead too (its database paused past DEAD_AFTER_MS): each beat then
// finds fewer rows than the streams it holds and writes the missing ones again.
// A clean shutdown leaves its rows too, with a last heartbeat: its nodes stay online for their peers
// while they reconnect (to another replica, or to the restarted server), so a restart's herd changes
// no one's presence and costs no propagation. The only server (SQLite) has no other reaper: it keeps
// the previous run's rows for restartGraceMs after it listens, then drops those not taken over.
//
// Replicas on PostgreSQL (the rules; times are each process's clock, as heartbeats are):
// - A clean stop marks its row stopped. If another replica runs and is up (not stopped, heard from
//   within DEAD_AFTER_MS, started more than restartGraceMs ago; a replica killed less than
//   DEAD_AFTER_MS ago counts), its nodes move there and its rows go with its heartbeat
//   DEAD_AFTER_MS later, as a killed replica's do.
// - If none does, it was the last: it holds its rows, and those of every replica stopped within
//   DEAD_AFTER_MS (replicas stopped together: their nodes had no one left to move to), from now.
//   A replica started within restartGraceMs is still coming up (a surge rollout's new replica,
//   started before the old one stops): it keeps nothing from holding, and gives the hold a grace.
// - A killed replica marks nothing: its rows go DEAD_AFTER_MS after its last heartbeat, as before.
// - A start writes its first heartbeat under the lock the stop takes, so a replica stopping at that
//   moment either sees it (and, if it is up, holds nothing) or has held before it looks. A replica
//   that finds held rows once its first reaping is done keeps them for restartGraceMs after it
//   listens; one that finds rows held later (its beats look while it listens and has no grace)
//   keeps them for restartGraceMs from then. Its grace then drops the replicas it found held (no
//   clock decides; rows held since wait for their own grace) in one reload, tried again on failure.
//   Replicas starting together each do so; the first to end drops them, the other finds none.
// - The reaper spares held rows for 2 × restartGraceMs from their hold (a replica listening within
//   restartGraceMs of the stop gets its whole grace), then drops them: the bound when no grace
//   ends them (a replica killed in its grace, the next start much later). A replica killed in its
//   grace leaves unmarked rows (the nodes that came back to it): reaped as a killed replica's.
// - A replica stopped cleanly during its grace with none other running holds again: its own rows
//   from now, the earlier held ones keeping their time, so a loop of restarts keeps no node online
//   longer than that bound.

export const HEARTBEAT_MS = 2_000;
export const DEAD_AFTER_MS = 10_000;
/**
 * A replica whose heartbeat is late but whose PostgreSQL sessions are open is busy or paused, not
 * dead (a killed process's sessions end with its sockets): its streams are kept for this many
 * times the reaper's limit. Judged by heartbeats alone, a replica whose event loop was held for
 * 10 s by a burst of work had its nodes dropped while they were still connected to it, each drop a
 * change for every peer, and then written back. The bound covers a host cut off from the database,
 * whose sessions the server keeps until TCP gives up on them.
 */
export const CONNECTED_DEAD_AFTER = 6;

/** A new replica id: new at each start, so a restart never inherits stale rows. */
export const newReplicaId = () => randomBytes(8).toString('hex');

export class Presence {
  private timer: NodeJS.Timeout | null = null;
  /** The restart's grace (startGrace; once a run), then its end tried again after a failure. */
  private grace: NodeJS.Timeout | null = null;
  /** Whether startGrace starts one: always on the only server; on a replica that found held rows. */
  private graceDue = false;
  /** A replica's grace ends the hold of these (those found held when it was due). */
  private graceFor: readonly string[] = [];
  /** Listening (startGrace called): a replica's beats look for rows held since. */
  private listening = false;
  /** Closed: the grace's end is not tried again. */
  private closed = false;
  /** The grace's end while it runs: close() waits for it, else it could drop the rows close() holds. */
  private ending: Promise<void> | null = null;
  /**
   * The number of each node's stream here (the newest started is the highest). Its row carries it:
   * a node reconnecting here has its old stream's end and new stream's start written through
   * different connections, and the end, committed last, must not delete the new stream's row.
   */
  private readonly streams = new Map<string, number>();
  private started = 0;
  /**
   * The rows of streams started here, written together: those started while the previous rows are
   * being written go in one statement. Written one by one, a herd of thousands (a killed replica's
   * nodes) cost a statement each: most of the database client's time, and a notice each for the
   * other replicas.
   */
  private readonly connects = new BatchQueue((streams: readonly HeldStream[]) =>
    this.store.streamsConnected(streams, this.replica, new Date(this.clock())),
  );
  /** Each node's latest presence write (see serially). */
  private readonly writes = new Map<string, Promise<void>>();
  /** Streams a shutdown ended, and the one write of their last seen, started at once. */
  private ended: { ids: ReadonlySet<string>; written: Promise<void> } | null = null;

  constructor(
    private readonly store: Store,
    private readonly sync: NetmapSync,
    /** The nodes whose streams this replica holds now (the hub's subscribers). */
    private readonly held: () => readonly string[],
    private readonly exclusive: RunExclusive,
    private readonly log: Logger,
    private readonly timing = {
      heartbeatMs: HEARTBEAT_MS,
      deadAfterMs: DEAD_AFTER_MS,
      restartGraceMs: DEFAULT_LIMITS.restartGraceMs,
    },
    /**
     * The only server on this database (SQLite): every other replica row is a previous run's, kept
     * for the restart's grace and then dropped, and there is no heartbeat (each write would also wake
     * the server's own change feed).
     */
    private readonly alone = false,
    /** The times this writes and reaps by (tests age held rows with it rather than by waiting). */
    private readonly clock: () => number = Date.now,
    /** This process's replica id (see newReplicaId); its database sessions carry it (replicaSessionName). */
    readonly replica: string = newReplicaId(),
  ) {}

  /**
   * Writes the first heartbeat (before any stream is claimed) and, for replicas, starts the timer;
   * the restart's grace starts once this listens (startGrace).
   */
  async start(): Promise<void> {
    if (this.alone) {
      // A run that stopped cleanly within the grace keeps its rows until the grace ends; one that
      // was killed long ago (its only heartbeat is its start) is forgotten now.
      await this.beat(this.timing.restartGraceMs);
      this.graceDue = true;
      return;
    }
    await this.beat(this.timing.deadAfterMs, true);
    // After the first reaping: rows held too long have gone.
    this.graceFor = await this.store.heldReplicas();
    this.graceDue = this.graceFor.length > 0;
    this.timer = setInterval(
      () =>
        this.beat(this.timing.deadAfterMs).catch((err) =>
          this.log.warn(`presence heartbeat: ${errorText(err)}`),
        ),
      this.timing.heartbeatMs,
    );
    this.timer.unref();
  }

  /**
   * Now listening: the previous run's nodes not back within the grace go offline. Counted from
   * here, as the herd is: a slow start does not eat into it.
   */
  startGrace(): void {
    this.listening = true;
    if (!this.graceDue || this.grace !== null) return;
    this.grace = setTimeout(() => this.endGrace(), this.timing.restartGraceMs);
    this.grace.unref();
  }

  /**
   * Drops the previous run's rows: on the only server's database every other replica's, on
   * PostgreSQL the held ones; no clock decides (a clock set back meanwhile would keep them). Then one
   * reload, which also gives the hub the rows of the nodes that came back. Tried again until it
   * succeeds: a failure would otherwise leave those nodes online, and ephemeral ones unswept.
   */
  private endGrace(): void {
    const ended = async () => {
      await this.store.replicaHeartbeat(this.replica, new Date(this.clock()));
      const dropped = this.alone
        ? await this.store.dropOtherReplicas(this.replica)
        : await this.store.dropHeldReplicas(this.graceFor);
      if (dropped > 0)
        this.log.info(`${dropped} streams of the previous run dropped: those nodes are offline`);
      await this.sync.refresh();
      // Over: a replica's beats look for rows held since (a stop while this one was coming up).
      this.graceDue = false;
      this.grace = null;
    };
    this.ending = ended().catch((err) => {
      if (this.closed) return;
      this.log.warn(`the restart's grace: ${errorText(err)}; trying again`);
      this.grace = setTimeout(() => this.endGrace(), this.timing.heartbeatMs);
      this.grace.unref();
    });
  }

  /**
   * Records a stream this replica's hub has just connected. No reload: the hub already told the
   * peers, and a reload per connect would make a mass reconnect quadratic.
   */
  async connected(nodeId: string): Promise<void> {
    const stream = ++this.started;
    this.streams.set(nodeId, stream);
    await this.serially(nodeId, () => this.connects.add({ nodeId, stream }));
  }

  /**
   * The stream ended (the hub has let it go): reading the node again tells its peers it is offline,
   * with its last seen, in one change (see NetmapHub.disconnect).
   */
  async disconnected(nodeId: string): Promise<void> {
    if (this.ended?.ids.has(nodeId)) return; // written by close()
    const stream = this.streams.get(nodeId);
    this.streams.delete(nodeId);
    try {
      await this.serially(nodeId, () =>
        this.store.nodeDisconnected(nodeId, this.replica, stream, new Date(this.clock())),
      );
    } finally {
      // Even when the write failed: only the reload tells its peers it is offline.
      await this.sync.refreshNodes([nodeId]);
    }
  }

  /**
   * Runs `write` once the node's earlier presence writes have settled (failed ones too). They go
   * through different pool connections, so a stream's end could otherwise commit before its own
   * start's row, which would then show the node online, after it left, for as long as this runs.
   */
  private serially(nodeId: string, write: () => Promise<void>): Promise<void> {
    const next = (this.writes.get(nodeId) ?? Promise.resolve()).then(write, write);
    this.writes.set(nodeId, next);
    const forget = () => {
      if (this.writes.get(nodeId) === next) this.writes.delete(nodeId);
    };
    next.then(forget, forget);
    return next;
  }

  /**
   * Shutdown ended the streams of `nodeIds` (NetmapHub.closeAll): there is no one left to tell, so
   * rather than a transaction and a read per node as each close comes in, their last seen (now) is
   * written in one, started now (a shutdown cut short later still has it) and awaited by close().
   * Their rows stay (see the top): a node that does not come back has this last seen when they go.
   */
  shuttingDown(nodeIds: Iterable<string>): void {
    const ids = new Set(nodeIds);
    const written = this.store
      .nodesLastSeen([...ids], new Date(this.clock()))
      .catch((err) => this.log.warn(`last seen of ${ids.size} ended streams: ${errorText(err)}`));
    this.ended = { ids, written };
  }

  /**
   * Stops the heartbeat and writes a last one (a clean shutdown): the streams' rows stay until the
   * reaper, or the restarted server's grace, drops them (a replica's: held if it was the last one
   * running; see the top).
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer ?? undefined);
    clearTimeout(this.grace ?? undefined);
    await this.ending;
    // A failed last-seen write is logged, not thrown: the heartbeat must still be written.
    await this.ended?.written;
    const now = this.clock();
    if (this.alone) {
      await this.store.replicaHeartbeat(this.replica, new Date(now));
      return;
    }
    const held = await this.store.replicaStopped(
      this.replica,
      new Date(now),
      new Date(now - this.timing.deadAfterMs),
      new Date(now - this.timing.restartGraceMs),
    );
    if (held) this.log.info("the last replica up: its streams are held for the next one's grace");
  }

  /** Writes the rows of held streams that another replica's reaper dropped. */
  private async rewriteReaped(now: Date): Promise<void> {
    const held: HeldStream[] = [];
    for (const nodeId of this.held()) {
      const stream = this.streams.get(nodeId);
      // A stream whose own write is still on its way is not missing: counted, a herd's connects
      // (thousands waiting on the database) had every beat write all this replica's rows again.
      if (stream !== undefined && !this.writes.has(nodeId)) held.push({ nodeId, stream });
    }
    if (held.length === 0 || (await this.store.streamCount(this.replica)) >= held.length) return;
    const written = await this.store.claimStreams(held, this.replica, now);
    // A stream that ended (or was replaced) while its row was written again may have had its row
    // deleted first: the row just written is its, and goes (else other replicas would see that node
    // online for as long as this replica runs). A newer stream's row stays.
    const ended = held.filter((s) => this.streams.get(s.nodeId) !== s.stream);
    if (ended.length > 0) await this.store.releaseStreams(ended, this.replica);
    if (written > 0) this.log.warn(`${written} streams of this replica had been reaped: written again`);
  }

  /**
   * Writes this replica's heartbeat (a replica's first: `starting`), then drops the streams of
   * replicas silent for `silentMs`, but not those held for a restart less than twice its grace ago.
   */
  private async beat(silentMs: number, starting = false): Promise<void> {
    const now = this.clock();
    if (starting) await this.store.replicaStarted(this.replica, new Date(now));
    else await this.store.replicaHeartbeat(this.replica, new Date(now));
    if (!this.alone) await this.rewriteReaped(new Date(now));
    await this.exclusive('presence reaper', async () => {
      const dropped = await this.store.dropSilentReplicas(
        new Date(now - silentMs),
        new Date(now - 2 * this.timing.restartGraceMs),
        new Date(now - CONNECTED_DEAD_AFTER * silentMs),
      );
      if (dropped.length > 0) {
        this.log.info(`${dropped.length} streams of silent replicas dropped: those nodes are offline`);
        // Those nodes alone: a killed replica's thousands, not every node (a reload of 10,000 held
        // this replica's loop for seconds while the killed one's nodes were reconnecting to it).
        await this.sync.refreshNodes(dropped);
      }
    });
    if (!this.alone && !starting && this.listening && this.grace === null) await this.graceForHeld();
  }

  /**
   * Rows held after this replica started (a stop while it was coming up: a surge rollout) get the
   * grace a replica started after the stop would give them, from when this one sees them.
   */
  private async graceForHeld(): Promise<void> {
    const held = await this.store.heldReplicas();
    if (held.length === 0 || this.grace !== null || this.closed) return;
    this.graceFor = held;
    this.graceDue = true;
    this.startGrace();
  }
}
