import { EventEmitter } from 'node:events';
import type http2 from 'node:http2';
import { x25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import { MapReader, publicOf } from './tailscale-client.js';

// The test client's own bookkeeping, which load benchmarks lean on: a key's public half is made
// once, and map frames are read whole however the stream cuts them.

const frame = (m: unknown) => {
  const json = Buffer.from(JSON.stringify(m));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);
  return Buffer.concat([length, json]);
};

describe('tailscale test client', () => {
  it('makes a private key’s public half once', () => {
    const key = x25519.utils.randomSecretKey();
    const first = publicOf(key);
    expect(Buffer.from(first)).toEqual(Buffer.from(x25519.getPublicKey(key)));
    expect(publicOf(key)).toBe(first);
  });

  it('reads frames cut into many chunks and several frames in one chunk', () => {
    const stream = new EventEmitter();
    const reader = new MapReader(stream as unknown as http2.ClientHttp2Stream, (b) => b);
    let changes = 0;
    reader.onChange = () => changes++;
    const peers = Array.from({ length: 300 }, (_, i) => ({ ID: i + 2, Name: `n${i}.x.` }));
    const whole = frame({ Node: { ID: 1 }, Peers: peers });
    // One byte, then the rest of the length prefix and 1 KB pieces of the body.
    const cuts = [
      1,
      4,
      ...Array.from({ length: Math.ceil(whole.length / 1024) }, (_, i) => 4 + (i + 1) * 1024),
    ];
    let at = 0;
    for (const cut of cuts) {
      stream.emit('data', whole.subarray(at, Math.min(cut, whole.length)));
      at = Math.min(cut, whole.length);
    }
    expect(reader.peers.size).toBe(300);
    expect(changes).toBe(1);
    const tail = frame({ PeersRemoved: [2] });
    stream.emit(
      'data',
      Buffer.concat([
        frame({ KeepAlive: true }),
        frame({ PeersChanged: [{ ID: 999, Name: 'new.x.' }] }),
        tail.subarray(0, 3),
      ]),
    );
    expect(reader.peers.has(999)).toBe(true);
    expect(reader.keepAlives).toBe(1);
    stream.emit('data', tail.subarray(3));
    expect(reader.peers.has(2)).toBe(false);
    expect(changes).toBe(3);
  });
});
