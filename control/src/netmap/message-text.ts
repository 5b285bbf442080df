import type { StreamServerMessage } from '@weft/protocol';

// A stream message's wire form (its JSON, as text or UTF-8 bytes), made once per message object:
// the hub hands the same object to every node that is sent the same bytes (a join reaching every
// node of an allow-all tailnet), and it gives a message its bytes up front when it has the pieces
// already serialised (a whole map is mostly peer views whose JSON the hub keeps), so a transport
// never serialises it again. Bytes may come in parts, written in order as one message: a whole map
// to a member of a class is mostly its class's peers' bytes, shared by every member, not copied.

/** A message's JSON: text, UTF-8 bytes, or UTF-8 bytes in parts that make it in order. */
export type Wire = string | Buffer | readonly Buffer[];

const wires = new WeakMap<StreamServerMessage, Wire>();

/** `message` as JSON: the bytes it was given, or JSON.stringify's text (then kept). */
export function wireOf(message: StreamServerMessage): Wire {
  let wire = wires.get(message);
  if (wire === undefined) {
    wire = JSON.stringify(message);
    wires.set(message, wire);
  }
  return wire;
}

/** Gives `message` its JSON as UTF-8 bytes (which must parse to the same value); returns the message. */
export function withWire<M extends StreamServerMessage>(message: M, bytes: Buffer | readonly Buffer[]): M {
  wires.set(message, bytes);
  return message;
}

/** The bytes `wire` takes. */
export function wireLength(wire: Wire): number {
  if (typeof wire === 'string' || Buffer.isBuffer(wire)) return Buffer.byteLength(wire);
  let bytes = 0;
  for (const part of wire) bytes += part.length;
  return bytes;
}
