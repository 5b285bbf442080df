import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { InterfaceName } from '@weft/protocol';
import { z } from 'zod';
import type { Logger } from './log.js';
import { checkSafeDir } from './safe-dir.js';

// What this helper has changed on the OS, kept on disk (root-only) so that a helper restarted after
// SIGTERM (a package upgrade) or SIGKILL knows what is its own: it keeps the kill switch and exit
// routing in force (fail closed) and can take everything down later, leaving nothing unknown behind.
// Written after every change, atomically (a new file renamed over the old one), mode 0600.

const SysctlName = z.string().regex(/^net\.[a-z0-9_.]+$/, 'must be a net.* kernel parameter');
const SysctlValue = z.string().regex(/^[0-9]{1,12}$/, 'must be a number');

export const OwnedState = z.strictObject({
  version: z.literal(1),
  /** The kernel's boot id: after a reboot none of it exists any more, so the file no longer applies. */
  bootId: z.string().max(64),
  /** Interfaces this helper created (it deletes them on `down`) or adopted (it only undoes its extras). */
  interfaces: z.record(InterfaceName, z.strictObject({ created: z.boolean() })),
  /** Interfaces whose nftables table `inet weft-NAME` (filter, kill switch) this helper installed. */
  firewalls: z.array(InterfaceName),
  /** The interface whose exit node the policy routing rules (and the kill switch) serve. */
  exitOwner: InterfaceName.nullable(),
  /** Kernel parameters held (held-sysctls.ts): who needs each, and the values to put back. */
  sysctls: z.strictObject({
    holders: z.record(SysctlName, z.array(InterfaceName)),
    saved: z.record(SysctlName, z.strictObject({ set: SysctlValue, old: SysctlValue })),
  }),
  /** wireguard-go's socket buffer limits (udp-buffers.ts): who needs them, and the values to put back. */
  socketBuffers: z.strictObject({
    holders: z.array(InterfaceName),
    saved: z.record(SysctlName, SysctlValue),
  }),
});
export type OwnedState = z.infer<typeof OwnedState>;

export const STATE_FILE_NAME = 'owned.json';

export class StateFile {
  readonly path: string;
  /** What this process last wrote: an apply that changes nothing writes (and syncs) nothing. */
  private written: string | null = null;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {
    this.path = join(dir, STATE_FILE_NAME);
  }

  /** Creates the directory (0700) if needed and refuses one that others could write into. */
  async prepare(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await checkSafeDir(this.dir);
  }

  /**
   * What an earlier helper of this boot owned; null when there is no file or it is from another boot.
   * A file that does not validate is moved aside (its content logged) rather than trusted.
   */
  async read(bootId: string): Promise<OwnedState | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return this.setAside(`not JSON: ${(e as Error).message}`);
    }
    const parsed = OwnedState.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return this.setAside(`${issue?.path.join('.') || 'the file'}: ${issue?.message}`);
    }
    if (parsed.data.bootId !== bootId) {
      this.log.info(`${this.path} is from an earlier boot; nothing in it exists any more`);
      await this.remove();
      return null;
    }
    return parsed.data;
  }

  private async setAside(reason: string): Promise<null> {
    const aside = `${this.path}.invalid`;
    await rename(this.path, aside);
    this.log.error(
      `${this.path} is not a valid state file (${reason}); moved to ${aside}, trusting none of it`,
    );
    return null;
  }

  /** Replaces the file in one step: a fresh 0600 file, flushed, renamed over the old one. */
  async write(state: OwnedState): Promise<void> {
    const text = `${JSON.stringify(OwnedState.parse(state), null, 2)}\n`;
    if (text === this.written) return;
    const temp = join(this.dir, `.${STATE_FILE_NAME}.${randomBytes(6).toString('hex')}`);
    const file = await open(temp, 'wx', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, this.path);
    this.written = text;
  }

  async remove(): Promise<void> {
    this.written = null;
    await unlink(this.path).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

/** The kernel's id for this boot. */
export async function readBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}
