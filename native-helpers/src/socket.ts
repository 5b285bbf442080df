import { chmod, chown, lstat, mkdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import { checkSafeDir } from './safe-dir.js';

// The socket file is the helper's only door, so its permissions are the access control: root only
// (0600), or root and one group (0660). It is created under a restrictive umask so it is never, even
// for a moment, more open than that. It lives in a directory only root can write into (safe-dir.ts):
// nobody else can bind the name first, or swap a symlink in before the chown and chmod by path.

const LIVENESS_TIMEOUT_MS = 1000;

export async function listenUnix(server: net.Server, path: string, gid?: number): Promise<void> {
  const createdDir = await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  if (createdDir !== undefined) await chmod(dirname(path), 0o755);
  await checkSafeDir(dirname(path));
  await removeStaleSocket(path);
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(oldMask);
  }
  if (gid !== undefined) {
    // Nobody else can write in the directory, so the path is still the socket just bound; checked anyway.
    const bound = await lstat(path);
    if (!bound.isSocket() || bound.uid !== (process.getuid?.() ?? 0)) {
      throw new Error(`${path} changed under the helper right after it was bound; refusing to chown it`);
    }
    // Group first, then mode: the socket is never group-accessible while owned by the wrong group.
    await chown(path, bound.uid, gid);
    await chmod(path, 0o660);
  }
}

/** Removes a socket left by a helper that died; refuses when one still answers or the path is not a socket. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await answers(path)) throw new Error(`another weft-helper is already listening on ${path}`);
  await unlink(path);
}

/** True when something accepts connections on the socket (or is too busy to refuse within a second). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.connect(path);
    probe.setTimeout(LIVENESS_TIMEOUT_MS, () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED') resolve(false);
      else reject(e);
    });
  });
}
