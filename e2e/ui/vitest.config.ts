import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Browser tests of the renderer in Debian's Chromium (playwright-core), against the built bundle
// served by the web shell and its controller over a stand-in engine. Run: npx vitest run -c e2e/ui/vitest.config.ts
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  resolve: {
    alias: { '@weft/protocol': fileURLToPath(new URL('../../protocol/src/index.ts', import.meta.url)) },
  },
  test: {
    include: ['e2e/ui/**/*.test.ts'],
    globalSetup: ['e2e/ui/global-setup.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
