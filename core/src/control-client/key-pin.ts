import { WeftError } from '../errors.js';
import type { StateStore } from '../state/store.js';

// Control's key, pinned on first use (trust on first use, as SSH does with host keys): every later
// answer of GET /machine/key at the same control URL must be the same key, or the engine refuses to
// talk to it, so whoever takes over control's address or DNS name cannot impersonate it. A
// reinstalled control (a new key on purpose) is accepted only when the user says so
// (`weft up --accept-new-control-key`). A new control URL starts a new pin.

export class ControlKeyPinning {
  constructor(private readonly store: StateStore) {}

  /**
   * Checks `publicKey`, served by control at `controlUrl`, against the pin, pinning it when there is
   * none for this URL (or when `acceptNew`). Throws when it differs from the pinned key.
   */
  async check(controlUrl: string, publicKey: string, acceptNew: boolean): Promise<void> {
    const pin = await this.store.loadControlKeyPin();
    if (pin?.controlUrl === controlUrl && pin.publicKey === publicKey) return;
    if (pin?.controlUrl === controlUrl && !acceptNew) {
      throw new WeftError(
        'control-rejected',
        `control at ${controlUrl} now presents the key ${publicKey}, not ${pin.publicKey} pinned on ${pin.pinnedAt}: refusing to talk to it. If control was reinstalled on purpose, run 'weft up --control-url ${controlUrl} --accept-new-control-key'`,
      );
    }
    await this.store.saveControlKeyPin({ controlUrl, publicKey, pinnedAt: new Date().toISOString() });
  }
}
