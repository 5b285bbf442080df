import { Key, MapToken, NetMap } from '@weft/protocol';
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

/**
 * netmap.json: the last netmap and the token control gave for its peers (see MapToken), one record
 * written atomically, so the token on disk always names the peers beside it and a restarted engine
 * can ask control to resume rather than send a whole map. Tied to the login it came under: a record
 * of another control or node key is not this node's map. `format` changes with the record's shape;
 * a file of another one (the bare NetMap of older versions) is not read.
 */
export const CachedNetmap = z.strictObject({
  format: z.literal(2, { error: 'not a cache of this format (an older or newer weft wrote it)' }),
  controlUrl: z.string().url(),
  nodePublicKey: Key,
  /** Null: the message that made this map carried no token (its peers may differ from control's record). */
  mapToken: MapToken.nullable(),
  netmap: NetMap,
});
export type CachedNetmap = z.infer<typeof CachedNetmap>;
