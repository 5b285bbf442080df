import { Hostname } from '@weft/protocol';
import { z } from 'zod';
import { generateApiKey, hashApiKey } from '../auth/api-keys.js';
import { generatePreauthKey, hashPreauthKey } from '../auth/preauth-keys.js';
import { parseDuration } from '../config/duration.js';
import { isUniqueViolation } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { policyGroupsOf } from '../tailnet/groups.js';
import { newId } from '../tailnet/ids.js';
import { type ApiKeyRecord, isExpired, type NodeRecord, type UserRecord } from '../tailnet/records.js';
import { Tag } from '../tailnet/tags.js';

// The admin commands, as functions over a Store so they run the same from the CLI, from tests and
// the admin HTTP API. They write to the database only; a running server notices the commit.

/** A refusal to show the admin as it is, without a stack trace; `kind` picks the API's status. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly kind: 'invalid' | 'not-found' | 'conflict' = 'invalid',
  ) {
    super(message);
  }
}

const UserName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/, 'must be letters, digits and . _ @ + - (at most 128)');

function check<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success)
    throw new CliError(`invalid ${what}: ${result.error.issues.map((i) => i.message).join('; ')}`);
  return result.data;
}

export async function createUser(store: Store, name: string, email?: string): Promise<UserRecord> {
  const user: UserRecord = {
    id: newId('u'),
    name: check(UserName, name, 'user name'),
    email: email === undefined ? null : check(z.email(), email, 'email'),
    createdAt: new Date().toISOString(),
    provider: null,
    subject: null,
    displayName: null,
    groups: [],
  };
  try {
    await store.insertUser(user);
  } catch (err) {
    if (isUniqueViolation(err)) throw new CliError(`a user named ${name} already exists`, 'conflict');
    throw err;
  }
  return user;
}

/** A user as the CLI's --json and the admin API show it, with the groups policy can name. */
export function userSummary(u: UserRecord) {
  return {
    id: u.id,
    name: u.name,
    email: u.email,
    displayName: u.displayName,
    provider: u.provider,
    subject: u.subject,
    groups: u.groups,
    policyGroups: policyGroupsOf(u),
    createdAt: u.createdAt,
  };
}

export function formatUsers(users: UserRecord[], json: boolean): string {
  if (json) return `${JSON.stringify(users.map(userSummary), null, 2)}\n`;
  return table(
    ['NAME', 'EMAIL', 'PROVIDER', 'GROUPS', 'CREATED'],
    users.map((u) => [
      u.name,
      u.email ?? '-',
      u.provider === null ? '-' : `${u.provider} (${u.subject})`,
      policyGroupsOf(u).join(',') || '-',
      u.createdAt,
    ]),
  );
}

export interface PreauthKeyOptions {
  user: string;
  reusable?: boolean;
  ephemeral?: boolean;
  /** A duration such as 1h or 7d. */
  expiration: string;
  /** Comma-separated tags; nodes registered with the key are owned by these tags. */
  tags?: string;
}

/** Creates a key and returns it: the only time it exists in clear. */
export async function createPreauthKey(
  store: Store,
  options: PreauthKeyOptions,
  now = new Date(),
): Promise<string> {
  const user = await store.userByName(options.user);
  if (user === undefined)
    throw new CliError(`no user named ${options.user} (create it with: users create NAME)`, 'not-found');
  const lifetime = parseDuration(options.expiration);
  if (lifetime === null)
    throw new CliError(`invalid expiration ${options.expiration}: use e.g. 30m, 1h, 7d or 1h30m`);
  const tags = options.tags
    ? [...new Set(options.tags.split(',').map((t) => check(Tag, t.trim(), `tag "${t.trim()}"`)))]
    : [];
  const key = generatePreauthKey();
  await store.insertPreauthKey({
    id: newId('k'),
    keyHash: hashPreauthKey(key),
    userId: user.id,
    reusable: options.reusable ?? false,
    ephemeral: options.ephemeral ?? false,
    tags,
    expiresAt: new Date(now.getTime() + lifetime).toISOString(),
    usedCount: 0,
    createdAt: now.toISOString(),
  });
  return key;
}

/** A node as the CLI's --json and the admin API show it. */
export function nodeSummary(n: NodeRecord) {
  return {
    id: n.id,
    name: n.name,
    hostname: n.hostname,
    user: n.userName,
    tags: n.tags,
    ipv4: n.ipv4,
    ipv6: n.ipv6,
    os: n.os,
    kind: n.kind,
    version: n.clientVersion,
    endpoints: n.endpoints,
    ephemeral: n.ephemeral,
    createdAt: n.createdAt,
    lastSeen: n.lastSeen,
    keyExpiry: n.keyExpiry,
  };
}

export function formatNodes(nodes: NodeRecord[], json: boolean, now = new Date()): string {
  if (json) return `${JSON.stringify(nodes.map(nodeSummary), null, 2)}\n`;
  return table(
    ['NAME', 'IPV4', 'IPV6', 'OWNER', 'OS', 'KIND', 'VERSION', 'LAST SEEN', 'KEY EXPIRY'],
    nodes.map((n) => [
      n.name,
      n.ipv4,
      n.ipv6,
      n.tags.length > 0 ? n.tags.join(',') : (n.userName ?? '-'),
      n.os || '-',
      n.kind,
      n.clientVersion ?? '-',
      n.lastSeen ?? 'never',
      n.keyExpiry === null ? 'never' : isExpired(n, now) ? `expired ${n.keyExpiry}` : n.keyExpiry,
    ]),
  );
}

export async function deleteNode(store: Store, name: string): Promise<NodeRecord> {
  const node = await store.nodeByName(name);
  if (node === undefined || !(await store.deleteNode(node.id)))
    throw new CliError(`no node named ${name}`, 'not-found');
  return node;
}

/** Renames a node: its peers see the new name (and resolve it) with their next delta. */
export async function renameNode(store: Store, name: string, newName: string): Promise<NodeRecord> {
  const node = await existingNode(store, name);
  const checked = check(Hostname, newName, `node name "${newName}"`);
  try {
    await store.renameNode(node.id, checked);
  } catch (err) {
    if (isUniqueViolation(err)) throw new CliError(`another node is named ${checked}`, 'conflict');
    throw err;
  }
  return { ...node, name: checked };
}

async function existingNode(store: Store, name: string): Promise<NodeRecord> {
  const node = await store.nodeByName(name);
  if (node === undefined) throw new CliError(`no node named ${name}`, 'not-found');
  return node;
}

/** Expires the node's key now: it leaves its peers' maps and must log in again. */
export async function expireNode(store: Store, name: string, now = new Date()): Promise<NodeRecord> {
  const node = await existingNode(store, name);
  await store.updateNode(node.id, { keyExpiry: now.toISOString() });
  return { ...node, keyExpiry: now.toISOString() };
}

/**
 * Turns key expiry off (tagged nodes only: servers nobody signs in on) or back on, with a fresh
 * deadline of `lifetimeMs` from now.
 */
export async function setNodeKeyExpiry(
  store: Store,
  name: string,
  enabled: boolean,
  lifetimeMs: number,
  now = new Date(),
): Promise<NodeRecord> {
  const node = await existingNode(store, name);
  if (!enabled && node.tags.length === 0) {
    throw new CliError(
      `${name} belongs to ${node.userName ?? 'a user'}: key expiry can only be disabled on tagged nodes`,
      'conflict',
    );
  }
  if (!enabled && isExpired(node, now)) {
    throw new CliError(`${name}'s key has already expired: it must log in again first`, 'conflict');
  }
  const keyExpiry = enabled ? new Date(now.getTime() + lifetimeMs).toISOString() : null;
  await store.updateNode(node.id, { keyExpiry });
  return { ...node, keyExpiry };
}

/** Creates an admin API key and returns it: the only time it exists in clear. */
export async function createApiKey(store: Store, expiration: string, now = new Date()): Promise<string> {
  const lifetime = parseDuration(expiration);
  if (lifetime === null) throw new CliError(`invalid expiration ${expiration}: use e.g. 30d, 90d or 12h`);
  const { key, prefix } = generateApiKey();
  await store.insertApiKey({
    prefix,
    keyHash: hashApiKey(key),
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + lifetime).toISOString(),
    lastUsedAt: null,
  });
  return key;
}

export function formatApiKeys(keys: ApiKeyRecord[], json: boolean): string {
  const rows = keys.map(({ keyHash: _hash, ...shown }) => shown);
  if (json) return `${JSON.stringify(rows, null, 2)}\n`;
  return table(
    ['PREFIX', 'CREATED', 'EXPIRES', 'LAST USED'],
    rows.map((k) => [k.prefix, k.createdAt, k.expiresAt, k.lastUsedAt ?? 'never']),
  );
}

export async function revokeApiKey(store: Store, prefix: string): Promise<void> {
  if (!(await store.deleteApiKey(prefix)))
    throw new CliError(`no API key with prefix ${prefix}`, 'not-found');
}

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return (
    all.map((r) => `${r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd()).join('\n') +
    '\n'
  );
}
