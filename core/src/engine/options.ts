import type { HelperClient } from '../helper/client.js';
import type { Logger } from '../log/logger.js';
import type { ConnectivityOptions } from '../paths/connectivity.js';
import type { AddressSource } from '../paths/local-endpoints.js';
import type { BackoffOptions } from '../retry/backoff.js';
import type { StateStore } from '../state/store.js';

// What a host gives the engine: its state folder, the helper, the interface name, and timing
// (tests make it short).

export interface EngineTiming {
  controlBackoff?: BackoffOptions;
  pingMs?: number;
  endpointsPollMs?: number;
  reapplyMs?: number;
  debounceMs?: number;
  /** How long `up` waits for Running before answering with a timeout. */
  upTimeoutMs?: number;
  /** Back-off while control cannot be asked about a pending interactive login. */
  loginBackoff?: BackoffOptions;
  /** Back-off between failed node key rotations (default from 1 minute up to 1 hour). */
  rotationBackoff?: BackoffOptions;
  /** Path selection and relay timing (tests make them short). */
  connectivity?: Partial<
    Pick<ConnectivityOptions, 'pathTiming' | 'pollMs' | 'fastPollMs' | 'relayBackoff' | 'relayPingMs'>
  >;
}

export interface EngineOptions {
  store: StateStore;
  helper: HelperClient;
  interfaceName: string;
  log: Logger;
  timing?: EngineTiming;
  addressSource?: AddressSource;
  /** How often to rotate the node key (default 30 days); null or 0 never rotates. */
  keyRotationMs?: number | null;
}
