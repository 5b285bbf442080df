import type { KeyPair } from '@weft/protocol';
import type { RegistrationDeps } from '../auth/register.js';
import type { ReplayWindow } from '../auth/replay-window.js';
import type { RunExclusive } from '../db/open.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../log.js';
import type { ControlMetrics } from '../metrics/control-metrics.js';
import type { NetmapHub } from '../netmap/hub.js';
import type { NetmapSync } from '../netmap/sync.js';
import type { RelayMembers } from '../relays/members.js';
import type { Background } from './background.js';
import type { ConnectQueue } from './connect-queue.js';
import type { ServerLimits } from './limits.js';
import type { SignInContext } from './login-routes.js';
import type { Presence } from './presence.js';

/** Everything the HTTP and stream handlers share. */
export interface ControlContext {
  store: Store;
  hub: NetmapHub;
  sync: NetmapSync;
  controlKey: KeyPair;
  /** Nonces of machine signatures seen lately: a replayed request is refused. */
  machineNonces: ReplayWindow;
  /** The ts2021 Noise key Tailscale clients pin (GET /key); kept in the database like controlKey. */
  tailscaleKey: KeyPair;
  /** The node keys the relay map's relays serve. */
  relayMembers: RelayMembers;
  registration: RegistrationDeps;
  /** Browser sign-in; null when no identity provider is configured. */
  signIn: SignInContext | null;
  log: Logger;
  metrics: ControlMetrics;
  background: Background;
  /** Streams waiting for their whole map: a burst of upgrades is answered before their hub work. */
  connects: ConnectQueue;
  /** Which replica holds which node's stream (online state shared through the database). */
  presence: Presence;
  /** Runs a periodic job on one replica at a time. */
  exclusive: RunExclusive;
  limits: ServerLimits;
  /** How often each stream is pinged; a stream that missed the previous pong is dropped. */
  pingIntervalMs: number;
}
