import type { StreamServerMessage } from '@weft/protocol';

// A stream message's wire form (its JSON, as text or UTF-8 bytes), made once per message object:
// the hub hands the same object to every node that is sent the same bytes (a join reaching every
// node of an allow-all tailnet), and it gives a message its bytes up front when it has the pieces
// already serialised (a whole map is mostly peer views whose JSON the hub keeps), so a transport
// never serialises it again.

const wires = new WeakMap<StreamServerMessage, string | Buffer>();

/** `message` as JSON: the bytes it was given, or JSON.stringify's text (then kept). */
export function wireOf(message: StreamServerMessage): string | Buffer {
  let wire = wires.get(message);
  if (wire === undefined) {
    wire = JSON.stringify(message);
    wires.set(message, wire);
  }
  return wire;
}

/** Gives `message` its JSON as UTF-8 bytes (which must parse to the same value); returns the message. */
export function withWire<M extends StreamServerMessage>(message: M, bytes: Buffer): M {
  wires.set(message, bytes);
  return message;
}
