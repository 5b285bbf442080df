import { z } from 'zod';

// DERP, Tailscale's relay protocol, as weft-relay speaks it to the official Tailscale clients
// (the codec is relay/src/derp/). After an HTTP upgrade at DERP_PATH, both sides exchange frames:
//
//   [type: u8][length: u32 big-endian][payload: length bytes]
//
// Login: relay → ServerKey (magic ‖ relay key); client → ClientInfo (client node key ‖ nonce ‖
// box(JSON DerpClientInfo)); relay → ServerInfo (nonce ‖ box(JSON DerpServerInfo)). `box` is
// NaCl crypto_box (X25519, HSalsa20, XSalsa20-Poly1305) between the two keys, so only the holder
// of the node private key can log in as that key. Then SendPacket (destination ‖ packet) becomes
// RecvPacket (source ‖ packet) at the destination.

export const DERP_PATH = '/derp';
/** The WebSocket subprotocol of DERP over WebSocket (browsers, TS_DEBUG_USE_DERP_HTTP). */
export const DERP_WS_SUBPROTOCOL = 'derp';
/** "DERP🔑", the first 8 bytes of the ServerKey payload. */
export const DERP_MAGIC = new Uint8Array([0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);
export const DERP_PROTOCOL_VERSION = 2;
export const DERP_FRAME_HEADER_BYTES = 5;
export const DERP_KEY_BYTES = 32;
export const DERP_NONCE_BYTES = 24;
export const DERP_MAX_PACKET_BYTES = 64 * 1024;
/** The largest ClientInfo accepted, as Tailscale's server: the client is not trusted yet. */
export const DERP_MAX_CLIENT_INFO_BYTES = 256 * 1024;
/** The request header by which a client asks to skip the HTTP 101 response. */
export const DERP_FAST_START_HEADER = 'derp-fast-start';

export const DerpFrameType = {
  serverKey: 0x01,
  clientInfo: 0x02,
  serverInfo: 0x03,
  sendPacket: 0x04,
  recvPacket: 0x05,
  keepAlive: 0x06,
  notePreferred: 0x07,
  peerGone: 0x08,
  peerPresent: 0x09,
  forwardPacket: 0x0a,
  watchConns: 0x10,
  closePeer: 0x11,
  ping: 0x12,
  pong: 0x13,
  health: 0x14,
  restarting: 0x15,
} as const;
export type DerpFrameType = (typeof DerpFrameType)[keyof typeof DerpFrameType];

export const DerpPeerGoneReason = { disconnected: 0x00, notHere: 0x01 } as const;

/**
 * The client's sealed JSON. Go decodes field names case-insensitively and the clients send
 * `version` and `CanAckPings`; unknown fields are ignored as Go ignores them. A mesh key is
 * accepted but grants nothing: this relay has no mesh.
 */
export const DerpClientInfo = z.looseObject({
  version: z.number().int().min(0).max(1_000).optional(),
  CanAckPings: z.boolean().optional(),
  IsProber: z.boolean().optional(),
  meshKey: z.string().max(128).optional(),
  AppName: z.string().max(256).optional(),
});
export type DerpClientInfo = z.infer<typeof DerpClientInfo>;

/** The relay's sealed JSON: its version and the inbound rate it enforces (clients pace to it). */
export const DerpServerInfo = z.strictObject({
  version: z.number().int(),
  TokenBucketBytesPerSecond: z.number().int().min(0).optional(),
  TokenBucketBytesBurst: z.number().int().min(0).optional(),
});
export type DerpServerInfo = z.infer<typeof DerpServerInfo>;
