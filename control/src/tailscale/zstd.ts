import { compress, init } from '@bokuweb/zstd-wasm';

// Map responses for clients that ask for `Compress: "zstd"`, which every current Tailscale client
// does. Node 20 has no zstd in node:zlib; @bokuweb/zstd-wasm ships zstd compiled to WebAssembly
// inside its npm package (no native build, no download). Its module must be loaded once, before
// the first frame is made.

/** zstd's own default: fast, and maps (repetitive JSON) shrink several times. */
const LEVEL = 3;
let loading: Promise<void> | undefined;
let loaded = false;

export function loadZstd(): Promise<void> {
  loading ??= init().then(() => {
    loaded = true;
  });
  return loading;
}

export function zstdFrame(data: Uint8Array): Buffer {
  if (!loaded) throw new Error('zstd is not loaded yet (await loadZstd() first)');
  return Buffer.from(compress(data, LEVEL));
}
