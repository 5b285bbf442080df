import { DNS_DEFAULTS, DnsSettings, type DnsSettingsPatch } from '@weft/protocol';
import type { z } from 'zod';
import type { Store } from '../db/store.js';

// The tailnet's DNS settings live in the settings table as one JSON value (no schema migration),
// checked by the protocol's schema on the way in and on the way out: a hand-edited value that no
// longer parses is reported, never sent to nodes.

export const SETTING_DNS = 'dns_settings';

export class DnsSettingsError extends Error {
  override name = 'DnsSettingsError';
}

/** One line per problem: `splitDns.corp.example.0: must be an IP address, …`. */
export function formatDnsIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || 'settings'}: ${i.message}`).join('\n');
}

/** The settings in force: the stored ones, or the defaults until an admin sets any. */
export async function loadDnsSettings(store: Store): Promise<DnsSettings> {
  const text = await store.setting(SETTING_DNS);
  if (text === undefined) return DNS_DEFAULTS;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DnsSettingsError(`stored DNS settings are not JSON: ${(err as Error).message}`);
  }
  const parsed = DnsSettings.safeParse(json);
  if (!parsed.success)
    throw new DnsSettingsError(`stored DNS settings are invalid:\n${formatDnsIssues(parsed.error)}`);
  return parsed.data;
}

/**
 * Applies `patch` to the settings in force and stores the result; a patch that would make them
 * invalid throws with every problem and stores nothing.
 */
export async function setDnsSettings(store: Store, patch: DnsSettingsPatch): Promise<DnsSettings> {
  return store.transaction(async (tx) => {
    const merged = { ...(await loadDnsSettings(tx)), ...stripUndefined(patch) };
    const parsed = DnsSettings.safeParse(merged);
    if (!parsed.success) throw new DnsSettingsError(formatDnsIssues(parsed.error));
    await tx.putSetting(SETTING_DNS, JSON.stringify(parsed.data));
    return parsed.data;
  });
}

function stripUndefined(patch: DnsSettingsPatch): DnsSettingsPatch {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
}
