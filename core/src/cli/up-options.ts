import { readFile } from 'node:fs/promises';
import { parseAddr } from '@weft/protocol';
import { LocalApiError } from '../localapi/client.js';

// The `weft up` options that guard secrets and the way to control: where the pre-auth key comes
// from (a file or stdin keep it out of argv, which every user can read in `ps`), and refusing
// plain http to a control that is not on this machine.

/** Larger than any key; a file bigger than this is not a key. */
const MAX_KEY_FILE_BYTES = 4096;

export interface AuthKeyFlags {
  /** KEY (shows in `ps`), `file:PATH`, or `-` for stdin. */
  authkey?: string;
  authkeyFile?: string;
}

/** The pre-auth key the flags name, if any. */
export async function authKeyFrom(
  flags: AuthKeyFlags,
  stdin: AsyncIterable<Buffer | string> = process.stdin,
): Promise<string | undefined> {
  if (flags.authkey !== undefined && flags.authkeyFile !== undefined) {
    throw new LocalApiError('invalid-request', 'give --authkey or --authkey-file, not both');
  }
  const { authkey } = flags;
  if (flags.authkeyFile !== undefined) return keyFromFile(flags.authkeyFile);
  if (authkey === undefined) return undefined;
  if (authkey.startsWith('file:')) return keyFromFile(authkey.slice('file:'.length));
  if (authkey === '-') return keyText(await readAll(stdin), 'standard input');
  return authkey;
}

async function keyFromFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new LocalApiError(
      'invalid-request',
      `cannot read the auth key file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
  return keyText(text, path);
}

function keyText(text: string, from: string): string {
  if (text.length > MAX_KEY_FILE_BYTES) {
    throw new LocalApiError(
      'invalid-request',
      `${from} holds more than ${MAX_KEY_FILE_BYTES} bytes: not an auth key`,
    );
  }
  const key = text.trim();
  if (key === '' || /\s/.test(key)) {
    throw new LocalApiError('invalid-request', `${from} must hold exactly one auth key`);
  }
  return key;
}

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<string> {
  let text = '';
  for await (const chunk of stream) {
    text += chunk.toString();
    if (text.length > MAX_KEY_FILE_BYTES) break;
  }
  return text;
}

/** Refuses http:// to a control that is not on this machine, unless `insecureHttp`. */
export function checkControlUrl(controlUrl: string, insecureHttp: boolean): void {
  let url: URL;
  try {
    url = new URL(controlUrl);
  } catch {
    throw new LocalApiError('invalid-request', `invalid --control-url '${controlUrl}'`);
  }
  if (url.protocol !== 'http:' || insecureHttp || isLoopback(url.hostname)) return;
  throw new LocalApiError(
    'invalid-request',
    `refusing plain http to ${url.host}: anyone on the path could read and change what this node and control say (the control key is pinned, but sign-in links and keys are not protected). Use https://, or pass --insecure-http for a lab or a trusted network`,
  );
}

function isLoopback(hostname: string): boolean {
  if (hostname === 'localhost') return true;
  const addr = parseAddr(hostname.replace(/^\[(.*)\]$/, '$1'));
  if (addr === null) return false;
  return addr.family === 4 ? addr.value >> 24n === 127n : addr.value === 1n;
}
