#!/usr/bin/env node
import { Command, Option } from 'commander';
import { LocalApiClient, LocalApiError } from '../localapi/client.js';
import { DEFAULT_SOCKET } from '../locations.js';
import { addWebCommand } from '../web/cli.js';
import { addDnsCommands } from './dns.js';
import { parseDuration } from './duration.js';
import { addExitNodeCommands, addRouteFlags, prefsFromFlags, type RouteFlags } from './exit-nodes.js';
import { formatNetcheck, formatStatus, printResult } from './format.js';
import { waitForLogin } from './login.js';
import { type AuthKeyFlags, authKeyFrom, checkControlUrl } from './up-options.js';

// weft: the command line over weftd's LocalAPI. Data goes to stdout (status, addresses, the
// login URL), problems to stderr with a non-zero exit; it never prompts.

const program = new Command('weft')
  .description('Control the Weft daemon (weftd) on this machine')
  .addOption(
    new Option('--socket <path>', "weftd's LocalAPI socket").env('WEFT_SOCKET').default(DEFAULT_SOCKET),
  )
  .showHelpAfterError();

const client = () => new LocalApiClient(program.opts<{ socket: string }>().socket);

interface UpFlags extends AuthKeyFlags {
  controlUrl: string;
  hostname?: string;
  timeout: string;
  acceptNewControlKey?: boolean;
  insecureHttp?: boolean;
}

addRouteFlags(program.command('up'))
  .description('log in if needed and connect to the tailnet')
  .requiredOption('--control-url <url>', 'the control server, e.g. https://weft.example.com')
  .option(
    '--authkey <key>',
    'a pre-auth key (otherwise a login URL is printed); file:PATH or - (stdin) keep it out of ps',
  )
  .option('--authkey-file <path>', 'read the pre-auth key from this file')
  .option('--hostname <name>', 'the name of this machine in the tailnet')
  .option('--timeout <duration>', 'how long to wait for an interactive login (e.g. 90s, 10m)', '10m')
  .option('--accept-new-control-key', "accept control's key although it differs from the one pinned before")
  .option('--insecure-http', 'allow plain http:// to a control server that is not on this machine')
  .action(async (o: UpFlags) => {
    const timeoutMs = parseDuration(o.timeout);
    if (timeoutMs === null)
      throw new LocalApiError('invalid-request', `invalid --timeout '${o.timeout}': use e.g. 90s, 10m or 1h`);
    checkControlUrl(o.controlUrl, o.insecureHttp === true);
    const authKey = await authKeyFrom(o);
    const api = client();
    // Routing flags first, so the node advertises them from its first connection.
    const patch = prefsFromFlags(o as RouteFlags);
    if (patch) await api.setPrefs(patch);
    let st = await api.up({
      controlUrl: o.controlUrl,
      ...(authKey ? { authKey } : {}),
      ...(o.hostname ? { hostname: o.hostname } : {}),
      ...(o.acceptNewControlKey ? { acceptNewControlKey: true } : {}),
    });
    if (st.backendState !== 'Running' && st.authUrl) {
      const interrupt = new AbortController();
      const stop = () => interrupt.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      st = await waitForLogin(api, st.authUrl, timeoutMs, {
        out: (line) => process.stdout.write(`${line}\n`),
        err: (line) => process.stderr.write(`${line}\n`),
        interrupt: interrupt.signal,
      });
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
  .description('disconnect, expire this node’s key at control, and forget it here')
  .action(async () => {
    const st = await client().logout();
    for (const h of st.health) process.stderr.write(`weft: ${h}\n`);
  });

program
  .command('status')
  .description('show this node and its peers')
  .option('--json', 'print the LocalAPI Status object')
  .action(async (o: { json?: boolean }) => {
    const st = await client().status();
    printResult(o.json, st, formatStatus);
  });

program
  .command('netcheck')
  .description('report UDP reachability, reflected endpoints (NAT mapping) and relay latencies')
  .option('--json', 'print the LocalAPI NetcheckReport object')
  .action(async (o: { json?: boolean }) => {
    const r = await client().netcheck();
    printResult(o.json, r, formatNetcheck);
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

addWebCommand(program, () => program.opts<{ socket: string }>().socket);

addExitNodeCommands(program, client);
addDnsCommands(program, client);

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof LocalApiError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`weft: ${msg}\n`);
  process.exit(1);
});
