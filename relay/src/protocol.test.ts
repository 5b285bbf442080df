import {
  decodeRelayData,
  encodeRelayData,
  generateKeyPair,
  newRelayChallenge,
  parseRelayControl,
  RELAY_MAX_FRAME_BYTES,
  RELAY_MAX_PACKET_BYTES,
  RelayClientMessage,
  RelayFrameType,
  readdressRelayData,
  relayAuthProof,
  verifyRelayAuthProof,
} from '@weft/protocol';
import { describe, expect, it } from 'vitest';

// The shared relay codec and auth computation in protocol/src/relay.ts.

const keyBytes = (k: string) => new Uint8Array(Buffer.from(k, 'base64'));

describe('relay data frames', () => {
  const dst = keyBytes(generateKeyPair().publicKey);
  const src = keyBytes(generateKeyPair().publicKey);

  it('round-trip and readdress in place without copying the packet', () => {
    const packet = Uint8Array.from([4, 0, 0, 0, 9, 9, 9]);
    const frame = encodeRelayData(RelayFrameType.send, dst, packet);
    const decoded = decodeRelayData(frame);
    expect(decoded?.type).toBe(RelayFrameType.send);
    expect(decoded?.key).toEqual(dst);
    expect(decoded?.packet).toEqual(packet);
    readdressRelayData(frame, RelayFrameType.recv, src);
    const again = decodeRelayData(frame);
    expect(again?.type).toBe(RelayFrameType.recv);
    expect(again?.key).toEqual(src);
    expect(again?.packet.buffer).toBe(frame.buffer);
  });

  it('refuses short, oversized and unknown-type frames', () => {
    expect(decodeRelayData(new Uint8Array(32))).toBeNull();
    expect(decodeRelayData(new Uint8Array(RELAY_MAX_FRAME_BYTES + 1).fill(1))).toBeNull();
    const frame = encodeRelayData(RelayFrameType.send, dst, new Uint8Array(1));
    frame[0] = 7;
    expect(decodeRelayData(frame)).toBeNull();
    expect(decodeRelayData(encodeRelayData(RelayFrameType.send, dst, new Uint8Array(0)))?.packet.length).toBe(
      0,
    );
    expect(() =>
      encodeRelayData(RelayFrameType.send, dst, new Uint8Array(RELAY_MAX_PACKET_BYTES + 1)),
    ).toThrow();
    expect(() => encodeRelayData(RelayFrameType.send, dst.subarray(1), new Uint8Array(1))).toThrow();
  });
});

describe('relay control messages', () => {
  it('parse strictly', () => {
    expect(parseRelayControl(RelayClientMessage, '{"type":"endpointRequest"}')).toEqual({
      type: 'endpointRequest',
    });
    expect(parseRelayControl(RelayClientMessage, '{"type":"endpointRequest","x":1}')).toBeNull();
    expect(parseRelayControl(RelayClientMessage, '{"type":"auth","nodeKey":"x","proof":"y"}')).toBeNull();
    expect(parseRelayControl(RelayClientMessage, 'not json')).toBeNull();
  });
});

describe('relay auth proof', () => {
  const relay = generateKeyPair();
  const node = generateKeyPair();
  const challenge = newRelayChallenge();
  const proof = relayAuthProof({
    nodePrivateKey: node.privateKey,
    nodeKey: node.publicKey,
    relayKey: relay.publicKey,
    challenge,
  });
  const verify = (
    over: Partial<{ nodeKey: string; challenge: string; proof: string; relayPrivateKey: string }>,
  ) =>
    verifyRelayAuthProof({
      relayPrivateKey: relay.privateKey,
      relayKey: relay.publicKey,
      nodeKey: node.publicKey,
      challenge,
      proof,
      ...over,
    });

  it('proves possession of the node key to this relay, for this challenge', () => {
    expect(verify({})).toBe(true);
    expect(verify({ challenge: newRelayChallenge() })).toBe(false);
    expect(verify({ nodeKey: generateKeyPair().publicKey })).toBe(false);
    expect(verify({ relayPrivateKey: generateKeyPair().privateKey })).toBe(false);
    expect(verify({ proof: newRelayChallenge() })).toBe(false);
    // A low-order public key would make the shared secret known to everyone: refused.
    expect(verify({ nodeKey: Buffer.alloc(32).toString('base64') })).toBe(false);
  });

  it('cannot be made for another key without its private key', () => {
    const attacker = generateKeyPair();
    const forged = relayAuthProof({
      nodePrivateKey: attacker.privateKey,
      nodeKey: node.publicKey,
      relayKey: relay.publicKey,
      challenge,
    });
    expect(verify({ proof: forged })).toBe(false);
  });
});
