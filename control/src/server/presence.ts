import { randomBytes } from 'node:crypto';
import type { RunExclusive } from '../db/open.js';
import type { HeldStream, Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import type { NetmapSync } from '../netmap/sync.js';
import { DEFAULT_LIMITS } from './limits.js';

// Online state in the database, so that replicas agree on it: each stream's row names the replica
// holding it, and each replica writes a heartbeat. When a replica is killed its nodes reconnect
// elsewhere (taking their rows over); the rows of nodes that do not come back are dropped by one
// replica's reaper (an exclusive job) once the dead replica's heartbeat is DEAD_AFTER_MS old.
// A live replica can be taken for dead too (its database paused past DEAD_AFTER_MS): each beat then
// finds fewer rows than the streams it holds and writes the missing ones again.
// A clean shutdown leaves its rows too, with a last heartbeat: its nodes stay online for their peers
// while they reconnect (to another replica, or to the restarted server), so a restart's herd changes
// no one's presence and costs no propagation. The only server (SQLite) has no other reaper: it keeps
// the previous run's rows for restartGraceMs after its start, then drops those not taken over.

export const HEARTBEAT_MS = 2_000;
export const DEAD_AFTER_MS = 10_000;

export class Presence {
  /** This process's replica id: new at each start, so a restart never inherits stale rows. */
  readonly replica = randomBytes(8).toString('hex');
  private timer: NodeJS.Timeout | null = null;
  /** Closed: the grace's end is not tried again. */
  private closed = false;
  /**
   * The number of each node's stream here (the newest started is the highest). Its row carries it:
   * a node reconnecting here has its old stream's end and new stream's start written through
   * different connections, and the end, committed last, must not delete the new stream's row.
   */
  private readonly streams = new Map<string, number>();
  private started = 0;
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
  ) {}

  /**
   * Writes the first heartbeat (before any stream is claimed) and, for replicas, starts the timer;
   * the only server starts its restart's grace once it listens (startGrace).
   */
  async start(): Promise<void> {
    if (this.alone) {
      // A run that stopped cleanly within the grace keeps its rows until the grace ends; one that
      // was killed long ago (its only heartbeat is its start) is forgotten now.
      await this.beat(this.timing.restartGraceMs);
      return;
    }
    await this.beat(this.timing.deadAfterMs);
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
   * The only server, now listening: the previous run's nodes not back within the grace go offline.
   * Counted from here, as the herd is: a slow start does not eat into it.
   */
  startGrace(): void {
    if (!this.alone || this.timer !== null) return;
    this.timer = setTimeout(() => this.endGrace(), this.timing.restartGraceMs);
    this.timer.unref();
  }

  /**
   * Drops every other replica's rows: on the only server's database they are all previous runs', so
   * no clock decides (a clock set back meanwhile would keep them). Then one reload, which also gives
   * the hub the rows of the nodes that came back. Tried again until it succeeds: a failure would
   * otherwise leave those nodes online, and ephemeral ones unswept, for the whole run.
   */
  private endGrace(): void {
    this.timer = null;
    const ended = async () => {
      await this.store.replicaHeartbeat(this.replica, new Date());
      const dropped = await this.store.dropOtherReplicas(this.replica);
      if (dropped > 0)
        this.log.info(`${dropped} streams of the previous run dropped: those nodes are offline`);
      await this.sync.refresh();
    };
    ended().catch((err) => {
      if (this.closed) return;
      this.log.warn(`the restart's grace: ${errorText(err)}; trying again`);
      this.timer = setTimeout(() => this.endGrace(), this.timing.heartbeatMs);
      this.timer.unref();
    });
  }

  /**
   * Records a stream this replica's hub has just connected. No reload: the hub already told the
   * peers, and a reload per connect would make a mass reconnect quadratic.
   */
  async connected(nodeId: string): Promise<void> {
    const stream = ++this.started;
    this.streams.set(nodeId, stream);
    await this.serially(nodeId, () => this.store.nodeConnected(nodeId, this.replica, stream, new Date()));
  }

  /** The stream ended (the hub told the peers); reading the node again brings them its last-seen time. */
  async disconnected(nodeId: string): Promise<void> {
    if (this.ended?.ids.has(nodeId)) return; // written by close()
    const stream = this.streams.get(nodeId);
    this.streams.delete(nodeId);
    try {
      await this.serially(nodeId, () =>
        this.store.nodeDisconnected(nodeId, this.replica, stream, new Date()),
      );
    } finally {
      // Even when the write failed: the hub's record may still say another replica (the previous
      // run) streams the node, and only a reload tells its peers it is offline.
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
      .nodesLastSeen([...ids], new Date())
      .catch((err) => this.log.warn(`last seen of ${ids.size} ended streams: ${errorText(err)}`));
    this.ended = { ids, written };
  }

  /**
   * Stops the heartbeat and writes a last one (a clean shutdown): the streams' rows stay until the
   * reaper, or the restarted server's grace, finds this replica silent.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    // A failed last-seen write is logged, not thrown: the heartbeat must still be written.
    await this.ended?.written;
    await this.store.replicaHeartbeat(this.replica, new Date());
  }

  /** Writes the rows of held streams that another replica's reaper dropped. */
  private async rewriteReaped(now: Date): Promise<void> {
    const held: HeldStream[] = [];
    for (const nodeId of this.held()) {
      const stream = this.streams.get(nodeId);
      if (stream !== undefined) held.push({ nodeId, stream });
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

  /** Writes this replica's heartbeat, then drops the streams of replicas silent for `silentMs`. */
  private async beat(silentMs: number): Promise<void> {
    const now = Date.now();
    await this.store.replicaHeartbeat(this.replica, new Date(now));
    if (!this.alone) await this.rewriteReaped(new Date(now));
    await this.exclusive('presence reaper', async () => {
      const cutoff = now - silentMs;
      const dropped = await this.store.dropSilentReplicas(new Date(cutoff));
      if (dropped > 0) {
        this.log.info(`${dropped} streams of silent replicas dropped: those nodes are offline`);
        await this.sync.refresh();
      }
    });
  }
}
