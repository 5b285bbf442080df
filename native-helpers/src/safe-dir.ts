import { lstat, realpath } from 'node:fs/promises';
import { basename, dirname, join, sep } from 'node:path';

// The helper changes the owner and mode of its socket by path, and a path is only as safe as the
// directories it runs through: whoever can write into one of them can rename things in it or put a
// symlink in the socket's place between two calls. So the socket's directory must be a real directory
// (not a symlink) that only this process's user (root, in production) can write into, and every
// directory above it must be owned by root or that user and not writable by others, unless sticky
// (like /tmp, where nobody can rename or delete what another user owns).

const GROUP_OR_OTHER_WRITE = 0o022;
const STICKY = 0o1000;

/** Refuses, with the reason, a directory someone else could change entries in; resolves otherwise. */
export async function checkSafeDir(dir: string, uid = process.getuid?.() ?? 0): Promise<void> {
  // The ancestors may be symlinks (/var/run -> /run); what counts is where they lead.
  const real = join(await realpath(dirname(dir)), basename(dir));
  const self = await lstat(real);
  if (self.isSymbolicLink())
    throw new Error(`${dir} is a symlink; the socket directory must be a real directory`);
  if (!self.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (self.uid !== uid) {
    throw new Error(`${dir} is owned by uid ${self.uid}, not ${uid}; refusing to put the socket there`);
  }
  if ((self.mode & GROUP_OR_OTHER_WRITE) !== 0) {
    throw new Error(
      `${dir} is writable by its group or others (mode ${modeOf(self.mode)}); the socket needs a directory ` +
        'only its owner can write into',
    );
  }
  for (let parent = dirname(real); ; parent = dirname(parent)) {
    const st = await lstat(parent);
    if (st.uid !== 0 && st.uid !== uid) {
      throw new Error(
        `${parent}, above ${dir}, is owned by uid ${st.uid}; refusing to put the socket below it`,
      );
    }
    if ((st.mode & GROUP_OR_OTHER_WRITE) !== 0 && (st.mode & STICKY) === 0) {
      throw new Error(
        `${parent}, above ${dir}, is writable by its group or others (mode ${modeOf(st.mode)}) and not sticky`,
      );
    }
    if (parent === sep || parent === dirname(parent)) return;
  }
}

function modeOf(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}
