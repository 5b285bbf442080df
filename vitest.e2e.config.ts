import { defineConfig } from 'vitest/config';

// Network-lab tests: real binaries (built by `npm run build`) in namespaces, one file at a time.
export default defineConfig({
  test: {
    include: ['e2e/tests/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
