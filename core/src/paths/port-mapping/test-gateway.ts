import { createSocket } from 'node:dgram';
import {
  decodePortMappingRequest,
  encodeNatPmpAddressAnswer,
  encodeNatPmpMapAnswer,
  encodePcpMapAnswer,
  type PortMappingRequest,
  parseAddr,
} from '@weft/protocol';
import { startUpnpGateway, type UpnpRequest } from './test-upnp-gateway.js';

// A port-mapping daemon for tests (core's unit tests and the lab router, e2e/lab/): answers NAT-PMP and PCP MAP as a gateway would, or
// only UPnP IGD (test-upnp-gateway.ts), or, in `garbage` mode, all three with malformed answers of
// every kind; it reports each mapping granted or deleted, so the lab can install a real forwarding
// rule for it.

export type GatewayMode = 'pcp' | 'nat-pmp' | 'upnp' | 'garbage';

export type GatewayRequest = PortMappingRequest | UpnpRequest;

export interface GrantedMapping {
  internalPort: number;
  externalPort: number;
  /** Seconds; 0 when the client deleted the mapping. */
  lifetime: number;
  /** The client's address (where the mapping forwards to). */
  client: string;
}

export interface PortMappingGatewayOptions {
  host: string;
  /** 0 for a free port (loopback tests); 5351 on a lab router. Not bound in `upnp` mode. */
  port: number;
  /** SSDP: 0 for a free port (loopback tests); 1900 on a lab router. */
  ssdpPort?: number;
  externalAddress: string;
  mode: GatewayMode;
  /** The port granted for an internal port; by default the one the client suggested, or the same. */
  externalPortFor?: (internalPort: number, suggested: number) => number;
  lifetime?: number;
  /** UPnP: answer 718 to a client re-adding a port it holds, as some IGDs do on renewal. */
  conflictOnRenew?: boolean;
  /** UPnP: on the first renewal, give the port to this other client and answer 718. */
  handOverOnRenew?: string;
  onRequest?: (req: GatewayRequest) => void;
  onMapping?: (mapping: GrantedMapping) => void;
}

export interface PortMappingGateway {
  /**
   * NAT-PMP and PCP's port, and SSDP's. A protocol the mode does not speak gets a port nothing
   * listens on: the client is told "port unreachable" at once, as by a router without it.
   */
  port: number;
  ssdpPort: number;
  requests: GatewayRequest[];
  close(): Promise<void>;
}

export async function startPortMappingGateway(opts: PortMappingGatewayOptions): Promise<PortMappingGateway> {
  const external = parseAddr(opts.externalAddress);
  if (external?.family !== 4) throw new Error(`external address must be IPv4: ${opts.externalAddress}`);
  const socket = createSocket('udp4');
  const requests: GatewayRequest[] = [];
  const record = (req: GatewayRequest) => {
    requests.push(req);
    opts.onRequest?.(req);
  };
  const started = Date.now();
  const epoch = () => Math.floor((Date.now() - started) / 1000);
  socket.on('message', (msg, from) => {
    const req = decodePortMappingRequest(new Uint8Array(msg));
    if (!req) return;
    record(req);
    for (const answer of answersTo(req, from.address)) socket.send(answer, from.port, from.address);
  });
  const answersTo = (req: PortMappingRequest, client: string): Uint8Array[] => {
    if (opts.mode === 'garbage') return garbage(req);
    if (req.protocol === 'pcp' && opts.mode === 'nat-pmp')
      return [new Uint8Array([0, 129, 0, 1, 0, 0, 0, 0])];
    if (req.op === 'address') return [encodeNatPmpAddressAnswer({ result: 0, epoch: epoch() }, external)];
    const deleting = req.lifetime === 0;
    const externalPort = deleting
      ? 0
      : (opts.externalPortFor?.(req.internalPort, req.suggestedExternalPort) ??
        (req.suggestedExternalPort || req.internalPort));
    const lifetime = deleting ? 0 : Math.min(req.lifetime, opts.lifetime ?? req.lifetime);
    const answer = { result: 0, epoch: epoch(), internalPort: req.internalPort, externalPort, lifetime };
    opts.onMapping?.({ internalPort: req.internalPort, externalPort, lifetime, client });
    return [
      req.protocol === 'pcp'
        ? encodePcpMapAnswer(answer, req.nonce, external)
        : encodeNatPmpMapAnswer(answer),
    ];
  };
  const upnp =
    opts.mode === 'upnp' || opts.mode === 'garbage'
      ? await startUpnpGateway({
          host: opts.host,
          ssdpPort: opts.ssdpPort ?? 0,
          externalAddress: opts.externalAddress,
          garbage: opts.mode === 'garbage',
          conflictOnRenew: opts.conflictOnRenew ?? false,
          ...(opts.handOverOnRenew !== undefined ? { handOverOnRenew: opts.handOverOnRenew } : {}),
          ...(opts.lifetime !== undefined ? { lifetime: opts.lifetime } : {}),
          onRequest: record,
          onMapping: (m) => opts.onMapping?.(m),
        })
      : null;
  const pmp = opts.mode !== 'upnp';
  if (pmp) await new Promise<void>((resolve) => socket.bind(opts.port, opts.host, resolve));
  return {
    port: pmp ? socket.address().port : await unusedPort(opts.host),
    ssdpPort: upnp?.ssdpPort ?? (await unusedPort(opts.host)),
    requests,
    close: async () => {
      await upnp?.close();
      if (pmp) await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

/** A UDP port on `host` that nothing listens on (one just bound and closed again). */
async function unusedPort(host: string): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, host, resolve));
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Answers a client must ignore: truncated, oversized, wrong version, opcode or nonce. */
function garbage(req: PortMappingRequest): Uint8Array[] {
  const external = { family: 4 as const, value: 0xcb007107n }; // 203.0.113.7
  const ok = {
    result: 0,
    epoch: 1,
    internalPort: req.op === 'map' ? req.internalPort : 0,
    externalPort: 40000,
    lifetime: 60,
  };
  if (req.protocol === 'pcp') {
    const good = encodePcpMapAnswer(ok, req.nonce, external);
    const otherNonce = encodePcpMapAnswer(
      ok,
      req.nonce.map((b) => b ^ 0xff),
      external,
    );
    return [
      good.subarray(0, 59),
      concat(good, new Uint8Array(1)),
      withByte(good, 0, 1),
      withByte(good, 1, 0x82),
      otherNonce,
    ];
  }
  const good =
    req.op === 'address'
      ? encodeNatPmpAddressAnswer({ result: 0, epoch: 1 }, external)
      : encodeNatPmpMapAnswer(ok);
  return [
    good.subarray(0, good.length - 1),
    concat(good, new Uint8Array(4)),
    withByte(good, 0, 2),
    withByte(good, 1, 130),
    new Uint8Array(0),
  ];
}

function withByte(msg: Uint8Array, at: number, value: number): Uint8Array {
  const out = msg.slice();
  out[at] = value;
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
