import {
  type NodeView,
  nodeKeyPossessionProof,
  nodeKeyRotationProof,
  type RegisterRequest,
} from '@weft/protocol';
import { WeftError } from '../errors.js';
import type { ControlClient } from './client.js';

// Node key rotation: the node moves to a new WireGuard key without a sign-in by proving it holds
// the old one (protocol/src/control-api.ts, nodeKeyRotationProof). Control keeps the node's name,
// addresses and key expiry, and tells the peers the new key as a change.

/** How often the engine rotates its node key unless configured otherwise. */
export const DEFAULT_KEY_ROTATION_MS = 30 * 86_400_000;

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export interface RotationArgs {
  oldKey: KeyPair;
  newKey: KeyPair;
  /** This machine's public key (the proof is bound to it). */
  machineKey: string;
  hostname: string;
  os: string;
}

/** The registration that moves this node from `oldKey` to `newKey`. */
export function rotationRequest(args: RotationArgs & { controlPublicKey: string }): RegisterRequest {
  return {
    nodeKey: args.newKey.publicKey,
    hostname: args.hostname,
    os: args.os,
    nodeKeyProof: nodeKeyPossessionProof({
      nodePrivateKey: args.newKey.privateKey,
      controlPublicKey: args.controlPublicKey,
      machineKey: args.machineKey,
    }),
    oldNodeKey: args.oldKey.publicKey,
    oldNodeKeyProof: nodeKeyRotationProof({
      oldNodePrivateKey: args.oldKey.privateKey,
      controlPublicKey: args.controlPublicKey,
      machineKey: args.machineKey,
      newNodeKey: args.newKey.publicKey,
    }),
  };
}

/**
 * Asks control to move this node to `newKey`; resolves with the node as control now sees it.
 * Sending it again after a lost answer is safe: control then already knows the new key.
 * Refusals (403 bad-node-key-proof, 409 old-node-key-mismatch) reject with control's message.
 */
export async function rotateNodeKey(client: ControlClient, args: RotationArgs): Promise<NodeView> {
  const controlPublicKey = await client.controlKey();
  const res = await client.register(rotationRequest({ ...args, controlPublicKey }));
  if (res.status !== 'authorized') {
    // Control only answers so when the old key no longer counts (expired): a sign-in is needed.
    throw new WeftError('control-rejected', 'control wants a new sign-in instead of a key rotation');
  }
  if (res.node.nodeKey !== args.newKey.publicKey) {
    throw new WeftError('control-error', 'control answered the key rotation with another node key');
  }
  return res.node;
}
