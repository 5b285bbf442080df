import type { ControlMachineOptions } from '../control-client/machine.js';
import type { HelperClient } from '../helper/client.js';
import type { Logger } from '../log/logger.js';
import type { ConnectivityOptions, PortMappingOptions } from '../paths/connectivity.js';
import type { AddressSource } from '../paths/local-endpoints.js';
import type { ProbeRequest, Underlay } from '../paths/mtu.js';
import type { StateStore } from '../state/store.js';

// What a host gives the engine: its state folder, the helper, the interface name, and timing
// (tests make it short).

/** Control's stream, sign-in and rotation timing (see ControlMachineOptions), and the engine's. */
export interface EngineTiming
  extends Pick<ControlMachineOptions, 'controlBackoff' | 'pingMs' | 'loginBackoff' | 'rotationBackoff'> {
  endpointsPollMs?: number;
  reapplyMs?: number;
  debounceMs?: number;
  /** How long `up` waits for Running before answering with a timeout. */
  upTimeoutMs?: number;
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
  /** Port mapping on the default gateway (default: on); false in tests that must not reach it. */
  portMapping?: PortMappingOptions | false;
  /** How often to rotate the node key (default 30 days); null or 0 never rotates. */
  keyRotationMs?: number | null;
  /** The underlay towards a direct endpoint, for the MTU (default: as the OS routes it). */
  readUnderlay?: (endpoint: string) => Promise<Underlay | null>;
  /** Don't-fragment probe of a peer's path at a given MTU (default: ping, see paths/mtu.ts). */
  probePath?: (req: ProbeRequest) => Promise<boolean>;
}
