import { createHash, randomBytes } from 'node:crypto';

// Pre-auth keys: shown to the admin once, stored only as a SHA-256 hash. 32 random bytes make the
// hash a safe stand-in (nothing to brute-force), and a fixed prefix makes a leaked key recognisable
// to secret scanners.

export const PREAUTH_KEY_PREFIX = 'weftkey-';

export function generatePreauthKey(): string {
  return `${PREAUTH_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function hashPreauthKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}
