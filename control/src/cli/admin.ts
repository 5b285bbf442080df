import { z } from 'zod';
import { generatePreauthKey, hashPreauthKey } from '../auth/preauth-keys.js';
import { parseDuration } from '../config/duration.js';
import { isUniqueViolation } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { newId } from '../tailnet/ids.js';
import type { NodeRecord, UserRecord } from '../tailnet/records.js';
import { Tag } from '../tailnet/tags.js';

// The admin commands, as functions over a Store so they run the same from the CLI, from tests and
// later from an admin API. They write to the database only; a running server notices the commit.

/** A refusal to show the admin as it is, without a stack trace. */
export class CliError extends Error {
  override name = 'CliError';
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
  };
  try {
    await store.insertUser(user);
  } catch (err) {
    if (isUniqueViolation(err)) throw new CliError(`a user named ${name} already exists`);
    throw err;
  }
  return user;
}

export function formatUsers(users: UserRecord[], json: boolean): string {
  if (json) return `${JSON.stringify(users, null, 2)}\n`;
  return table(
    ['NAME', 'EMAIL', 'CREATED'],
    users.map((u) => [u.name, u.email ?? '-', u.createdAt]),
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
    throw new CliError(`no user named ${options.user} (create it with: users create NAME)`);
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

export function formatNodes(nodes: NodeRecord[], json: boolean): string {
  if (json) {
    const rows = nodes.map((n) => ({
      id: n.id,
      name: n.name,
      hostname: n.hostname,
      user: n.userName,
      tags: n.tags,
      ipv4: n.ipv4,
      ipv6: n.ipv6,
      os: n.os,
      endpoints: n.endpoints,
      ephemeral: n.ephemeral,
      createdAt: n.createdAt,
      lastSeen: n.lastSeen,
      keyExpiry: n.keyExpiry,
    }));
    return `${JSON.stringify(rows, null, 2)}\n`;
  }
  return table(
    ['NAME', 'IPV4', 'IPV6', 'OWNER', 'OS', 'LAST SEEN'],
    nodes.map((n) => [
      n.name,
      n.ipv4,
      n.ipv6,
      n.tags.length > 0 ? n.tags.join(',') : (n.userName ?? '-'),
      n.os || '-',
      n.lastSeen ?? 'never',
    ]),
  );
}

export async function deleteNode(store: Store, name: string): Promise<NodeRecord> {
  const node = await store.nodeByName(name);
  if (node === undefined || !(await store.deleteNode(node.id))) throw new CliError(`no node named ${name}`);
  return node;
}

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return (
    all.map((r) => `${r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd()).join('\n') +
    '\n'
  );
}
