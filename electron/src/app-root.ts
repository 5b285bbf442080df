import { dirname, join } from 'node:path';

/**
 * The app's root folder (the one holding assets/ and renderer/): the nearest folder above `from`
 * that has assets/tray. Works for electron/dist/main.js in development and for the bundle at
 * electron/dist/bundle/main.js inside the package.
 */
export function findAppRoot(from: string, exists: (path: string) => boolean): string {
  let dir = from;
  for (let i = 0; i < 8; i++) {
    if (exists(join(dir, 'assets', 'tray'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`cannot find Weft's assets above ${from}`);
}
