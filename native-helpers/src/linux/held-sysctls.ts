import { BackendError } from '../backend.js';
import type { Logger } from '../log.js';
import type { Sysctl } from './sysctl.js';

// Kernel parameters an interface's state needs while it lasts: IP forwarding for a subnet router or
// exit node, src_valid_mark for a client using an exit node. Each is set when the first interface
// needs it and put back to the value it had when the last one stops needing it, unless someone else
// changed it in the meantime. A parameter that already had the value is left alone and never reset.

export interface HeldSysctlsSnapshot {
  holders: Record<string, string[]>;
  saved: Record<string, { set: string; old: string }>;
}

export class HeldSysctls {
  /** Per parameter, the interfaces that need it. */
  private readonly holders = new Map<string, Set<string>>();
  /** Parameters we changed: the value we set and the one to restore. */
  private readonly saved = new Map<string, { set: string; old: string }>();

  constructor(
    private readonly sysctl: Sysctl,
    private readonly log: Logger,
  ) {}

  /** Makes `holder` need exactly `wanted` (parameter → value); what it no longer needs is released. */
  async hold(holder: string, wanted: ReadonlyMap<string, string>): Promise<void> {
    for (const [key, users] of this.holders) {
      if (!users.has(holder) || wanted.has(key)) continue;
      users.delete(holder);
      if (users.size === 0) {
        this.holders.delete(key);
        await this.restore(key);
      }
    }
    for (const [key, value] of wanted) {
      const users = this.holders.get(key) ?? new Set<string>();
      this.holders.set(key, users);
      if (users.has(holder)) continue;
      if (users.size === 0) await this.raise(key, value);
      users.add(holder);
    }
  }

  release(holder: string): Promise<void> {
    return this.hold(holder, new Map());
  }

  /** Who holds what and the values to put back, for the state file. */
  snapshot(): HeldSysctlsSnapshot {
    return {
      holders: Object.fromEntries([...this.holders].map(([key, users]) => [key, [...users].sort()])),
      saved: Object.fromEntries(this.saved),
    };
  }

  /** Takes over what an earlier helper held (from its state file), so it is put back in time. */
  load(snapshot: HeldSysctlsSnapshot): void {
    for (const [key, users] of Object.entries(snapshot.holders)) this.holders.set(key, new Set(users));
    for (const [key, saved] of Object.entries(snapshot.saved)) this.saved.set(key, { ...saved });
  }

  /** Parameters held, for tests and status. */
  held(): string[] {
    return [...this.holders.keys()].sort();
  }

  private async raise(key: string, value: string): Promise<void> {
    try {
      const old = await this.sysctl.read(key);
      if (old === value) return;
      await this.sysctl.write(key, value);
      this.saved.set(key, { set: value, old });
      this.log.info(`set ${key} from ${old} to ${value}`);
    } catch (e) {
      throw new BackendError('os-error', `cannot set ${key} to ${value}: ${(e as Error).message}`);
    }
  }

  private async restore(key: string): Promise<void> {
    const saved = this.saved.get(key);
    if (saved === undefined) return;
    this.saved.delete(key);
    try {
      const now = await this.sysctl.read(key);
      if (now !== saved.set) {
        this.log.info(`leaving ${key} at ${now}: changed by someone else since it was set`);
        return;
      }
      await this.sysctl.write(key, saved.old);
      this.log.info(`restored ${key} to ${saved.old}`);
    } catch (e) {
      this.log.warn(`cannot restore ${key} to ${saved.old}: ${(e as Error).message}`);
    }
  }
}

/** The parameters a state needs. */
export function sysctlsFor(state: {
  router?: { routes: readonly string[] };
  exitNode?: unknown;
}): Map<string, string> {
  const wanted = new Map<string, string>();
  const routes = state.router?.routes ?? [];
  if (routes.some((r) => !r.includes(':'))) wanted.set('net.ipv4.ip_forward', '1');
  if (routes.some((r) => r.includes(':'))) wanted.set('net.ipv6.conf.all.forwarding', '1');
  // Replies from the WireGuard endpoints carry the mark back (nft restores it from conntrack), so the
  // reverse-path filter looks them up with the mark and finds the physical route, as wg-quick does.
  if (state.exitNode !== undefined) wanted.set('net.ipv4.conf.all.src_valid_mark', '1');
  return wanted;
}
