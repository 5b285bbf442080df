import {
  type RegisterRequest,
  verifyNodeKeyPossessionProof,
  verifyNodeKeyRotationProof,
} from '@weft/protocol';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';
import { isExpired, type NodeRecord, type PreauthKeyRecord } from '../tailnet/records.js';
import { type AuthorizeDeps, authorizeNode, refuseForeignNodeKey } from './authorize-node.js';
import { hashPreauthKey } from './preauth-keys.js';

// Machine registration: a machine that proved its machine key (see machine.ts) and its node key
// (nodeKeyProof, checked before anything else) asks to join. It is
// authorized by a pre-auth key, by being registered already with this node key, by proving the
// node key it had (key rotation), or by a person signing in through an InteractiveLogin, which
// answers with the URL to open.

export type RegistrationResult =
  | { status: 'authorized'; nodeId: string }
  | { status: 'needs-auth'; authUrl: string; expiresAt: string };

/** What any caller (a Weft node, a protocol adapter) says when it asks for a browser sign-in. */
export interface LoginRequest {
  machineKey: string;
  /** The only node key the login can authorize. */
  nodeKey: string;
  /** Device name and OS, shown to the person on the confirmation page. */
  hostname: string;
  os: string;
  /** The address the request came from: shown on the confirmation page, counted against a cap. */
  source: string;
}

/** Browser sign-in for a machine; plugged in when control has an identity provider configured. */
export interface InteractiveLogin {
  /** The machine's pending sign-in for this node key, started now if it has none; the URL to open. */
  begin(req: LoginRequest): Promise<{ authUrl: string; expiresAt: string }>;
  /** Holds the request until the sign-in completes, fails, or a while passes (`needs-auth` again). */
  wait(req: LoginRequest): Promise<RegistrationResult>;
}

/** Who asked: the machine key that signed the request and the address it came from. */
export interface RegistrationCaller {
  machineKey: string;
  source: string;
}

export interface RegistrationDeps extends AuthorizeDeps {
  store: Store;
  interactive: InteractiveLogin | null;
  /** Control's private key: rotation proofs are keyed with its shared secret with the old node key. */
  controlPrivateKey: string;
}

export interface RegistrationOptions {
  /**
   * The request comes from a Tailscale client: it cannot prove its node key the way Weft nodes do,
   * so the node key (and an OldNodeKey rotation) is taken on the word of the machine key that the
   * ts2021 handshake proved, as Tailscale's own control and Headscale take it.
   */
  machineKeyOnly?: boolean;
}

/** A registration whose node key is taken on the machine key's word (see `machineKeyOnly`). */
export type UnprovenRegisterRequest = Omit<RegisterRequest, 'nodeKeyProof' | 'oldNodeKeyProof'>;
/** Either kind, once past the entry point. */
type AnyRegisterRequest = UnprovenRegisterRequest &
  Partial<Pick<RegisterRequest, 'nodeKeyProof' | 'oldNodeKeyProof'>>;

export async function registerMachine(
  deps: RegistrationDeps,
  caller: RegistrationCaller,
  request: RegisterRequest,
  options?: { machineKeyOnly?: false },
): Promise<RegistrationResult>;
export async function registerMachine(
  deps: RegistrationDeps,
  caller: RegistrationCaller,
  request: UnprovenRegisterRequest,
  options: { machineKeyOnly: true },
): Promise<RegistrationResult>;
export async function registerMachine(
  deps: RegistrationDeps,
  caller: RegistrationCaller,
  request: AnyRegisterRequest,
  options: RegistrationOptions = {},
): Promise<RegistrationResult> {
  const { machineKey } = caller;
  const possessed =
    options.machineKeyOnly === true ||
    (request.nodeKeyProof !== undefined &&
      verifyNodeKeyPossessionProof({
        controlPrivateKey: deps.controlPrivateKey,
        nodeKey: request.nodeKey,
        machineKey,
        proof: request.nodeKeyProof,
      }));
  if (!possessed) {
    throw new ApiError(
      403,
      'bad-node-key-proof',
      'nodeKeyProof does not prove possession of nodeKey for this machine: nothing was registered',
    );
  }
  const { authKey } = request;
  if (authKey !== undefined) {
    const nodeId = await retryConflicts(() =>
      deps.store.transaction((tx) => registerWithKey({ ...deps, store: tx }, machineKey, request, authKey)),
    );
    return { status: 'authorized', nodeId };
  }

  const existing = await deps.store.nodeByMachineKey(machineKey);
  await refuseForeignNodeKey(deps.store, request.nodeKey, existing?.id);
  if (existing && !isExpired(existing, deps.now())) {
    if (existing.nodeKey === request.nodeKey) {
      // A known machine coming back with its key (a restart, a retry after a lost reply).
      await deps.store.updateNode(existing.id, refreshedFields(request));
      return { status: 'authorized', nodeId: existing.id };
    }
    if (request.oldNodeKey !== undefined) {
      return rotateNodeKey(deps, existing, machineKey, request, request.oldNodeKey, options);
    }
  }
  return interactiveLogin(deps, caller, request, existing);
}

/** Key rotation authorized by the still-valid old key: same node, name, addresses and expiry. */
async function rotateNodeKey(
  deps: RegistrationDeps,
  node: NodeRecord,
  machineKey: string,
  request: AnyRegisterRequest,
  oldNodeKey: string,
  options: RegistrationOptions,
): Promise<RegistrationResult> {
  if (node.nodeKey !== oldNodeKey) {
    throw new ApiError(
      409,
      'old-node-key-mismatch',
      'oldNodeKey is not this node’s current key: rotate from the key control knows, or log in again',
    );
  }
  const proven =
    options.machineKeyOnly === true ||
    (request.oldNodeKeyProof !== undefined &&
      verifyNodeKeyRotationProof({
        controlPrivateKey: deps.controlPrivateKey,
        oldNodeKey,
        machineKey,
        newNodeKey: request.nodeKey,
        proof: request.oldNodeKeyProof,
      }));
  if (!proven) {
    throw new ApiError(403, 'bad-node-key-proof', 'the proof of the old node key is missing or wrong');
  }
  await deps.store.updateNode(node.id, refreshedFields(request));
  return { status: 'authorized', nodeId: node.id };
}

async function interactiveLogin(
  deps: RegistrationDeps,
  caller: RegistrationCaller,
  request: AnyRegisterRequest,
  existing: NodeRecord | undefined,
): Promise<RegistrationResult> {
  if (deps.interactive === null) {
    const why =
      existing === undefined
        ? 'this control server has no interactive login configured'
        : isExpired(existing, deps.now())
          ? 'this node’s key has expired and this control server has no interactive login configured'
          : 'this machine is registered with another node key (send oldNodeKey with its proof to rotate)';
    throw new ApiError(
      403,
      'interactive-login-unavailable',
      `${why}: register with a pre-auth key (weft up --authkey KEY)`,
    );
  }
  const args: LoginRequest = {
    ...caller,
    nodeKey: request.nodeKey,
    hostname: request.hostname,
    os: request.os,
  };
  if (request.wait === true) return deps.interactive.wait(args);
  return { status: 'needs-auth', ...(await deps.interactive.begin(args)) };
}

function refreshedFields(request: AnyRegisterRequest) {
  return { nodeKey: request.nodeKey, hostname: request.hostname, os: request.os };
}

async function registerWithKey(
  deps: RegistrationDeps,
  machineKey: string,
  request: AnyRegisterRequest,
  authKey: string,
): Promise<string> {
  const { store } = deps;
  const now = deps.now();
  const key = await store.preauthKeyByHash(hashPreauthKey(authKey));
  if (key === undefined) throw new ApiError(401, 'invalid-auth-key', 'unknown pre-auth key');
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= now.getTime()) {
    throw new ApiError(403, 'auth-key-expired', `this pre-auth key expired at ${key.expiresAt}`);
  }

  const existing = await store.nodeByMachineKey(machineKey);
  await refuseForeignNodeKey(store, request.nodeKey, existing?.id);
  if (existing && existing.preauthKeyId === key.id && !isExpired(existing, now)) {
    // The same machine presenting the key that registered it (e.g. a retry after a lost reply): not
    // a new use, so even a single-use key is fine here.
    await store.updateNode(existing.id, refreshedFields(request));
    return existing.id;
  }
  if (!(await store.consumePreauthKey(key.id))) {
    throw new ApiError(403, 'auth-key-used', 'this single-use pre-auth key has already been used');
  }
  return authorizeNode(store, deps, {
    machineKey,
    nodeKey: request.nodeKey,
    hostname: request.hostname,
    os: request.os,
    ...ownership(key),
    preauthKeyId: key.id,
    ephemeral: key.ephemeral,
  });
}

/** Tagged keys make tagged nodes, owned by their tags rather than by the key's user. */
function ownership(key: PreauthKeyRecord): { userId: string | null; tags: string[] } {
  return key.tags.length > 0 ? { userId: null, tags: key.tags } : { userId: key.userId, tags: [] };
}
