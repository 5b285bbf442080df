import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TAILNET_DNS_IPV4 } from '@weft/protocol';
import { z } from 'zod';
import type { Logger } from '../log.js';

// /etc/resolv.conf on a machine without systemd-resolved: while tailnet DNS is on, the file names
// only 100.100.100.100 (and the search domains); afterwards it holds exactly the bytes it had before.
// The original is recorded on disk, flushed, BEFORE the file is first changed, so a helper killed at
// any point finds the record on its next start and puts the file back. The file is always written in
// place (never renamed over): it may be a bind mount (a container's, `ip netns exec`'s), or a
// symlink whose target is what the system manages.

const MARKER = '# Managed by weft-helper while tailnet DNS is on; restored when it is off.';

const Record = z.strictObject({
  version: z.literal(1),
  /** The file this record belongs to. */
  path: z.string().min(1),
  /** Its bytes before the first change (base64). */
  original: z.string(),
  /** What we last wrote (base64): restored only while the file still holds it. */
  written: z.string(),
});
type Record = z.infer<typeof Record>;

export const RESOLV_CONF_RECORD = 'resolv-conf.json';

/** The file's content with the tailnet resolver and these search domains. */
export function renderResolvConf(searchDomains: readonly string[]): string {
  const lines = [MARKER, `nameserver ${TAILNET_DNS_IPV4}`];
  if (searchDomains.length > 0) lines.push(`search ${searchDomains.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** The nameservers a resolv.conf names (what the OS resolved with before us). */
export function nameserversOf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = line.match(/^\s*nameserver\s+(\S+)/);
    if (m) out.push((m[1] as string).replace(/%.*$/, ''));
  }
  return out;
}

export class ResolvConf {
  readonly recordPath: string;

  constructor(
    readonly path: string,
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.recordPath = join(stateDir, RESOLV_CONF_RECORD);
  }

  /** Points the file at the tailnet resolver; records the original first. Idempotent. */
  async apply(searchDomains: readonly string[]): Promise<void> {
    const desired = renderResolvConf(searchDomains);
    const current = await readFile(this.path);
    let record = await this.readRecord();
    if (record === null) {
      if (current.toString().startsWith(MARKER)) {
        // Ours, with no record of what it was: nothing exact to go back to, so the record keeps it.
        this.log.warn(`${this.path} already holds tailnet DNS settings and no original is recorded`);
      }
      record = { version: 1, path: this.path, original: current.toString('base64'), written: '' };
    } else if (record.written !== '' && current.toString('base64') !== record.written) {
      // Rewritten by someone else (DHCP, an admin) while ours: that is the newest non-Weft file, the
      // one to give back later and whose nameservers the engine falls back to.
      this.log.warn(`${this.path} was changed by someone else; keeping that as the original to restore`);
      record = { ...record, original: current.toString('base64') };
    }
    if (current.toString() === desired && record.written === Buffer.from(desired).toString('base64')) return;
    await this.writeRecord({ ...record, written: Buffer.from(desired).toString('base64') });
    await writeInPlace(this.path, desired);
    this.log.info(
      `pointed ${this.path} at ${TAILNET_DNS_IPV4} (search ${searchDomains.join(' ') || 'none'})`,
    );
  }

  /** Puts the recorded original back (unless someone changed the file since we wrote it). */
  async restore(): Promise<void> {
    const record = await this.readRecord();
    if (record === null) return;
    const current = await readFile(record.path).catch(() => null);
    if (current !== null && current.toString('base64') !== record.written && record.written !== '') {
      this.log.warn(`${record.path} was changed by someone else since weft wrote it; leaving it as it is`);
    } else {
      await writeInPlace(record.path, Buffer.from(record.original, 'base64'));
      this.log.info(`restored ${record.path} to what it was before tailnet DNS`);
    }
    await unlink(this.recordPath);
  }

  /** The nameservers of the file as it was before us (the resolver's fallback): the record, else the file. */
  async originalNameservers(): Promise<string[]> {
    const record = await this.readRecord();
    const text = record
      ? Buffer.from(record.original, 'base64').toString()
      : await readFile(this.path, 'utf8');
    return nameserversOf(text).filter((ns) => ns !== TAILNET_DNS_IPV4);
  }

  private async readRecord(): Promise<Record | null> {
    let text: string;
    try {
      text = await readFile(this.recordPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const parsed = Record.safeParse(JSON.parse(text));
    if (!parsed.success)
      throw new Error(`${this.recordPath} is not a valid resolv.conf record; fix or remove it`);
    return parsed.data;
  }

  /** A fresh 0600 file, flushed, renamed over the old record: the record is whole or absent. */
  private async writeRecord(record: Record): Promise<void> {
    const temp = `${this.recordPath}.${randomBytes(6).toString('hex')}`;
    const file = await open(temp, 'wx', 0o600);
    try {
      await file.writeFile(`${JSON.stringify(record)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, this.recordPath);
  }
}

/** Truncates and writes the file itself (same inode), then flushes it. */
async function writeInPlace(path: string, content: string | Buffer): Promise<void> {
  const file = await open(path, 'r+');
  try {
    await file.truncate(0);
    await file.write(typeof content === 'string' ? Buffer.from(content) : content, 0, undefined, 0);
    await file.sync();
  } finally {
    await file.close();
  }
}
