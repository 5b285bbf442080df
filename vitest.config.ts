import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) => fileURLToPath(new URL(`./${pkg}/src/index.ts`, import.meta.url));

// Unit and integration tests run against sources; network-lab tests (e2e/) spawn the built binaries.
export default defineConfig({
  resolve: { alias: { '@weft/protocol': src('protocol') } },
  test: {
    include: [
      '{protocol,control,core,native-helpers,relay}/src/**/*.test.ts',
      '{renderer,electron}/src/**/*.test.{ts,tsx}',
    ],
    testTimeout: 20_000,
  },
});
