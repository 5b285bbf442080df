#!/usr/bin/env node
// Bundles what the packaged app runs into electron/dist/bundle/, so the package needs no node_modules:
//   main.js         the Electron main process (ESM; only 'electron' and node: built-ins stay imports)
//   preload.cjs     the sandboxed preload (already self-contained: it requires only 'electron')
//   weft-helper.mjs the privileged helper, run by systemd with ELECTRON_RUN_AS_NODE=1
// Needs `npm run build` first (it bundles the compiled dist/ files). Uses Vite's bundler (rolldown).
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const out = join(root, 'electron', 'dist', 'bundle');
const external = ['electron', ...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

async function bundle(entry, fileName) {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run npm run build first`);
  await build({
    configFile: false,
    logLevel: 'warn',
    root,
    build: {
      ssr: entry,
      outDir: out,
      emptyOutDir: false,
      target: 'node20',
      minify: false,
      sourcemap: false,
      rollupOptions: { external, output: { format: 'es', entryFileNames: fileName, codeSplitting: false } },
    },
    ssr: { noExternal: true, target: 'node' },
  });
}

export async function bundleAll() {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await bundle(join(root, 'electron', 'dist', 'main.js'), 'main.js');
  await bundle(join(root, 'native-helpers', 'dist', 'main.js'), 'weft-helper.mjs');
  copyFileSync(join(root, 'electron', 'dist', 'preload.cjs'), join(out, 'preload.cjs'));
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log(`bundled into ${await bundleAll()}`);
}
