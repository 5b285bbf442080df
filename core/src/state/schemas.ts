import { Hostname, Key } from '@weft/protocol';
import { z } from 'zod';

// What the engine keeps on disk besides keys. Validated on every read: a hand-edited or
// half-migrated file is refused with a clear message instead of half-working.

/** The user's intent; survives logout. */
export const Prefs = z.strictObject({
  controlUrl: z.string().url().nullable(),
  hostname: Hostname.nullable(),
  wantRunning: z.boolean(),
  /** The WireGuard UDP port, chosen once so peers' cached endpoints stay valid across restarts. */
  listenPort: z.number().int().min(1).max(65535),
});
export type Prefs = z.infer<typeof Prefs>;

/** Which node key control has authorized, and where; absent means NeedsLogin. */
export const Login = z.strictObject({
  controlUrl: z.string().url(),
  nodePublicKey: Key,
  /** When control accepted this node key (a sign-in, a pre-auth key, or a rotation): its age. */
  authorizedAt: z.iso.datetime({ offset: true }),
});
export type Login = z.infer<typeof Login>;

export const LISTEN_PORT_MIN = 40000;
export const LISTEN_PORT_MAX = 60000;
