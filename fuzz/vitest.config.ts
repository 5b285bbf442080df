import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// `npm run fuzz`: every entry point against its real parser or server, in-process, from sources
// (like the unit tests). FUZZ_RUNS inputs each (default 10,000), FUZZ_SEED to replay.
export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  resolve: {
    alias: [
      {
        find: /^@weft\/protocol\/upnp$/,
        replacement: fileURLToPath(new URL('../protocol/src/upnp.ts', import.meta.url)),
      },
      {
        find: /^@weft\/protocol$/,
        replacement: fileURLToPath(new URL('../protocol/src/index.ts', import.meta.url)),
      },
    ],
  },
  test: {
    include: ['fuzz/**/*.fuzz.ts'],
    globalSetup: ['fuzz/global-setup.ts'],
    // Two cores are shared: one entry point at a time.
    fileParallelism: false,
    testTimeout: 60 * 60_000,
    hookTimeout: 60_000,
  },
});
