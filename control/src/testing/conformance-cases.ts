import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The policy cases recorded from Tailscale's control plane, kept beside the repository in
 * ../shared/conformance (not in it: they are the team's ground truth, shared across checkouts).
 * WEFT_CONFORMANCE_DIR points elsewhere, for a checkout that does not sit beside `shared/`.
 */
export const TAILSCALE_POLICY_CASES = process.env.WEFT_CONFORMANCE_DIR
  ? resolve(process.env.WEFT_CONFORMANCE_DIR, 'tailscale-policy')
  : fileURLToPath(new URL('../../../../shared/conformance/tailscale-policy/', import.meta.url));

/** Every recorded case, by file name; a missing or empty folder is an error that says where it looked. */
export function readPolicyCases<T>(): T[] {
  if (!existsSync(TAILSCALE_POLICY_CASES))
    throw new Error(
      `conformance cases not found at ${TAILSCALE_POLICY_CASES}: check out ../shared next to the repository, or set WEFT_CONFORMANCE_DIR to its conformance folder`,
    );
  const files = readdirSync(TAILSCALE_POLICY_CASES).filter((f) => f.endsWith('.json'));
  if (files.length === 0) throw new Error(`no conformance cases in ${TAILSCALE_POLICY_CASES}`);
  return files.sort().map((f) => JSON.parse(readFileSync(join(TAILSCALE_POLICY_CASES, f), 'utf8')) as T);
}
