import type { RegisterRequest } from '@weft/protocol';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';
import { ipv6For, lowestFreeIPv4 } from '../tailnet/addresses.js';
import { newId } from '../tailnet/ids.js';
import { nameStem, uniqueName } from '../tailnet/names.js';
import { isExpired, type PreauthKeyRecord } from '../tailnet/records.js';
import { hashPreauthKey } from './preauth-keys.js';

// Machine registration: a machine that proved its machine key (see machine.ts) asks to join. It is
// authorized by a pre-auth key, by being already registered, or (later) by a person signing in
// through an InteractiveLogin, which answers with the URL to open.

/** Browser sign-in for a machine; plugged in when control has an identity provider configured. */
export interface InteractiveLogin {
  /** Starts a sign-in that, once completed, authorizes this machine; returns the URL to open. */
  begin(args: { machineKey: string; request: RegisterRequest }): Promise<string>;
}

export interface RegistrationDeps {
  store: Store;
  /** The tailnet's IPv6 /48, from which node IPv6 addresses are derived. */
  ulaPrefix: string;
  interactive: InteractiveLogin | null;
  now: () => Date;
}

export type RegistrationResult =
  | { status: 'authorized'; nodeId: string }
  | { status: 'needs-auth'; authUrl: string };

export async function registerMachine(
  deps: RegistrationDeps,
  machineKey: string,
  request: RegisterRequest,
): Promise<RegistrationResult> {
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
    // A known machine coming back (a restart, a new node key): it proved its machine key, so it
    // keeps its node, name and addresses.
    await deps.store.updateNode(existing.id, refreshedFields(request));
    return { status: 'authorized', nodeId: existing.id };
  }
  if (deps.interactive === null) {
    throw new ApiError(
      403,
      'interactive-login-unavailable',
      'this control server has no interactive login configured: register with a pre-auth key (weft up --authkey KEY)',
    );
  }
  return { status: 'needs-auth', authUrl: await deps.interactive.begin({ machineKey, request }) };
}

function refreshedFields(request: RegisterRequest) {
  return { nodeKey: request.nodeKey, hostname: request.hostname, os: request.os };
}

async function registerWithKey(
  deps: RegistrationDeps,
  machineKey: string,
  request: RegisterRequest,
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
  if (existing && existing.preauthKeyId === key.id) {
    // The same machine presenting the key that registered it (e.g. a retry after a lost reply): not
    // a new use, so even a single-use key is fine here.
    await store.updateNode(existing.id, refreshedFields(request));
    return existing.id;
  }
  if (!(await store.consumePreauthKey(key.id))) {
    throw new ApiError(403, 'auth-key-used', 'this single-use pre-auth key has already been used');
  }

  const fromKey = { ...ownership(key), preauthKeyId: key.id, ephemeral: key.ephemeral };
  if (existing) {
    await store.updateNode(existing.id, { ...refreshedFields(request), ...fromKey });
    return existing.id;
  }

  const name = uniqueName(
    request.hostname,
    await store.namesLike(request.hostname, nameStem(request.hostname)),
  );
  const ipv4 = lowestFreeIPv4(await store.usedIPv4s());
  const id = newId('n');
  await store.insertNode({
    id,
    name,
    hostname: request.hostname,
    ...fromKey,
    machineKey,
    nodeKey: request.nodeKey,
    ipv4,
    ipv6: ipv6For(deps.ulaPrefix, ipv4),
    endpoints: [],
    os: request.os,
    createdAt: now.toISOString(),
    lastSeen: null,
    keyExpiry: null,
    advertisedRoutes: [],
    approvedRoutes: [],
  });
  return id;
}

/** A node key already used by another node: a copied key or an attempt to impersonate that node. */
async function refuseForeignNodeKey(
  store: Store,
  nodeKey: string,
  ownNodeId: string | undefined,
): Promise<void> {
  const holder = await store.nodeByNodeKey(nodeKey);
  if (holder !== undefined && holder.id !== ownNodeId) {
    throw new ApiError(409, 'node-key-in-use', 'this node key belongs to another node: generate a new one');
  }
}

/** Tagged keys make tagged nodes, owned by their tags rather than by the key's user. */
function ownership(key: PreauthKeyRecord): { userId: string | null; tags: string[] } {
  return key.tags.length > 0 ? { userId: null, tags: key.tags } : { userId: key.userId, tags: [] };
}
