import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const file = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// Unit and integration tests run against sources; network-lab tests (e2e/) spawn the built binaries.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@weft\/protocol$/, replacement: file('./protocol/src/index.ts') },
      // electron's tests use the bridge from core's sources, as core's own tests do
      { find: /^@weft\/core\/bridge$/, replacement: file('./core/src/bridge/index.ts') },
      { find: /^@weft\/core\/bridge\/testing$/, replacement: file('./core/src/bridge/testing/index.ts') },
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
