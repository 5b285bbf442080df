import type { StreamServerMessage } from '@weft/protocol';

// The JSON text of a stream message, made once per message object: the hub hands the same object
// to every node that is sent the same bytes (a join reaching every node of an allow-all tailnet),
// and it may give a message its text up front when it has the pieces already serialised (a whole
// map is mostly peer views whose JSON the hub keeps), so a transport never serialises it again.

const texts = new WeakMap<StreamServerMessage, string>();

/** `message` as JSON: the text it was given, or JSON.stringify's (then kept). */
export function messageText(message: StreamServerMessage): string {
  let text = texts.get(message);
  if (text === undefined) {
    text = JSON.stringify(message);
    texts.set(message, text);
  }
  return text;
}

/** Gives `message` its JSON text (which must parse to the same value); returns the message. */
export function withText<M extends StreamServerMessage>(message: M, text: string): M {
  texts.set(message, text);
  return message;
}
