// Map responses for clients that ask for `Compress: "zstd"`, which every current Tailscale client
// does. Node 20 has no zstd encoder and the maintained npm bindings download native builds, so this
// writes valid zstd frames of raw (stored) blocks: every zstd decoder reads them; they are not
// smaller. A real compressor can replace this function alone.

const MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
/** The largest block zstd allows. */
const MAX_BLOCK = 128 * 1024;
/** Single segment, 4-byte content size, no checksum, no dictionary. */
const DESCRIPTOR = 0xa0;

export function zstdFrame(data: Uint8Array): Buffer {
  const blocks = Math.max(1, Math.ceil(data.length / MAX_BLOCK));
  const out = Buffer.alloc(4 + 1 + 4 + blocks * 3 + data.length);
  out.set(MAGIC, 0);
  out[4] = DESCRIPTOR;
  out.writeUInt32LE(data.length, 5);
  let at = 9;
  for (let i = 0; i < blocks; i++) {
    const chunk = data.subarray(i * MAX_BLOCK, (i + 1) * MAX_BLOCK);
    const last = i === blocks - 1 ? 1 : 0;
    // Block header: last-block bit, type 0 (raw), size in the upper 21 bits.
    out.writeUIntLE(last | (chunk.length << 3), at, 3);
    out.set(chunk, at + 3);
    at += 3 + chunk.length;
  }
  return out;
}
