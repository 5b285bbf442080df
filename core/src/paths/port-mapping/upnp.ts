import { createSocket } from 'node:dgram';
import { parseAddr } from '@weft/protocol';
import {
  encodeMSearch,
  encodeSoapRequest,
  type PortMappingEntry,
  parsePortMappingEntry,
  parseRootDescription,
  parseSoapAnswer,
  parseSsdpAnswer,
  type SoapAnswer,
  type SoapArgs,
  SSDP_MULTICAST,
  SSDP_PORT,
  UPNP_MAX_BYTES,
  type WanConnectionService,
} from '@weft/protocol/upnp';
import { exchange } from './exchange.js';

// UPnP IGD: finds the gateway's WAN connection service (SSDP M-SEARCH, then its root
// description) and maps a UDP port with SOAP AddPortMapping. Only the default gateway is
// believed: an SSDP answer from another address, or a description or control URL on another
// host, is ignored, so a LAN device cannot point us at itself. Every answer is bounded in size
// (UPNP_MAX_BYTES) and time.

export interface UpnpOptions {
  /** The gateway's SSDP port (1900; tests use another, and then no multicast is sent). */
  ssdpPort: number;
  retryMs: readonly number[];
  /** Bound on each HTTP exchange (description, SOAP action). */
  httpTimeoutMs: number;
}

export interface UpnpMapping {
  service: WanConnectionService;
  externalAddress: string;
  externalPort: number;
  /** Seconds granted (the lease asked for; IGDs answer AddPortMapping with no lease). */
  lifetime: number;
}

/** UPnP error codes (IGD WANIPConnection:1 §2.4.16) that change what to ask. */
const CONFLICT_IN_MAPPING_ENTRY = 718;
const ONLY_PERMANENT_LEASES_SUPPORTED = 725;

/** The root description's URL, from the first SSDP answer of the gateway that points at itself. */
export async function discoverIgd(gateway: string, opts: UpnpOptions): Promise<string | null> {
  const socket = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const unicast = encodeMSearch(gateway);
    const multicast = encodeMSearch(SSDP_MULTICAST);
    // Multicast reaches IGDs that answer only on the group; only on the real SSDP port, so a
    // test's gateway on loopback never makes us search the machine's own LAN.
    const send = (onError: (err: Error | null) => void) => {
      socket.send(unicast, opts.ssdpPort, gateway, onError);
      if (opts.ssdpPort === SSDP_PORT) socket.send(multicast, SSDP_PORT, SSDP_MULTICAST, () => {});
    };
    return await exchange(
      socket,
      send,
      (msg, from) => {
        if (from.address !== gateway) return null;
        const answer = parseSsdpAnswer(msg);
        return answer && onHost(answer.location, gateway) ? answer.location : null;
      },
      opts.retryMs,
    );
  } catch {
    return null; // no IPv4 socket to send from: no UPnP
  } finally {
    socket.close();
  }
}

/** The gateway's WAN connection service, from its root description at `location`. */
export async function findWanService(
  location: string,
  gateway: string,
  opts: UpnpOptions,
): Promise<WanConnectionService | null> {
  const body = await httpText(location, { method: 'GET' }, opts.httpTimeoutMs, true);
  const service = body === null ? null : parseRootDescription(body, location);
  return service && onHost(service.controlUrl, gateway) ? service : null;
}

/**
 * Maps UDP `externalPort` (or, when another client holds it, a random one) to `internalClient`:
 * `internalPort` for `lifetime` seconds (GetExternalIPAddress, then AddPortMapping; renewing is
 * the same call again). Null when the gateway refuses or answers nonsense.
 */
export async function addUpnpMapping(
  service: WanConnectionService,
  m: { internalClient: string; internalPort: number; externalPort: number; lifetime: number },
  opts: UpnpOptions,
): Promise<UpnpMapping | null> {
  const ip = await soap(service, 'GetExternalIPAddress', {}, opts);
  const externalAddress = ip?.ok ? ip.values.NewExternalIPAddress : undefined;
  if (externalAddress === undefined || parseAddr(externalAddress)?.family !== 4) return null;
  const add = (externalPort: number, lease: number) =>
    soap(
      service,
      'AddPortMapping',
      {
        NewRemoteHost: '',
        NewExternalPort: String(externalPort),
        NewProtocol: 'UDP',
        NewInternalPort: String(m.internalPort),
        NewInternalClient: m.internalClient,
        NewEnabled: '1',
        NewPortMappingDescription: `weft ${m.internalPort}`,
        NewLeaseDuration: String(lease),
      },
      opts,
    );
  let port = m.externalPort;
  let lease = m.lifetime;
  let answer = await add(port, lease);
  if (answer?.ok === false && answer.errorCode === ONLY_PERMANENT_LEASES_SUPPORTED) {
    lease = 0; // IGDv1 gateways may keep only permanent mappings; deleted on stop all the same
    answer = await add(port, lease);
  }
  if (answer?.ok === false && answer.errorCode === CONFLICT_IN_MAPPING_ENTRY) {
    port = 1024 + Math.floor(Math.random() * (65536 - 1024));
    answer = await add(port, lease);
  }
  if (!answer?.ok) return null;
  return { service, externalAddress, externalPort: port, lifetime: m.lifetime };
}

/**
 * True only when the gateway says UDP `externalPort` forwards to `ours` (GetSpecificPortMappingEntry).
 * Many IGDv1 routers let any LAN client delete any mapping, so a port is deleted only once it is
 * known to be ours; any error or other answer leaves it to expire with its lease.
 */
export async function upnpMappingIsOurs(
  service: WanConnectionService,
  externalPort: number,
  ours: PortMappingEntry,
  opts: UpnpOptions,
): Promise<boolean> {
  const answer = await soap(
    service,
    'GetSpecificPortMappingEntry',
    { NewRemoteHost: '', NewExternalPort: String(externalPort), NewProtocol: 'UDP' },
    opts,
  );
  const entry = answer?.ok ? parsePortMappingEntry(answer.values) : null;
  return entry?.internalClient === ours.internalClient && entry.internalPort === ours.internalPort;
}

export async function deleteUpnpMapping(
  service: WanConnectionService,
  externalPort: number,
  opts: UpnpOptions,
): Promise<void> {
  await soap(
    service,
    'DeletePortMapping',
    { NewRemoteHost: '', NewExternalPort: String(externalPort), NewProtocol: 'UDP' },
    opts,
  );
}

async function soap(
  service: WanConnectionService,
  action: string,
  args: SoapArgs,
  opts: UpnpOptions,
): Promise<SoapAnswer | null> {
  // A UPnP error comes as HTTP 500 with a SOAP fault: the status does not decide.
  const body = await httpText(
    service.controlUrl,
    {
      method: 'POST',
      headers: {
        'content-type': 'text/xml; charset="utf-8"',
        soapaction: `"${service.serviceType}#${action}"`,
      },
      body: encodeSoapRequest(service.serviceType, action, args),
    },
    opts.httpTimeoutMs,
    false,
  );
  return body === null ? null : parseSoapAnswer(body, action);
}

/**
 * The body of an HTTP exchange, or null on any failure: a redirect (it could lead off the
 * gateway), a body over UPNP_MAX_BYTES, or no complete answer within `timeoutMs`.
 */
async function httpText(
  url: string,
  init: RequestInit,
  timeoutMs: number,
  needOk: boolean,
): Promise<string | null> {
  try {
    const res = await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
    if ((needOk && !res.ok) || !res.body) {
      await res.body?.cancel();
      return null;
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += chunk.byteLength;
      if (size > UPNP_MAX_BYTES) return null; // leaving the loop cancels the body
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString('utf8');
  } catch {
    return null;
  }
}

/** True when `url` is on the gateway itself (the URL parser normalises the address). */
function onHost(url: string, gateway: string): boolean {
  try {
    return new URL(url).hostname === gateway;
  } catch {
    return false;
  }
}
