import { SerialQueue } from '@weft/protocol';
import type { Logger } from '../log.js';
import type { Sysctl } from './sysctl.js';

// wireguard-go asks for 7 MiB UDP socket buffers; the kernel caps them at net.core.rmem_max and
// wmem_max, and with the usual defaults it drops packets under load (measured ~640 vs 980 Mbit/s).
// The limits are raised while any wireguard-go interface of ours is up and put back after the last one
// goes down, unless someone else changed them meanwhile. In a network namespace they belong to the
// host and are read-only: that is logged once and the interface works, only slower.

export const WIREGUARD_GO_SOCKET_BUFFER = 7 * 1024 * 1024;
const LIMITS = ['net.core.rmem_max', 'net.core.wmem_max'];

export class UdpBuffers {
  private readonly holders = new Set<string>();
  /** Limits we raised, with the value they had before. */
  private readonly saved = new Map<string, string>();
  // Raise and release come both from requests and from a wireguard-go that exits on its own.
  private readonly queue = new SerialQueue();
  private warned = false;

  constructor(
    private readonly sysctl: Sysctl,
    private readonly log: Logger,
  ) {}

  /** Makes sure the limits are high enough while `holder` (an interface name) needs them. */
  raise(holder: string): Promise<void> {
    return this.queue.run(async () => {
      this.holders.add(holder);
      if (this.holders.size > 1) return;
      for (const key of LIMITS) {
        try {
          const old = await this.sysctl.read(key);
          if (Number(old) >= WIREGUARD_GO_SOCKET_BUFFER) continue;
          await this.sysctl.write(key, String(WIREGUARD_GO_SOCKET_BUFFER));
          this.saved.set(key, old);
          this.log.info(`raised ${key} from ${old} to ${WIREGUARD_GO_SOCKET_BUFFER} for wireguard-go`);
        } catch (e) {
          this.warnOnce(
            `cannot raise ${key} (${(e as Error).message}); wireguard-go may drop packets under load`,
          );
        }
      }
    });
  }

  /** `holder` no longer needs the limits; the last holder to go puts back what was raised. */
  release(holder: string): Promise<void> {
    return this.queue.run(async () => {
      if (!this.holders.delete(holder) || this.holders.size > 0) return;
      for (const [key, old] of this.saved) {
        try {
          const now = await this.sysctl.read(key);
          if (Number(now) !== WIREGUARD_GO_SOCKET_BUFFER) {
            this.log.info(`leaving ${key} at ${now}: changed by someone else since it was raised`);
            continue;
          }
          await this.sysctl.write(key, old);
          this.log.info(`restored ${key} to ${old}`);
        } catch (e) {
          this.log.warn(`cannot restore ${key} to ${old}: ${(e as Error).message}`);
        }
      }
      this.saved.clear();
    });
  }

  /** Who needs the limits and the values to put back, for the state file. */
  snapshot(): { holders: string[]; saved: Record<string, string> } {
    return { holders: [...this.holders].sort(), saved: Object.fromEntries(this.saved) };
  }

  /** Takes over what an earlier helper raised (from its state file), so it is put back in time. */
  load(snapshot: { holders: readonly string[]; saved: Readonly<Record<string, string>> }): void {
    for (const holder of snapshot.holders) this.holders.add(holder);
    for (const [key, old] of Object.entries(snapshot.saved)) this.saved.set(key, old);
  }

  private warnOnce(message: string): void {
    if (this.warned) return;
    this.warned = true;
    this.log.warn(message);
  }
}
