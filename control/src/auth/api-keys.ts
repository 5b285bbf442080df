import { createHash, randomBytes } from 'node:crypto';
import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';

// API keys for the admin HTTP API: `weftapi-<prefix>-<secret>`. Shown once, stored as a SHA-256
// hash (the 32-byte secret leaves nothing to brute-force); the 8-hex-digit prefix is the public
// name `apikey list` shows and `apikey revoke` takes.

export const API_KEY_PREFIX = 'weftapi-';

export function generateApiKey(): { key: string; prefix: string } {
  const prefix = randomBytes(4).toString('hex');
  return { key: `${API_KEY_PREFIX}${prefix}-${randomBytes(32).toString('base64url')}`, prefix };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** Checks `Authorization: Bearer <key>`; returns the key's prefix or throws a 401. */
export async function authenticateApiKey(
  store: Store,
  header: string | undefined,
  now: Date,
): Promise<string> {
  const match = /^Bearer +(\S+)$/i.exec(header ?? '');
  if (match === null) {
    throw new ApiError(
      401,
      'missing-api-key',
      'send an API key as "Authorization: Bearer KEY" (weft-control apikey create)',
    );
  }
  const record = await store.apiKeyByHash(hashApiKey(match[1] as string));
  if (record === undefined) throw new ApiError(401, 'invalid-api-key', 'unknown or revoked API key');
  if (Date.parse(record.expiresAt) <= now.getTime()) {
    throw new ApiError(401, 'api-key-expired', `this API key expired at ${record.expiresAt}`);
  }
  await store.touchApiKey(record.prefix, now);
  return record.prefix;
}
