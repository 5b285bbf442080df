import { openCallMeMaybe, sealCallMeMaybe } from '@weft/protocol';
import type { Logger } from '../log/logger.js';

// This node's end of "call me maybe" (protocol/src/call-me-maybe.ts): seals the asks it sends to
// peers over the relay, and opens the ones peers send, remembering the last counter accepted from
// each so a replayed ask is refused.

export interface CallMeMaybeChannelOptions {
  nodePrivateKey: string;
  nodeKey: string;
  /** Sends a packet to a node key over the relay; false when it was dropped. */
  send: (destination: Uint8Array, packet: Uint8Array) => boolean;
  log: Logger;
  /** Wall clock in ms (the counter is checked against the peer's clock). */
  now?: () => number;
}

export class CallMeMaybeChannel {
  private lastSent = 0;
  private readonly lastAccepted = new Map<string, number>();

  constructor(private readonly opts: CallMeMaybeChannelOptions) {}

  /** Asks `peerKey` to try `candidates` (ours) now; false when the relay dropped it. */
  ask(peerKey: string, candidates: string[]): boolean {
    const now = this.opts.now?.() ?? Date.now();
    // Strictly increasing even when the clock steps back or two asks share a millisecond.
    this.lastSent = Math.max(now, this.lastSent + 1);
    const packet = sealCallMeMaybe(
      { type: 'callMeMaybe', from: this.opts.nodeKey, to: peerKey, counter: this.lastSent, candidates },
      this.opts.nodePrivateKey,
    );
    return this.opts.send(new Uint8Array(Buffer.from(peerKey, 'base64')), packet);
  }

  /** The candidates of a valid ask from `source`; null (and a log line) for anything else. */
  receive(source: string, packet: Uint8Array): string[] | null {
    const opened = openCallMeMaybe({
      packet,
      source,
      nodeKey: this.opts.nodeKey,
      nodePrivateKey: this.opts.nodePrivateKey,
      lastCounter: this.lastAccepted.get(source) ?? 0,
      now: this.opts.now?.() ?? Date.now(),
    });
    if (!opened.ok) {
      this.opts.log.debug(`call-me-maybe from ${source.slice(0, 8)} refused: ${opened.error}`);
      return null;
    }
    this.lastAccepted.set(source, opened.msg.counter);
    return opened.msg.candidates;
  }
}
