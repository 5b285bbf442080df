import { readFile } from 'node:fs/promises';

/** The numeric id of a group named in the group file (`name:password:gid:members` per line). */
export async function lookupGroupId(name: string, groupFile = '/etc/group'): Promise<number> {
  const text = await readFile(groupFile, 'utf8');
  for (const line of text.split('\n')) {
    const [groupName, , gid] = line.split(':');
    if (groupName === name && gid !== undefined && /^[0-9]+$/.test(gid)) return Number(gid);
  }
  throw new Error(`group "${name}" is not in ${groupFile}`);
}
