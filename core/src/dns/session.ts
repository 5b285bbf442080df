import { EventEmitter } from 'node:events';
import {
  type DesiredState,
  type DnsQueryResult,
  type DnsStatus,
  type NetMap,
  parseAddr,
  SerialQueue,
  TAILNET_DNS_IPV6,
} from '@weft/protocol';
import dnsPacket, { type RecordType } from 'dns-packet';
import { describeError, type Logger } from '../log/logger.js';
import { TailnetNames } from './names.js';
import { describeAnswer } from './query.js';
import { Resolver } from './resolver.js';
import { DnsServer } from './server.js';

// The engine's DNS: the resolver follows the netmap, and while the tunnel is up with "use tailnet
// DNS" on, listens (unprivileged, a free high port) on the node's tunnel addresses. Only once it
// listens does the desired state ask the helper to point the OS at it, so the OS never resolves
// through a resolver that is not there.

interface Listening {
  servers: DnsServer[];
  addresses: string[];
  port: number;
}

export class DnsSession extends EventEmitter<{ change: [] }> {
  readonly resolver: Resolver;
  private listening: Listening | null = null;
  private namesKey = '';
  private lastNetmap: NetMap | null | undefined;
  private readonly busy = new SerialQueue();
  /** The user's "use tailnet DNS", as last synced (for status). */
  private useTailnetDns = false;

  constructor(
    private readonly log: Logger,
    private readonly osResolvers: () => readonly string[],
  ) {
    super();
    this.resolver = new Resolver({ osResolvers: () => this.osResolvers() });
  }

  /**
   * Follows the engine: the netmap's names answer from now on, and the resolver listens on the
   * node's tunnel addresses while `up` (the tunnel running and tailnet DNS wanted), else stops.
   */
  sync(netmap: NetMap | null, up: boolean, useTailnetDns: boolean): Promise<void> {
    this.useTailnetDns = useTailnetDns;
    this.netmapChanged(netmap);
    return this.update(up && netmap?.dns !== undefined ? netmap.self.addresses : null);
  }

  /**
   * The cache is kept unless the names changed. The engine syncs on every tunnel change too (a
   * status read, every 100 ms while a path is tried): the same netmap is not read again.
   */
  private netmapChanged(netmap: NetMap | null): void {
    if (netmap === this.lastNetmap) return;
    this.lastNetmap = netmap;
    const names = netmap ? TailnetNames.of(netmap) : null;
    const key = names ? JSON.stringify([names.settings, names.records()]) : '';
    if (key === this.namesKey) return;
    this.namesKey = key;
    this.resolver.setNames(names);
  }

  /**
   * Listens on `addresses` (the tunnel's, once the helper has them) or stops (`null`: DNS off or
   * the tunnel down). Emits `change` when where it listens changed.
   */
  private update(addresses: readonly string[] | null): Promise<void> {
    return this.busy
      .run(() => this.converge(addresses))
      .catch((err) => this.log.warn(`tailnet DNS resolver: ${describeError(err)}`));
  }

  private async converge(wanted: readonly string[] | null): Promise<void> {
    const hosts = (wanted ?? []).map((a) => a.split('/')[0] as string);
    const ipv4 = hosts.find((h) => parseAddr(h)?.family === 4);
    const current = this.listening;
    if (current && ipv4 !== undefined && current.addresses[0] === ipv4) return;
    if (current) {
      this.listening = null;
      await Promise.all(current.servers.map((s) => s.close()));
      this.emit('change');
    }
    if (ipv4 === undefined) return;
    const server = new DnsServer(this.resolver);
    const at = await server.listen(ipv4, 0);
    const addresses = [ipv4];
    // The same port on the IPv6 tunnel address when it is free (the twin fd7a:115c:a1e0::53 goes there).
    const ipv6 = hosts.find((h) => parseAddr(h)?.family === 6);
    const servers = [server];
    if (ipv6 !== undefined) {
      const six = new DnsServer(this.resolver);
      try {
        await six.listen(ipv6, at.port);
        addresses.push(ipv6);
        servers.push(six);
      } catch (err) {
        this.log.warn(`tailnet DNS resolver on [${ipv6}]:${at.port}: ${describeError(err)}`);
      }
    }
    this.listening = { servers, addresses, port: at.port };
    this.log.info(`tailnet DNS resolver listening on ${addresses.join(', ')} port ${at.port}`);
    this.emit('change');
  }

  /** The desired state with the OS pointed at the resolver, when it listens and DNS is wanted. */
  withDns(state: DesiredState, netmap: NetMap): DesiredState {
    const listening = this.listening;
    const settings = netmap.dns;
    if (!listening || !settings) return state;
    const [ipv4, ipv6] = listening.addresses as [string, string | undefined];
    return {
      ...state,
      // The IPv6 twin is outside the tailnet's ULA range: it is routed into the interface so the
      // redirect sees it (100.100.100.100 is inside 100.64.0.0/10 already).
      routes: ipv6 === undefined ? state.routes : [...state.routes, `${TAILNET_DNS_IPV6}/128`],
      dns: {
        resolver: { ipv4, ...(ipv6 === undefined ? {} : { ipv6 }), port: listening.port },
        searchDomains: settings.magicDns
          ? [settings.baseDomain, ...settings.searchDomains]
          : settings.searchDomains,
      },
    };
  }

  status(): DnsStatus {
    const listening = this.listening;
    return {
      settings: this.resolver.settings,
      useTailnetDns: this.useTailnetDns,
      resolver: listening ? { addresses: listening.addresses, port: listening.port } : null,
      osResolvers: [...this.osResolvers()],
      records: this.resolver.records().map((r) => ({ name: r.fqdn, addresses: [...r.v4, ...r.v6] })),
      stats: { ...this.resolver.stats },
    };
  }

  /** One question answered by the resolver in-process (`weft dns query`), as the OS would get it. */
  async query({ name, type }: { name: string; type: DnsQueryResult['type'] }): Promise<DnsQueryResult> {
    const wire = dnsPacket.encode({
      type: 'query',
      id: 1,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: type as RecordType, name }],
    });
    const answer = await this.resolver.handle(wire, 'tcp');
    if (answer === null) throw new Error('the resolver gave no answer');
    return { name, type, ...describeAnswer(dnsPacket.decode(answer)) };
  }

  async close(): Promise<void> {
    await this.update(null);
  }
}
