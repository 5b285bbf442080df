import { type Addr, formatAddr } from './ip.js';

// Port mapping wire formats: NAT-PMP (RFC 6886) and PCP MAP (RFC 6887), both on UDP port 5351 of
// the gateway. Fixed-layout messages, so the codec is hand-written: the npm clients
// (@achingbrain/nat-port-mapper, nat-api, nat-pmp) speak no PCP and throw or guess on bad input.
// Decoders are strict: an answer of another length, version, opcode or nonce is `null` (ignored),
// never an exception, since anyone on the LAN can send to our socket.

export const PORT_MAPPING_PORT = 5351;
export const NAT_PMP_VERSION = 0;
export const PCP_VERSION = 2;
export const PCP_MAP_OPCODE = 1;
export const PCP_NONCE_BYTES = 12;
const PCP_MAP_BYTES = 60;
const UDP = 17;
/** `::ffff:0:0/96`: PCP carries IPv4 addresses in this IPv4-mapped form. */
const V4_MAPPED = 0xffff00000000n;

export type PortMappingProtocol = 'pcp' | 'nat-pmp' | 'upnp';

/** NAT-PMP answer to the external address request (opcode 0). */
export interface NatPmpAddressAnswer {
  result: number;
  epoch: number;
  externalAddress: string;
}

/** NAT-PMP answer to a UDP mapping request (opcode 1), or PCP MAP: the port granted. */
export interface MappingAnswer {
  result: number;
  epoch: number;
  internalPort: number;
  externalPort: number;
  /** Seconds the gateway keeps the mapping (0 after a delete). */
  lifetime: number;
}

export interface PcpMapAnswer extends MappingAnswer {
  externalAddress: string;
}

export interface PcpMapRequest {
  /** Our address as the gateway sees it (the source of the request). */
  clientAddress: Addr;
  nonce: Uint8Array;
  internalPort: number;
  suggestedExternalPort: number;
  lifetime: number;
}

export function encodeNatPmpAddressRequest(): Uint8Array {
  return new Uint8Array([NAT_PMP_VERSION, 0]);
}

/** A UDP mapping request; lifetime 0 with external port 0 deletes the mapping. */
export function encodeNatPmpMapRequest(
  internalPort: number,
  suggestedExternalPort: number,
  lifetime: number,
) {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  out[0] = NAT_PMP_VERSION;
  out[1] = 1;
  view.setUint16(4, internalPort);
  view.setUint16(6, suggestedExternalPort);
  view.setUint32(8, lifetime);
  return out;
}

export function decodeNatPmpAddressAnswer(msg: Uint8Array): NatPmpAddressAnswer | null {
  if (msg.length !== 12 || msg[0] !== NAT_PMP_VERSION || msg[1] !== 128) return null;
  const view = viewOf(msg);
  const address = formatAddr({ family: 4, value: BigInt(view.getUint32(8)) });
  return { result: view.getUint16(2), epoch: view.getUint32(4), externalAddress: address };
}

export function decodeNatPmpMapAnswer(msg: Uint8Array): MappingAnswer | null {
  if (msg.length !== 16 || msg[0] !== NAT_PMP_VERSION || msg[1] !== 129) return null;
  const view = viewOf(msg);
  return {
    result: view.getUint16(2),
    epoch: view.getUint32(4),
    internalPort: view.getUint16(8),
    externalPort: view.getUint16(10),
    lifetime: view.getUint32(12),
  };
}

/** A PCP MAP request for UDP; lifetime 0 with the mapping's nonce deletes it. */
export function encodePcpMapRequest(req: PcpMapRequest): Uint8Array {
  if (req.nonce.length !== PCP_NONCE_BYTES) throw new Error(`PCP nonce must be ${PCP_NONCE_BYTES} bytes`);
  const out = new Uint8Array(PCP_MAP_BYTES);
  const view = new DataView(out.buffer);
  out[0] = PCP_VERSION;
  out[1] = PCP_MAP_OPCODE;
  view.setUint32(4, req.lifetime);
  writeAddr16(out, 8, req.clientAddress);
  out.set(req.nonce, 24);
  out[36] = UDP;
  view.setUint16(40, req.internalPort);
  view.setUint16(42, req.suggestedExternalPort);
  // Suggested external address: all zeros (any), as RFC 6887 §11.1 allows.
  return out;
}

/**
 * A PCP MAP answer to the request with `nonce`. Answers with options are not accepted: Weft sends
 * none, and a gateway only adds options the request carried.
 */
export function decodePcpMapAnswer(msg: Uint8Array, nonce: Uint8Array): PcpMapAnswer | null {
  if (msg.length !== PCP_MAP_BYTES || msg[0] !== PCP_VERSION || msg[1] !== (0x80 | PCP_MAP_OPCODE))
    return null;
  if (msg[36] !== UDP || !sameBytes(msg.subarray(24, 36), nonce)) return null;
  const view = viewOf(msg);
  const external = readAddr16(msg, 44);
  return {
    result: msg[3] ?? 0,
    lifetime: view.getUint32(4),
    epoch: view.getUint32(8),
    internalPort: view.getUint16(40),
    externalPort: view.getUint16(42),
    externalAddress: formatAddr(external),
  };
}

/**
 * A NAT-PMP-only gateway answers a PCP request with a version 0 "unsupported version" error
 * (RFC 6887 §9): the sign to fall back to NAT-PMP without waiting out the PCP retries.
 */
export function isNatPmpUnsupportedVersion(msg: Uint8Array): boolean {
  return (
    msg.length >= 4 && msg[0] === NAT_PMP_VERSION && msg[1] !== undefined && msg[1] >= 128 && msg[3] === 1
  );
}

// The daemon side, for the lab's test gateway (e2e/lab/) and the client's tests.

export type PortMappingRequest =
  | { protocol: 'nat-pmp'; op: 'address' }
  | { protocol: 'nat-pmp'; op: 'map'; internalPort: number; suggestedExternalPort: number; lifetime: number }
  | ({ protocol: 'pcp'; op: 'map' } & PcpMapRequest);

export function decodePortMappingRequest(msg: Uint8Array): PortMappingRequest | null {
  const view = viewOf(msg);
  if (msg[0] === NAT_PMP_VERSION) {
    if (msg.length === 2 && msg[1] === 0) return { protocol: 'nat-pmp', op: 'address' };
    if (msg.length === 12 && msg[1] === 1 && view.getUint16(2) === 0)
      return {
        protocol: 'nat-pmp',
        op: 'map',
        internalPort: view.getUint16(4),
        suggestedExternalPort: view.getUint16(6),
        lifetime: view.getUint32(8),
      };
    return null;
  }
  if (msg.length !== PCP_MAP_BYTES || msg[0] !== PCP_VERSION || msg[1] !== PCP_MAP_OPCODE || msg[36] !== UDP)
    return null;
  return {
    protocol: 'pcp',
    op: 'map',
    lifetime: view.getUint32(4),
    clientAddress: readAddr16(msg, 8),
    nonce: msg.slice(24, 36),
    internalPort: view.getUint16(40),
    suggestedExternalPort: view.getUint16(42),
  };
}

export function encodeNatPmpAddressAnswer(
  a: Omit<NatPmpAddressAnswer, 'externalAddress'>,
  external: Addr,
): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  out[1] = 128;
  view.setUint16(2, a.result);
  view.setUint32(4, a.epoch);
  view.setUint32(8, Number(external.value));
  return out;
}

export function encodeNatPmpMapAnswer(a: MappingAnswer): Uint8Array {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  out[1] = 129;
  view.setUint16(2, a.result);
  view.setUint32(4, a.epoch);
  view.setUint16(8, a.internalPort);
  view.setUint16(10, a.externalPort);
  view.setUint32(12, a.lifetime);
  return out;
}

export function encodePcpMapAnswer(a: MappingAnswer, nonce: Uint8Array, external: Addr): Uint8Array {
  const out = new Uint8Array(PCP_MAP_BYTES);
  const view = new DataView(out.buffer);
  out[0] = PCP_VERSION;
  out[1] = 0x80 | PCP_MAP_OPCODE;
  out[3] = a.result;
  view.setUint32(4, a.lifetime);
  view.setUint32(8, a.epoch);
  out.set(nonce.subarray(0, PCP_NONCE_BYTES), 24);
  out[36] = UDP;
  view.setUint16(40, a.internalPort);
  view.setUint16(42, a.externalPort);
  writeAddr16(out, 44, external);
  return out;
}

function viewOf(msg: Uint8Array): DataView {
  return new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
}

function writeAddr16(out: Uint8Array, at: number, addr: Addr): void {
  let value = addr.family === 4 ? V4_MAPPED | addr.value : addr.value;
  for (let i = 15; i >= 0; i--) {
    out[at + i] = Number(value & 0xffn);
    value >>= 8n;
  }
}

function readAddr16(msg: Uint8Array, at: number): Addr {
  let value = 0n;
  for (let i = 0; i < 16; i++) value = (value << 8n) | BigInt(msg[at + i] ?? 0);
  return value >> 32n === 0xffffn ? { family: 4, value: value & 0xffffffffn } : { family: 6, value };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
