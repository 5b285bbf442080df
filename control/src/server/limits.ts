import { LOGIN_WAIT_SECONDS } from '@weft/protocol';

// Every bound control puts on what one client may cost it, in one place: time-outs for slow or idle
// connections, body size, request rates on the routes anyone can reach without a key, pending
// sign-ins, and the message rate of a node's stream and the bytes waiting to be written to it.

export interface ServerLimits {
  /** Idle socket time-out; longer than a held `wait: true` registration (LOGIN_WAIT_SECONDS). */
  connectionTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this. */
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Nothing a node sends is anywhere near this; anything larger is refused unread. */
  bodyLimitBytes: number;
  /** Per source address, per `rateWindowMs`: registrations (before a machine has a node). */
  registerPerWindow: number;
  /** Per source address, per `rateWindowMs`: sign-in pages (/login/...). */
  loginPagesPerWindow: number;
  rateWindowMs: number;
  /** Open (pending, unexpired) interactive logins started from one source address. */
  pendingLoginsPerSource: number;
  pendingLoginsTotal: number;
  /** A node's endpoint and route updates are written at most once per this window, latest wins. */
  streamCoalesceMs: number;
  /** A node sending more than this many messages per `streamFloodWindowMs` is disconnected (1008). */
  streamMaxMessages: number;
  streamFloodWindowMs: number;
  /**
   * A stream holding more unsent bytes than this gets no deltas (they are coalesced into one whole
   * map once it drains): what a slow node costs control is bounded by this and one map. A whole
   * map still being written is not counted, so maps larger than this still get deltas after them.
   */
  streamBufferBytes: number;
  /** A stream that stays over `streamBufferBytes` this long is disconnected (the node reconnects). */
  streamStuckMs: number;
  /** Queued stream connects' hub work is done for at most this long per event-loop turn (ConnectQueue). */
  streamConnectTurnMs: number;
  /**
   * Peers' presence-only changes (online, last seen) wait up to this long, merged per node, unless
   * something else is sent to it first. Presence is advisory (status, call-me-maybe to online peers,
   * an exit node's health line); joins, endpoints, deletes and policy go at once. At 10,000
   * per-person nodes a restart's herd otherwise sent every online member a message at nearly every
   * flush (a shared server had come online): most of control's socket writes.
   */
  presenceHoldMs: number;
  /**
   * A restart after a clean shutdown of the only server (SQLite), or of the last replica up on
   * PostgreSQL, keeps the previous run's streams online this long after it listens (a replica
   * started less than this before the stop: after it sees the stop's hold): the restart's
   * herd comes back (the engine retries an upgrade after 15 s, and the herd took 30-55 s at 10,000
   * nodes) without any node going offline and online for its peers. Nodes not back by then go
   * offline in one reload. A replica stopped while others have run this long uses the reaper's
   * DEAD_AFTER_MS instead: its nodes move to them (presence.ts).
   */
  restartGraceMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  connectionTimeoutMs: (LOGIN_WAIT_SECONDS + 30) * 1000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 10_000,
  bodyLimitBytes: 64 * 1024,
  registerPerWindow: 120,
  loginPagesPerWindow: 60,
  rateWindowMs: 60_000,
  pendingLoginsPerSource: 16,
  pendingLoginsTotal: 10_000,
  streamCoalesceMs: 250,
  streamMaxMessages: 60,
  streamFloodWindowMs: 10_000,
  streamBufferBytes: 1024 * 1024,
  streamStuckMs: 30_000,
  streamConnectTurnMs: 20,
  presenceHoldMs: 3_000,
  restartGraceMs: 60_000,
};
