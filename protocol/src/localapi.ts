import { z } from 'zod';
import { Hostname } from './primitives.js';

// The engine's LocalAPI (HTTP over a unix socket), used by the `weft` CLI and the desktop app.

export const BackendState = z.enum(['NeedsLogin', 'Starting', 'Running', 'Stopped']);
export type BackendState = z.infer<typeof BackendState>;

export const PeerStatus = z.strictObject({
  id: z.string(),
  name: z.string(),
  user: z.string().nullable(),
  tags: z.array(z.string()),
  os: z.string(),
  addresses: z.array(z.string()),
  online: z.boolean(),
  lastSeen: z.string().nullable(),
  /** The WireGuard endpoint currently in use, as the interface reports it. */
  endpoint: z.string().nullable(),
  /** ISO time of the last WireGuard handshake, null if none yet. */
  lastHandshake: z.string().nullable(),
  rxBytes: z.number().int(),
  txBytes: z.number().int(),
});
export type PeerStatus = z.infer<typeof PeerStatus>;

export const Status = z.strictObject({
  backendState: BackendState,
  controlUrl: z.string().nullable(),
  /** Set while waiting for an interactive login. */
  authUrl: z.string().nullable(),
  /** When `authUrl` stops working (ISO time), if control said; absent from older engines. */
  authUrlExpiresAt: z.string().nullable().optional(),
  self: z
    .strictObject({
      id: z.string(),
      name: z.string(),
      addresses: z.array(z.string()),
      /**
       * When this node's key expires (ISO time) and it must sign in again; null when expiry is
       * disabled. Absent from older engines. Automatic rotation keeps this deadline.
       */
      keyExpiry: z.string().nullable().optional(),
      /** This node's OS as control knows it (linux, darwin, win32, …). Absent from older engines. */
      os: z.string().optional(),
    })
    .nullable(),
  peers: z.array(PeerStatus),
  /** Human-readable problems (control unreachable, helper down, …); empty when healthy. */
  health: z.array(z.string()),
  /**
   * Who this node is signed in as; null for a tagged node or when logged out. Control sends only
   * the login name so far, so displayName is the login name too. Absent from older engines.
   */
  user: z.strictObject({ loginName: z.string(), displayName: z.string() }).nullable().optional(),
});
export type Status = z.infer<typeof Status>;

export const UpRequest = z.strictObject({
  controlUrl: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL'),
  authKey: z.string().min(1).max(256).optional(),
  hostname: Hostname.optional(),
});
export type UpRequest = z.infer<typeof UpRequest>;

export const LOCALAPI_PREFIX = '/localapi/v0';

/**
 * One line of `GET LOCALAPI_PREFIX/watch` (newline-delimited JSON): the whole status, first with
 * `initial: true`, then again whenever the engine's state changes. Byte counters are as of that
 * moment; poll `/status` for live ones.
 */
export const WatchEvent = z.strictObject({ initial: z.boolean(), status: Status });
export type WatchEvent = z.infer<typeof WatchEvent>;
