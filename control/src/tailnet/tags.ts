import { z } from 'zod';

/** A tag as Tailscale writes them: `tag:` and a name of letters, digits and dashes. */
export const Tag = z
  .string()
  .regex(/^tag:[A-Za-z][A-Za-z0-9-]{0,62}$/, 'must look like tag:name (letters, digits and -)');

export const Tags = z.array(Tag).max(64);
