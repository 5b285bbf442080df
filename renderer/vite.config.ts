import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The renderer may import only the bridge schema from protocol/: aliasing the package to
// bridge.ts keeps the rest of protocol out of the bundle and makes any other import fail the build.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  resolve: {
    alias: { '@weft/protocol': fileURLToPath(new URL('../protocol/src/bridge/index.ts', import.meta.url)) },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: true,
    // Vite's inline preload helper would need 'unsafe-inline' under the page's CSP.
    modulePreload: { polyfill: false },
  },
});
