import { lstat } from 'node:fs/promises';

// A local socket is trusted only when root or this process's own user bound it. A socket another
// user bound first, in a directory they can write (/run/weft is shared by the `weft` group), would
// otherwise receive what we send: auth keys to the engine, private keys and states to the helper.

/** Refuses a socket owned by another user; a missing path is left for connect to report. */
export async function checkSocketOwner(path: string): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new Error(`${path} is not a socket`);
  const self = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== self) {
    throw new Error(`${path} is owned by uid ${st.uid}, not by root or this user: refusing to talk to it`);
  }
}
