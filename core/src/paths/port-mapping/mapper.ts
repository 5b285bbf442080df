import { randomBytes } from 'node:crypto';
import {
  decodeNatPmpAddressAnswer,
  decodeNatPmpMapAnswer,
  decodePcpMapAnswer,
  encodeNatPmpAddressRequest,
  encodeNatPmpMapRequest,
  encodePcpMapRequest,
  formatEndpoint,
  isNatPmpUnsupportedVersion,
  PCP_NONCE_BYTES,
  PORT_MAPPING_PORT,
  type PortMappingProtocol,
  parseAddr,
  parseEndpoint,
  parsePrefix,
  prefixContains,
  SerialQueue,
} from '@weft/protocol';
import { SSDP_PORT } from '@weft/protocol/upnp';
import { exchange, type GatewaySocket, openGatewaySocket, RETRY_MS } from './exchange.js';
import { defaultGateway } from './gateway.js';
import {
  addUpnpMapping,
  deleteUpnpMapping,
  discoverIgd,
  findWanService,
  type UpnpMapping,
  type UpnpOptions,
  upnpMappingIsOurs,
} from './upnp.js';

// Asks the gateway to forward a public UDP port to our WireGuard listen port: PCP MAP first, then
// NAT-PMP (both on port 5351), then UPnP IGD (SSDP + SOAP). The mapping is renewed at half its
// lifetime and deleted on stop, so a peer behind any NAT can reach us at the mapped endpoint.

/** Seconds asked for; gateways may grant less. Two hours, as RFC 6886 recommends. */
const REQUESTED_LIFETIME = 7200;
/** After a failed probe or renewal: ask again this much later. */
const RETRY_AFTER_MS = 60_000;
/** Bound on each UPnP HTTP exchange (description, SOAP action). */
const UPNP_HTTP_TIMEOUT_MS = 2_000;

export interface PortMapping {
  protocol: PortMappingProtocol;
  /** The public `ip:port` peers can send to. */
  endpoint: string;
  /** Seconds the gateway granted. */
  lifetime: number;
}

/** What the gateway answered to the last probe: which protocol mapped, or none. */
export type PortMappingAnswered = PortMappingProtocol | 'none';

export interface PortMapperOptions {
  listenPort: number;
  gateway?: () => Promise<string | null>;
  /** The gateway's port-mapping port (5351; tests use another). */
  gatewayPort?: number;
  /** The gateway's SSDP port (1900; tests use another). */
  ssdpPort?: number;
  retryMs?: readonly number[];
  /** Seconds to ask for (REQUESTED_LIFETIME; tests ask for less). */
  lifetime?: number;
  onChange?: (mapping: PortMapping | null) => void;
}

/** External addresses no peer can send to: a gateway that reports one has no usable mapping. */
const UNUSABLE = [
  '0.0.0.0/8',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '224.0.0.0/3',
  '::/128',
  '::1/128',
  'fe80::/10',
].flatMap((p) => parsePrefix(p, { strict: true }) ?? []);

export class PortMapper {
  private current: PortMapping | null = null;
  private lastAnswered: PortMappingAnswered | null = null;
  private nonce: Uint8Array = randomBytes(PCP_NONCE_BYTES);
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Operations run one at a time: a renewal never races the delete of `stop`. */
  private readonly queue = new SerialQueue();
  private readonly gateway: () => Promise<string | null>;
  private readonly gatewayPort: number;
  private readonly retryMs: readonly number[];
  private readonly lifetime: number;
  private readonly upnpOpts: UpnpOptions;
  /** The UPnP mapping behind `current`, for renewal and delete. */
  private upnp: UpnpMapping | null = null;

  constructor(private readonly opts: PortMapperOptions) {
    this.gateway = opts.gateway ?? defaultGateway;
    this.gatewayPort = opts.gatewayPort ?? PORT_MAPPING_PORT;
    this.retryMs = opts.retryMs ?? RETRY_MS;
    this.lifetime = opts.lifetime ?? REQUESTED_LIFETIME;
    this.upnpOpts = {
      ssdpPort: opts.ssdpPort ?? SSDP_PORT,
      retryMs: this.retryMs,
      httpTimeoutMs: UPNP_HTTP_TIMEOUT_MS,
    };
  }

  get mapping(): PortMapping | null {
    return this.current;
  }

  /** Null until the first probe has finished. */
  get answered(): PortMappingAnswered | null {
    return this.lastAnswered;
  }

  /** Probes the gateway and maps the port; resolves once the first answer (or none) is known. */
  start(): Promise<PortMapping | null> {
    this.stopped = false;
    return this.queue.run(() => this.refresh());
  }

  /** Deletes the mapping (best effort: one exchange) and stops renewing. */
  stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    return this.queue.run(async () => {
      const mapping = this.current;
      this.set(null);
      await this.release(mapping);
    });
  }

  /**
   * Deletes `mapping` (PCP or NAT-PMP) and the UPnP mapping we hold, whichever is set: a UPnP
   * mapping can exist with no current mapping (granted as a stop came), and after a 725 answer it
   * would never expire on the router.
   */
  private async release(mapping: PortMapping | null): Promise<void> {
    const upnp = this.upnp;
    this.upnp = null;
    if (upnp) await deleteUpnpMapping(upnp.service, upnp.externalPort, this.upnpOpts);
    if (!mapping || mapping.protocol === 'upnp') return;
    await this.withGateway((gw) =>
      mapping.protocol === 'pcp'
        ? exchange(gw.socket, this.pcpRequest(gw, 0), (m) => decodePcpMapAnswer(m, this.nonce), this.retryMs)
        : exchange(
            gw.socket,
            encodeNatPmpMapRequest(this.opts.listenPort, 0, 0),
            decodeNatPmpMapAnswer,
            this.retryMs,
          ),
    );
  }

  private async refresh(): Promise<PortMapping | null> {
    const mapping =
      (await this.withGateway(async (gw) => (await this.mapPcp(gw)) ?? (await this.mapNatPmp(gw)))) ??
      (this.stopped ? null : await this.mapUpnp());
    if (this.stopped) {
      // Stopped while the gateway was mapping: `stop` saw no mapping to delete, so delete it here.
      await this.release(mapping);
      return null;
    }
    if (this.upnp && mapping?.protocol !== 'upnp') {
      // Mapped another way now (or not at all): the UPnP mapping would hold the port until its lease ends.
      await deleteUpnpMapping(this.upnp.service, this.upnp.externalPort, this.upnpOpts);
      this.upnp = null;
    }
    this.lastAnswered = mapping?.protocol ?? 'none';
    this.set(mapping);
    const renewMs = mapping ? Math.max(1000, (mapping.lifetime * 1000) / 2) : RETRY_AFTER_MS;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.queue.run(() => this.refresh()), renewMs);
    this.timer.unref();
    return mapping;
  }

  private async withGateway<T>(use: (gw: GatewaySocket) => Promise<T | null>): Promise<T | null> {
    const address = await this.gateway();
    if (!address) return null;
    const gw = await openGatewaySocket(address, this.gatewayPort);
    if (!gw) return null;
    try {
      return await use(gw);
    } finally {
      gw.socket.close();
    }
  }

  private pcpRequest(gw: GatewaySocket, lifetime: number): Uint8Array {
    const clientAddress = parseAddr(gw.localAddress) ?? { family: 4 as const, value: 0n };
    const suggested = this.current?.protocol === 'pcp' ? portOf(this.current.endpoint) : 0;
    return encodePcpMapRequest({
      clientAddress,
      nonce: this.nonce,
      internalPort: this.opts.listenPort,
      suggestedExternalPort: suggested,
      lifetime,
    });
  }

  private async mapPcp(gw: GatewaySocket): Promise<PortMapping | null> {
    const answer = await exchange(
      gw.socket,
      this.pcpRequest(gw, this.lifetime),
      (m) => (isNatPmpUnsupportedVersion(m) ? 'stop' : decodePcpMapAnswer(m, this.nonce)),
      this.retryMs,
    );
    if (answer?.result !== 0 || answer.internalPort !== this.opts.listenPort) return null;
    return this.accept('pcp', answer.externalAddress, answer.externalPort, answer.lifetime);
  }

  private async mapNatPmp(gw: GatewaySocket): Promise<PortMapping | null> {
    const address = await exchange(
      gw.socket,
      encodeNatPmpAddressRequest(),
      decodeNatPmpAddressAnswer,
      this.retryMs,
    );
    if (address?.result !== 0) return null;
    const suggested =
      this.current?.protocol === 'nat-pmp' ? portOf(this.current.endpoint) : this.opts.listenPort;
    const answer = await exchange(
      gw.socket,
      encodeNatPmpMapRequest(this.opts.listenPort, suggested, this.lifetime),
      decodeNatPmpMapAnswer,
      this.retryMs,
    );
    if (answer?.result !== 0 || answer.internalPort !== this.opts.listenPort) return null;
    return this.accept('nat-pmp', address.externalAddress, answer.externalPort, answer.lifetime);
  }

  private async mapUpnp(): Promise<PortMapping | null> {
    const gateway = await this.gateway();
    if (!gateway) return null;
    // Our address towards the gateway (the mapping's internal client), as PCP's client address.
    const local = await openGatewaySocket(gateway, this.upnpOpts.ssdpPort);
    local?.socket.close();
    const location = local && (await discoverIgd(gateway, this.upnpOpts));
    const service = location && (await findWanService(location, gateway, this.upnpOpts));
    if (!local || !service) return null;
    const suggested = this.upnp?.externalPort ?? this.opts.listenPort;
    const mapping = await addUpnpMapping(
      service,
      {
        internalClient: local.localAddress,
        internalPort: this.opts.listenPort,
        externalPort: suggested,
        lifetime: this.lifetime,
      },
      this.upnpOpts,
    );
    if (!mapping) return null;
    const accepted = this.accept('upnp', mapping.externalAddress, mapping.externalPort, mapping.lifetime);
    // The router holds what it granted until the lease ends (never, after a 725 answer): delete the
    // old port when a 718 moved us to another, and the new one when its address is unusable. A 718
    // may mean another client holds the old port now, so it is deleted only if still ours.
    const replaced = this.upnp;
    this.upnp = accepted ? mapping : null;
    const ours = { internalClient: local.localAddress, internalPort: this.opts.listenPort };
    if (
      replaced &&
      replaced.externalPort !== mapping.externalPort &&
      (await upnpMappingIsOurs(replaced.service, replaced.externalPort, ours, this.upnpOpts))
    )
      await deleteUpnpMapping(replaced.service, replaced.externalPort, this.upnpOpts);
    if (!accepted) await deleteUpnpMapping(mapping.service, mapping.externalPort, this.upnpOpts);
    return accepted;
  }

  private accept(
    protocol: PortMappingProtocol,
    address: string,
    port: number,
    lifetime: number,
  ): PortMapping | null {
    const addr = parseAddr(address);
    if (!addr || port === 0 || lifetime === 0 || UNUSABLE.some((p) => prefixContains(p, addr))) return null;
    return { protocol, endpoint: formatEndpoint(addr, port), lifetime };
  }

  private set(mapping: PortMapping | null): void {
    const changed =
      mapping?.endpoint !== this.current?.endpoint || mapping?.protocol !== this.current?.protocol;
    this.current = mapping;
    if (changed) this.opts.onChange?.(mapping);
  }
}

function portOf(endpoint: string): number {
  return parseEndpoint(endpoint)?.port ?? 0;
}
