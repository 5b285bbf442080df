import type { Command } from 'commander';
import type { LocalApiClient } from '../localapi/client.js';
import { formatDnsStatus } from './format.js';

// `weft dns status` and `weft dns query NAME`: the tailnet's DNS as this node uses it, and one
// question answered by the engine's resolver exactly as the OS would be answered.

const TYPES = ['A', 'AAAA', 'PTR', 'TXT', 'MX', 'CNAME', 'SRV', 'NS'] as const;

export function addDnsCommands(program: Command, client: () => LocalApiClient): void {
  const dns = program.command('dns').description('tailnet DNS: MagicDNS names, split DNS, the resolver');
  dns
    .command('status')
    .description('the DNS settings in force, where the resolver listens, and the names it answers')
    .option('--json', 'print the LocalAPI DnsStatus object')
    .action(async (o: { json?: boolean }) => {
      const d = await client().dnsStatus();
      process.stdout.write(o.json ? `${JSON.stringify(d, null, 2)}\n` : `${formatDnsStatus(d)}\n`);
    });
  dns
    .command('query <name>')
    .description('ask the tailnet resolver (as the OS does at 100.100.100.100); exit 1 unless NOERROR')
    .option('--type <type>', `record type: ${TYPES.join(', ')}`, 'A')
    .option('--json', 'print the LocalAPI DnsQueryResult object')
    .action(async (name: string, o: { type: string; json?: boolean }) => {
      const type = o.type.toUpperCase() as (typeof TYPES)[number];
      const r = await client().dnsQuery({ name, type });
      if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else process.stdout.write(`${r.rcode}${r.records.map((l) => `\n${r.name}\t${l}`).join('')}\n`);
      if (r.rcode !== 'NOERROR') process.exitCode = 1;
    });
}
