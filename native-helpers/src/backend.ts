import type { DesiredState, HelperErrorCode, InterfaceStatus } from '@weft/protocol';
import type { z } from 'zod';

/**
 * What each operating system provides. The server validates requests and runs them one at a time;
 * a backend only converges the OS. macOS (wireguard-go + utun) and Windows (WireGuardNT) plug in here.
 */
export interface PlatformBackend {
  /** Makes the OS match `state` for its interface and reports the result. */
  apply(state: DesiredState): Promise<InterfaceStatus>;
  /** Reports the interface; `exists: false` when there is none. */
  status(name: string): Promise<InterfaceStatus>;
  /** Removes the interface and everything added for it; fine when it is already gone. */
  down(name: string): Promise<InterfaceStatus>;
  /** Takes over what an earlier helper left on the OS (recorded in its state file), before serving. */
  restore(): Promise<void>;
  /** Takes down every interface this process created and all it added, before the helper exits. */
  shutdown(): Promise<void>;
  /**
   * Leaves everything as it is, kill switch and exit routing included, for the next helper to take
   * over (a restart or package upgrade): traffic stays refused rather than leaking meanwhile.
   */
  detach(): Promise<void>;
}

/** A failure the backend reports to the client with a protocol error code. */
export class BackendError extends Error {
  constructor(
    readonly code: z.infer<typeof HelperErrorCode>,
    message: string,
  ) {
    super(message);
    this.name = 'BackendError';
  }
}

export function absentStatus(name: string): InterfaceStatus {
  return {
    name,
    exists: false,
    backend: null,
    publicKey: null,
    listenPort: null,
    addresses: [],
    peers: [],
  };
}
