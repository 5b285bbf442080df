import { DerpFrameType } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { DerpFrameError, DerpFrameReader, encodeDerpFrame } from './frames.js';

describe('DERP frames', () => {
  it('encodes type, big-endian length and payload', () => {
    const f = encodeDerpFrame(DerpFrameType.ping, Buffer.from('12345678'));
    expect([...f.subarray(0, 5)]).toEqual([0x12, 0, 0, 0, 8]);
    expect(f.subarray(5).toString()).toBe('12345678');
  });

  it('reads frames split anywhere, byte by byte, and several in one chunk', () => {
    const frames = [
      encodeDerpFrame(DerpFrameType.sendPacket, new Uint8Array(32).fill(7), Buffer.from('hello')),
      encodeDerpFrame(DerpFrameType.keepAlive),
      encodeDerpFrame(DerpFrameType.notePreferred, Uint8Array.of(1)),
    ];
    const stream = Buffer.concat(frames);
    const bySplit = (size: number) => {
      const reader = new DerpFrameReader(() => 1024);
      const got: string[] = [];
      for (let at = 0; at < stream.length; at += size) {
        reader.push(stream.subarray(at, at + size));
        for (let f = reader.next(); f !== null; f = reader.next())
          got.push(`${f.type}:${f.payload.toString('hex')}`);
      }
      return got;
    };
    const expected = frames.map((f) => `${f[0]}:${f.subarray(5).toString('hex')}`);
    for (const size of [1, 2, 5, 7, 40, stream.length]) expect(bySplit(size)).toEqual(expected);
  });

  it('gives the whole frame as a view, so a packet can be readdressed in place', () => {
    const reader = new DerpFrameReader(() => 1024);
    const chunk = encodeDerpFrame(DerpFrameType.sendPacket, new Uint8Array(32), Buffer.from('x'));
    reader.push(chunk);
    const f = reader.next();
    expect(f?.frame.buffer).toBe(chunk.buffer);
    expect(f?.frame.length).toBe(chunk.length);
    // A frame cut across two reads is copied, and only it: the next frame is read in place.
    const two = Buffer.concat([
      chunk,
      encodeDerpFrame(DerpFrameType.sendPacket, new Uint8Array(32), Buffer.from('y')),
    ]);
    // Its own ArrayBuffer (not the pool), so a copy could not share it.
    const second = Buffer.alloc(two.length - 10);
    two.copy(second, 0, 10);
    reader.push(two.subarray(0, 10));
    reader.push(second);
    expect(reader.next()?.payload.subarray(32).toString()).toBe('x');
    const g = reader.next();
    expect(g?.payload.subarray(32).toString()).toBe('y');
    expect(g?.frame.buffer).toBe(second.buffer);
    expect(reader.next()).toBeNull();
  });

  it('refuses a header over the limit before buffering its payload, with the limit in force for that frame', () => {
    let limit = 100;
    const reader = new DerpFrameReader(() => limit);
    reader.push(
      Buffer.concat([
        encodeDerpFrame(DerpFrameType.clientInfo, new Uint8Array(90)),
        Buffer.from([4, 0, 0, 0, 95]),
      ]),
    );
    expect(reader.next()?.payload.length).toBe(90);
    limit = 64;
    expect(() => reader.next()).toThrow(DerpFrameError);
    const huge = new DerpFrameReader(() => 65_568);
    huge.push(Buffer.from([4, 0xff, 0xff, 0xff, 0xff]));
    expect(() => huge.next()).toThrow(/over the limit/);
  });
});
