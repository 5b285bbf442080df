import { randomBytes } from 'node:crypto';

/** A random opaque id such as `n3f9c0a1b2d4e5f60`: unguessable, so ids leak nothing about order or count. */
export function newId(prefix: 'n' | 'u' | 'k'): string {
  return `${prefix}${randomBytes(8).toString('hex')}`;
}
