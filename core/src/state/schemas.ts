import { Key } from '@weft/protocol';
import { z } from 'zod';

// What the engine keeps on disk besides keys and prefs (protocol's Prefs). Validated on every read:
// a hand-edited or half-migrated file is refused with a clear message instead of half-working.

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

/** Control's public key as first seen at a control URL: a different one later is refused. */
export const ControlKeyPin = z.strictObject({
  controlUrl: z.string().url(),
  publicKey: Key,
  pinnedAt: z.iso.datetime({ offset: true }),
});
export type ControlKeyPin = z.infer<typeof ControlKeyPin>;
