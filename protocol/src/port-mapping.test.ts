import { describe, expect, it } from 'vitest';
import { parseAddr } from './ip.js';
import {
  decodeNatPmpAddressAnswer,
  decodeNatPmpMapAnswer,
  decodePcpMapAnswer,
  decodePortMappingRequest,
  encodeNatPmpAddressAnswer,
  encodeNatPmpAddressRequest,
  encodeNatPmpMapAnswer,
  encodeNatPmpMapRequest,
  encodePcpMapAnswer,
  encodePcpMapRequest,
  isNatPmpUnsupportedVersion,
} from './port-mapping.js';

const external = parseAddr('203.0.113.7') ?? { family: 4 as const, value: 0n };
const client = parseAddr('198.51.100.20') ?? { family: 4 as const, value: 0n };
const nonce = new Uint8Array(12).map((_, i) => i + 1);
const mapAnswer = { result: 0, epoch: 42, internalPort: 41641, externalPort: 50000, lifetime: 3600 };

const edit = (msg: Uint8Array, at: number, value: number) => {
  const out = msg.slice();
  out[at] = value;
  return out;
};
const grow = (msg: Uint8Array) => Uint8Array.from([...msg, 0]);

describe('NAT-PMP', () => {
  it('decodes the answers a gateway sends, with the RFC 6886 layout', () => {
    const address = encodeNatPmpAddressAnswer({ result: 0, epoch: 42 }, external);
    expect([...address]).toEqual([0, 128, 0, 0, 0, 0, 0, 42, 203, 0, 113, 7]);
    expect(decodeNatPmpAddressAnswer(address)).toEqual({
      result: 0,
      epoch: 42,
      externalAddress: '203.0.113.7',
    });
    expect(decodeNatPmpMapAnswer(encodeNatPmpMapAnswer(mapAnswer))).toEqual(mapAnswer);
  });

  it('encodes requests as a gateway decodes them', () => {
    expect([...encodeNatPmpAddressRequest()]).toEqual([0, 0]);
    expect([...encodeNatPmpMapRequest(41641, 50000, 7200)]).toEqual([
      0, 1, 0, 0, 0xa2, 0xa9, 0xc3, 0x50, 0, 0, 0x1c, 0x20,
    ]);
    expect(decodePortMappingRequest(encodeNatPmpMapRequest(41641, 0, 0))).toEqual({
      protocol: 'nat-pmp',
      op: 'map',
      internalPort: 41641,
      suggestedExternalPort: 0,
      lifetime: 0,
    });
  });

  it('ignores short, oversized, wrong-version and wrong-opcode answers', () => {
    const address = encodeNatPmpAddressAnswer({ result: 0, epoch: 1 }, external);
    const map = encodeNatPmpMapAnswer(mapAnswer);
    for (const bad of [
      address.subarray(0, 11),
      grow(address),
      edit(address, 0, 2),
      edit(address, 1, 129),
      new Uint8Array(),
    ])
      expect(decodeNatPmpAddressAnswer(bad)).toBeNull();
    for (const bad of [map.subarray(0, 15), grow(map), edit(map, 0, 2), edit(map, 1, 128), address])
      expect(decodeNatPmpMapAnswer(bad)).toBeNull();
  });
});

describe('PCP MAP', () => {
  const request = {
    clientAddress: client,
    nonce,
    internalPort: 41641,
    suggestedExternalPort: 0,
    lifetime: 7200,
  };

  it('round-trips a request, with the client address IPv4-mapped', () => {
    const msg = encodePcpMapRequest(request);
    expect(msg.length).toBe(60);
    expect([...msg.subarray(8, 24)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 20]);
    expect(decodePortMappingRequest(msg)).toEqual({ protocol: 'pcp', op: 'map', ...request });
  });

  it('decodes the answer to our nonce', () => {
    const answer = encodePcpMapAnswer(mapAnswer, nonce, external);
    expect(decodePcpMapAnswer(answer, nonce)).toEqual({ ...mapAnswer, externalAddress: '203.0.113.7' });
    const v6 = parseAddr('fd00::7') ?? external;
    expect(decodePcpMapAnswer(encodePcpMapAnswer(mapAnswer, nonce, v6), nonce)?.externalAddress).toBe(
      'fd00::7',
    );
  });

  it('ignores short, oversized, wrong-version, wrong-opcode, wrong-protocol and wrong-nonce answers', () => {
    const good = encodePcpMapAnswer(mapAnswer, nonce, external);
    const bad = [
      good.subarray(0, 59),
      grow(good),
      edit(good, 0, 1),
      edit(good, 1, 0x81 + 1),
      edit(good, 1, 1), // a request, not an answer
      edit(good, 36, 6), // TCP
      edit(good, 30, good[30]! ^ 1), // nonce
      encodePcpMapRequest(request),
    ];
    for (const msg of bad) expect(decodePcpMapAnswer(msg, nonce)).toBeNull();
  });

  it('recognises a NAT-PMP gateway refusing PCP', () => {
    expect(isNatPmpUnsupportedVersion(new Uint8Array([0, 129, 0, 1, 0, 0, 0, 0]))).toBe(true);
    expect(isNatPmpUnsupportedVersion(encodeNatPmpMapAnswer(mapAnswer))).toBe(false);
    expect(isNatPmpUnsupportedVersion(new Uint8Array([0, 129, 0]))).toBe(false);
  });

  it('refuses a nonce of another length', () => {
    expect(() => encodePcpMapRequest({ ...request, nonce: new Uint8Array(11) })).toThrow(/12 bytes/);
  });
});

describe('requests a gateway receives', () => {
  it('refuses malformed ones', () => {
    const pcp = encodePcpMapRequest({
      clientAddress: client,
      nonce,
      internalPort: 1,
      suggestedExternalPort: 0,
      lifetime: 1,
    });
    for (const bad of [
      new Uint8Array([0]),
      new Uint8Array([0, 2]),
      grow(encodeNatPmpAddressRequest()),
      pcp.subarray(0, 59),
      edit(pcp, 1, 2),
      edit(pcp, 36, 6),
      edit(encodeNatPmpMapRequest(1, 1, 1), 2, 1),
    ])
      expect(decodePortMappingRequest(bad)).toBeNull();
  });
});
