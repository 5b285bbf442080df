import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, Key, type KeyPair, publicKeyOf } from '@weft/protocol';

const KEY_FILE = 'relay.key';

/**
 * The relay's X25519 key pair, generated on first start and kept in `stateDir` (mode 0600). It
 * is both the key nodes authenticate to and the reflector's WireGuard key, so it must survive
 * restarts: every node has its public half as a WireGuard peer.
 */
export async function loadOrCreateRelayKey(stateDir: string): Promise<KeyPair> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = join(stateDir, KEY_FILE);
  const existing = await readKeyFile(file);
  if (existing !== null) return existing;
  const pair = generateKeyPair();
  try {
    // 'wx': never overwrite a key another process wrote in the meantime.
    await writeFile(file, `${pair.privateKey}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readKeyFile(file)) as KeyPair;
  }
  return pair;
}

async function readKeyFile(file: string): Promise<KeyPair | null> {
  let text: string;
  try {
    text = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const mode = (await stat(file)).mode & 0o777;
  if (mode & 0o077) {
    throw new Error(`${file} is readable by other users (mode ${mode.toString(8)}): chmod 600 it`);
  }
  if (!Key.safeParse(text).success) throw new Error(`${file} does not hold a base64 X25519 private key`);
  return { privateKey: text, publicKey: publicKeyOf(text) };
}
