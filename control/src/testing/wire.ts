import type { StreamServerMessage } from '@weft/protocol';
import { type Wire, wireOf } from '../netmap/message-text.js';

/** `wire` as the text a transport writes, its parts joined. */
export function frameText(wire: Wire): string {
  return typeof wire === 'string' || Buffer.isBuffer(wire) ? wire.toString() : Buffer.concat(wire).toString();
}

/** `message`'s JSON as a transport writes it (tests compare it with JSON.stringify's). */
export function wireText(message: StreamServerMessage): string {
  return frameText(wireOf(message));
}
