import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';
import { ipv4From, ipv6For } from '../tailnet/addresses.js';
import { newId } from '../tailnet/ids.js';
import { nameStem, uniqueName } from '../tailnet/names.js';
import type { NodeRecord } from '../tailnet/records.js';

// The one way a machine becomes (again) an authorized node, whoever vouched for it: a pre-auth key
// or a person who signed in. A machine that had a node before keeps it, with its name and
// addresses; a new machine gets a unique name and the lowest free addresses.

export interface AuthorizeDeps {
  /** The tailnet's IPv6 /48, from which node IPv6 addresses are derived. */
  ulaPrefix: string;
  /** How long the node key is valid from now. */
  nodeKeyExpiryMs: number;
  now: () => Date;
}

export interface NodeGrant {
  machineKey: string;
  nodeKey: string;
  hostname: string;
  os: string;
  /** The owner; null for tagged nodes, which belong to their tags. */
  userId: string | null;
  tags: string[];
  preauthKeyId: string | null;
  ephemeral: boolean;
}

/** Creates or re-authorizes the machine's node; returns its id. Run it inside a transaction. */
export async function authorizeNode(store: Store, deps: AuthorizeDeps, grant: NodeGrant): Promise<string> {
  const now = deps.now();
  const existing = await store.nodeByMachineKey(grant.machineKey);
  await refuseForeignNodeKey(store, grant.nodeKey, existing?.id);
  const keyExpiry = nextKeyExpiry(existing, grant, now, deps.nodeKeyExpiryMs);
  const owner = {
    userId: grant.userId,
    tags: grant.tags,
    preauthKeyId: grant.preauthKeyId,
    ephemeral: grant.ephemeral,
  };
  if (existing) {
    await store.updateNode(existing.id, {
      ...owner,
      nodeKey: grant.nodeKey,
      hostname: grant.hostname,
      os: grant.os,
      keyExpiry,
    });
    return existing.id;
  }

  // Replicas register at once: one allocation at a time, or they all pick the same lowest address.
  await store.serializeAllocation();
  const name = uniqueName(grant.hostname, await store.namesLike(grant.hostname, nameStem(grant.hostname)));
  const ipv4 = await lowestFreeIPv4(store);
  const id = newId('n');
  await store.insertNode({
    id,
    name,
    hostname: grant.hostname,
    ...owner,
    machineKey: grant.machineKey,
    nodeKey: grant.nodeKey,
    ipv4,
    ipv6: ipv6For(deps.ulaPrefix, ipv4),
    endpoints: [],
    os: grant.os,
    createdAt: now.toISOString(),
    lastSeen: null,
    keyExpiry,
    advertisedRoutes: [],
    approvedRoutes: [],
  });
  return id;
}

/**
 * The lowest free address (lowest first, so addresses stay short and predictable): a deleted node's
 * below the highest in use, else the next above it. Index reads, not every node's address.
 */
async function lowestFreeIPv4(store: Store): Promise<string> {
  for (;;) {
    const top = await store.highestIPv4Offset();
    const ipv4 = ipv4From((await store.takeFreeIPv4Offset(top)) ?? top + 1);
    const holder = await store.nodeIdWithIPv4(ipv4);
    if (holder === undefined) return ipv4;
    // Held after all: inserted with its address (db copy), or by a replica of an earlier version
    // during a rolling upgrade, which leaves the offset unset. Set, it moves the highest past it.
    await store.setIPv4Offset(holder, ipv4);
  }
}

/**
 * A fresh deadline from now, except that a tagged node whose expiry an admin disabled (a null
 * expiry) stays without one while it stays tagged: servers are not meant to need a person.
 */
function nextKeyExpiry(
  existing: NodeRecord | undefined,
  grant: NodeGrant,
  now: Date,
  lifetimeMs: number,
): string | null {
  if (existing && existing.keyExpiry === null && existing.tags.length > 0 && grant.tags.length > 0)
    return null;
  return new Date(now.getTime() + lifetimeMs).toISOString();
}

/** A node key already used by another node: a copied key or an attempt to impersonate that node. */
export async function refuseForeignNodeKey(
  store: Store,
  nodeKey: string,
  ownNodeId: string | undefined,
): Promise<void> {
  const holder = await store.nodeByNodeKey(nodeKey);
  if (holder !== undefined && holder.id !== ownNodeId) {
    throw new ApiError(409, 'node-key-in-use', 'this node key belongs to another node: generate a new one');
  }
}
