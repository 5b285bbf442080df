import { type DnsConfig, MAX_OS_RESOLVERS, parseAddr } from '@weft/protocol';
import { BackendError } from '../backend.js';
import type { Logger } from '../log.js';
import { nameserversOf, type ResolvConf } from './dns-resolv-conf.js';
import { RESOLVED_PROBE, resolvedApplyPlan, resolvedRevertPlan } from './dns-resolved.js';
import { CommandError, formatCommand, type Runner } from './runner.js';

// Which resolver configuration the OS uses, and pointing it at the tailnet resolver for one
// interface at a time: systemd-resolved per link when it runs, else /etc/resolv.conf. Nothing is
// touched while no interface asks for DNS ("use tailnet DNS" off, or no DNS settings from control).

export class OsDns {
  /** The interface whose DNS is in force; null: the OS's DNS is as it was. */
  private owner: string | null = null;
  private mode: 'resolved' | 'resolv.conf' | null = null;
  /** resolved: the other links' servers (`resolvectl dns` prints "Link N (name): servers"). */
  private resolvedServers: string[] = [];

  constructor(
    private readonly runner: Runner,
    readonly resolvConf: ResolvConf,
    private readonly log: Logger,
  ) {}

  /** Makes `iface`'s DNS what `dns` says; null takes it back (a no-op if it never had any). */
  async sync(iface: string, dns: DnsConfig | null): Promise<void> {
    if (dns === null) {
      if (this.owner === iface) await this.release();
      return;
    }
    if (this.owner !== null && this.owner !== iface) {
      throw new BackendError(
        'invalid-request',
        `${this.owner} already provides the OS's DNS; turn tailnet DNS off there first`,
      );
    }
    this.mode ??= (await this.resolvedRuns()) ? 'resolved' : 'resolv.conf';
    if (this.mode === 'resolved') {
      for (const argv of resolvedApplyPlan(iface, dns.searchDomains)) await this.runner.run(argv);
      // Read once per apply, not on every status (the engine polls status every second or faster).
      const out = await this.runner.run(['resolvectl', '--no-pager', 'dns']).catch(() => '');
      this.resolvedServers = usableResolvers(parseResolvectlDns(out, iface));
    } else {
      await this.resolvConf.apply(dns.searchDomains);
    }
    this.owner = iface;
  }

  /** The resolvers the OS used before (what the engine forwards to when the tailnet sets none). */
  async osResolvers(iface: string): Promise<string[] | undefined> {
    if (this.owner !== iface) return undefined;
    if (this.mode === 'resolv.conf') return usableResolvers(await this.resolvConf.originalNameservers());
    // resolved: the other links' servers as of the last apply.
    return this.resolvedServers;
  }

  /** Puts the OS's DNS back as it was. */
  async release(): Promise<void> {
    const iface = this.owner;
    if (this.mode === 'resolved' && iface !== null) {
      for (const argv of resolvedRevertPlan(iface)) {
        // The link may be gone already, and its settings with it.
        await this.runner
          .run(argv)
          .catch((e) => this.log.warn(`${formatCommand(argv)}: ${(e as Error).message}`));
      }
    }
    await this.resolvConf.restore();
    this.owner = null;
    this.mode = null;
    this.resolvedServers = [];
  }

  private async resolvedRuns(): Promise<boolean> {
    try {
      await this.runner.run(RESOLVED_PROBE);
      return true;
    } catch (e) {
      if (e instanceof CommandError) return false;
      throw e;
    }
  }
}

/**
 * Addresses only, at most as many as a status may carry: more, or one the engine's schema refuses,
 * would fail the whole status and drop the helper connection on every poll.
 */
function usableResolvers(servers: readonly string[]): string[] {
  return servers.filter((s) => parseAddr(s) !== null).slice(0, MAX_OS_RESOLVERS);
}

/**
 * The servers of every link but `iface` in `resolvectl dns` output, global ones included, without
 * the `#server-name` resolved adds to DNS-over-TLS servers.
 */
export function parseResolvectlDns(out: string, iface: string): string[] {
  const servers: string[] = [];
  for (const line of out.split('\n')) {
    const m = line.match(/^(Global|Link \d+ \(([^)]+)\)):\s*(.*)$/);
    if (!m || m[2] === iface) continue;
    servers.push(
      ...nameserversOf(
        (m[3] as string)
          .split(/\s+/)
          .map((s) => `nameserver ${s.replace(/#.*$/, '')}`)
          .join('\n'),
      ),
    );
  }
  return servers.filter((s) => s !== '');
}
