import { type DnsSettingsPatch, parseAddr } from '@weft/protocol';
import type { Command } from 'commander';
import type { Store } from '../db/store.js';
import { DnsSettingsError, loadDnsSettings, setDnsSettings } from '../dns/settings.js';
import { CliError } from './admin.js';

// `weft-control dns get|set`: the tailnet's DNS settings. `set` changes only the settings it is
// given; the result is checked as a whole and a refused one changes nothing. A running server picks
// the change up through its change feed and sends every node the new settings.

export interface DnsFlags {
  magicDns?: string;
  baseDomain?: string;
  nameservers?: string;
  splitDns?: string;
  searchDomains?: string;
  extraRecords?: string;
}

const list = (text: string, sep: RegExp) =>
  text
    .split(sep)
    .map((s) => s.trim())
    .filter((s) => s !== '');

/** The patch the flags describe; the schema checks the values themselves when they are stored. */
export function dnsPatchFromFlags(flags: DnsFlags): DnsSettingsPatch {
  const patch: DnsSettingsPatch = {};
  if (flags.magicDns !== undefined) {
    if (flags.magicDns !== 'on' && flags.magicDns !== 'off')
      throw new CliError('--magic-dns takes on or off');
    patch.magicDns = flags.magicDns === 'on';
  }
  if (flags.baseDomain !== undefined) patch.baseDomain = flags.baseDomain;
  if (flags.nameservers !== undefined) patch.nameservers = list(flags.nameservers, /[,\s]+/);
  if (flags.searchDomains !== undefined) patch.searchDomains = list(flags.searchDomains, /[,\s]+/);
  if (flags.splitDns !== undefined) {
    patch.splitDns = {};
    for (const entry of list(flags.splitDns, /[;\s]+/)) {
      const [domain, servers, extra] = entry.split('=');
      if (!domain || !servers || extra !== undefined) {
        throw new CliError(`--split-dns entry "${entry}" must be DOMAIN=NAMESERVER[,NAMESERVER]`);
      }
      patch.splitDns[domain] = list(servers, /,/);
    }
  }
  if (flags.extraRecords !== undefined) {
    patch.extraRecords = list(flags.extraRecords, /[,\s]+/).map((entry) => {
      const [name, value, extra] = entry.split('=');
      const family = parseAddr(value ?? '')?.family;
      if (!name || value === undefined || extra !== undefined || family === undefined) {
        throw new CliError(`--extra-records entry "${entry}" must be NAME=IP-ADDRESS`);
      }
      return { name, type: family === 4 ? ('A' as const) : ('AAAA' as const), value };
    });
  }
  return patch;
}

export function registerDnsCommands(
  program: Command,
  io: { out(text: string): void; err(text: string): void },
  withStore: (cmd: Command, fn: (store: Store) => Promise<void>) => Promise<void>,
): void {
  const dns = program
    .command('dns')
    .description('the tailnet’s DNS settings: MagicDNS, nameservers, split DNS');
  dns
    .command('get')
    .description('print the DNS settings in force (JSON)')
    .action((_opts, cmd: Command) =>
      withStore(cmd, async (store) => io.out(`${JSON.stringify(await loadDnsSettings(store), null, 2)}\n`)),
    );
  dns
    .command('set')
    .description('change the DNS settings given; the others stay. Refused settings change nothing')
    .option('--magic-dns <on|off>', 'answer NAME.BASE-DOMAIN for every node a node may see')
    .option('--base-domain <domain>', 'the suffix of node names (default weft.internal)')
    .option('--nameservers <list>', 'comma-separated resolvers for other names ("" = the OS’s own)')
    .option(
      '--split-dns <list>',
      'DOMAIN=NAMESERVER[,NAMESERVER] entries separated by ; or spaces ("" = none)',
    )
    .option('--search-domains <list>', 'comma-separated search domains ("" = none)')
    .option('--extra-records <list>', 'comma-separated NAME=IP records (A or AAAA by the address; "" = none)')
    .action((opts: DnsFlags, cmd: Command) =>
      withStore(cmd, async (store) => {
        const patch = dnsPatchFromFlags(opts);
        if (Object.keys(patch).length === 0) throw new CliError('give at least one setting to change');
        try {
          const settings = await setDnsSettings(store, patch);
          io.out(`${JSON.stringify(settings, null, 2)}\n`);
        } catch (err) {
          if (err instanceof DnsSettingsError) throw new CliError(`DNS settings refused:\n${err.message}`);
          throw err;
        }
      }),
    );
}
