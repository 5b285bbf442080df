import { hostname as osHostname } from 'node:os';

/** The OS host name turned into a valid machine name (lower case, letters, digits and -). */
export function defaultHostname(raw = osHostname()): string {
  const name = (raw.toLowerCase().split('.')[0] ?? '')
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return name || 'weft-node';
}
