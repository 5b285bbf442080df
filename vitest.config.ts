import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const file = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// Unit and integration tests run against sources; network-lab tests (e2e/) spawn the built binaries.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@weft\/protocol\/upnp$/, replacement: file('./protocol/src/upnp.ts') },
      { find: /^@weft\/protocol\/prometheus$/, replacement: file('./protocol/src/prometheus.ts') },
      { find: /^@weft\/protocol$/, replacement: file('./protocol/src/index.ts') },
      // relay's tests (core's relay client), electron's (the bridge) and the renderer's (the web
      // shell's bridge over a stand-in engine) use core's sources
      { find: /^@weft\/core$/, replacement: file('./core/src/index.ts') },
      { find: /^@weft\/core\/bridge$/, replacement: file('./core/src/bridge/index.ts') },
      { find: /^@weft\/core\/bridge\/testing$/, replacement: file('./core/src/bridge/testing/index.ts') },
      { find: /^@weft\/core\/web\/testing$/, replacement: file('./core/src/web/testing/index.ts') },
    ],
  },
  test: {
    include: [
      '{protocol,control,core,native-helpers,relay}/src/**/*.test.ts',
      '{renderer,electron}/src/**/*.test.{ts,tsx}',
    ],
    testTimeout: 20_000,
  },
});
