import { LOGIN_WAIT_SECONDS } from '@weft/protocol';

// Every bound control puts on what one client may cost it, in one place: time-outs for slow or idle
// connections, body size, request rates on the routes anyone can reach without a key, pending
// sign-ins, and the message rate of a node's stream.

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
};
