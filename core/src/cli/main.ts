#!/usr/bin/env node
import type { Status } from '@weft/protocol';
import { Command, Option } from 'commander';
import { LocalApiClient, LocalApiError } from '../localapi/client.js';
import { DEFAULT_SOCKET } from '../paths.js';
import { formatStatus } from './format.js';

// weft: the command line over weftd's LocalAPI. Data goes to stdout (status, addresses, the
// login URL), problems to stderr with a non-zero exit; it never prompts.

const program = new Command('weft')
  .description('Control the Weft daemon (weftd) on this machine')
  .addOption(
    new Option('--socket <path>', "weftd's LocalAPI socket").env('WEFT_SOCKET').default(DEFAULT_SOCKET),
  )
  .showHelpAfterError();

const client = () => new LocalApiClient(program.opts<{ socket: string }>().socket);

program
  .command('up')
  .description('log in if needed and connect to the tailnet')
  .requiredOption('--control-url <url>', 'the control server, e.g. https://weft.example.com')
  .option('--authkey <key>', 'a pre-auth key (otherwise a login URL is printed)')
  .option('--hostname <name>', 'the name of this machine in the tailnet')
  .option('--timeout <seconds>', 'how long to wait for an interactive login', '600')
  .action(async (o: { controlUrl: string; authkey?: string; hostname?: string; timeout: string }) => {
    const api = client();
    let st = await api.up({
      controlUrl: o.controlUrl,
      ...(o.authkey ? { authKey: o.authkey } : {}),
      ...(o.hostname ? { hostname: o.hostname } : {}),
    });
    if (st.backendState !== 'Running' && st.authUrl) {
      process.stderr.write('To log in, open this URL in a browser:\n');
      process.stdout.write(`${st.authUrl}\n`);
      st = await waitForRunning(api, Number(o.timeout) * 1000);
    }
    const self = st.self;
    process.stderr.write(self ? `Connected as ${self.name} (${self.addresses.join(', ')})\n` : 'Connected\n');
  });

program
  .command('down')
  .description('disconnect from the tailnet (stay logged in)')
  .action(async () => {
    await client().down();
  });

program
  .command('logout')
  .description('disconnect and forget this node’s authorization')
  .action(async () => {
    await client().logout();
  });

program
  .command('status')
  .description('show this node and its peers')
  .option('--json', 'print the LocalAPI Status object')
  .action(async (o: { json?: boolean }) => {
    const st = await client().status();
    process.stdout.write(o.json ? `${JSON.stringify(st, null, 2)}\n` : `${formatStatus(st)}\n`);
  });

program
  .command('ip')
  .description("print this node's tunnel addresses")
  .addOption(new Option('-4', 'only the IPv4 address').conflicts('6'))
  .addOption(new Option('-6', 'only the IPv6 address'))
  .action(async (o: { 4?: boolean; 6?: boolean }) => {
    const st = await client().status();
    if (!st.self)
      throw new LocalApiError('not-logged-in', 'no addresses: this node is not logged in (weft up)');
    const addrs = st.self.addresses.filter((a) => (o[4] ? !a.includes(':') : o[6] ? a.includes(':') : true));
    if (addrs.length === 0)
      throw new LocalApiError('no-address', `this node has no IPv${o[4] ? 4 : 6} address`);
    process.stdout.write(`${addrs.join('\n')}\n`);
  });

/** Follows the daemon's status events until Running (after an interactive login) or a timeout. */
async function waitForRunning(api: LocalApiClient, timeoutMs: number): Promise<Status> {
  const abort = new AbortController();
  let last: Status | null = null;
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    await api.watch((ev) => {
      last = ev.status;
      if (ev.status.backendState === 'Running') abort.abort();
    }, abort.signal);
  } finally {
    clearTimeout(timer);
  }
  const st = last as Status | null;
  if (st?.backendState === 'Running') return st;
  throw new LocalApiError('timeout', `not logged in after ${Math.round(timeoutMs / 1000)} s`);
}

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof LocalApiError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`weft: ${msg}\n`);
  process.exit(1);
});
