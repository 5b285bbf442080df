import { z } from 'zod';
import { Cidr, Endpoint, IfaceAddr, InterfaceName, Key, Port } from './primitives.js';

// The privileged helper's one command language: newline-delimited JSON over a local socket.
// The engine always sends the complete desired state; the helper converges the OS to it.

/** Largest request line the helper reads; longer input is refused before parsing. */
export const HELPER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export const PeerConfig = z.strictObject({
  publicKey: Key,
  allowedIPs: z.array(Cidr).max(4096),
  endpoint: Endpoint.optional(),
  persistentKeepalive: z.number().int().min(1).max(65535).optional(),
});
export type PeerConfig = z.infer<typeof PeerConfig>;

export const DesiredState = z.strictObject({
  interface: z.strictObject({
    name: InterfaceName,
    privateKey: Key,
    listenPort: Port,
    addresses: z.array(IfaceAddr).max(16),
    mtu: z.number().int().min(1280).max(9000),
  }),
  peers: z.array(PeerConfig).max(65536),
  /** Prefixes routed into the interface (peers' addresses and approved routes). */
  routes: z.array(Cidr).max(65536),
});
export type DesiredState = z.infer<typeof DesiredState>;

const RequestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const HelperRequest = z.discriminatedUnion('op', [
  z.strictObject({ id: RequestId, op: z.literal('apply'), state: DesiredState }),
  z.strictObject({ id: RequestId, op: z.literal('status'), interface: InterfaceName }),
  z.strictObject({ id: RequestId, op: z.literal('down'), interface: InterfaceName }),
]);
export type HelperRequest = z.infer<typeof HelperRequest>;

export const WgPeerStatus = z.strictObject({
  publicKey: Key,
  endpoint: z.string().nullable(),
  allowedIPs: z.array(z.string()),
  /** Unix seconds of the last handshake, null if none. */
  latestHandshake: z.number().int().nullable(),
  rxBytes: z.number().int(),
  txBytes: z.number().int(),
});
export type WgPeerStatus = z.infer<typeof WgPeerStatus>;

export const InterfaceStatus = z.strictObject({
  name: InterfaceName,
  exists: z.boolean(),
  backend: z.enum(['kernel', 'wireguard-go']).nullable(),
  publicKey: Key.nullable(),
  listenPort: Port.nullable(),
  addresses: z.array(z.string()),
  peers: z.array(WgPeerStatus),
});
export type InterfaceStatus = z.infer<typeof InterfaceStatus>;

export const HelperErrorCode = z.enum(['invalid-request', 'too-large', 'os-error', 'not-found', 'busy']);

export const HelperResponse = z.union([
  z.strictObject({ id: RequestId, ok: z.literal(true), status: InterfaceStatus }),
  z.strictObject({
    id: RequestId.nullable(),
    ok: z.literal(false),
    error: z.strictObject({ code: HelperErrorCode, message: z.string() }),
  }),
]);
export type HelperResponse = z.infer<typeof HelperResponse>;
