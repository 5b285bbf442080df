import { Command, CommanderError } from 'commander';
import { type ConfigFlags, loadConfig } from '../config/config.js';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { errorText } from '../log.js';
import { startControl } from '../server/serve.js';
import {
  CliError,
  createApiKey,
  createPreauthKey,
  createUser,
  deleteNode,
  expireNode,
  formatApiKeys,
  formatNodes,
  formatUsers,
  renameNode,
  revokeApiKey,
  setNodeKeyExpiry,
} from './admin.js';
import { registerDbCommands } from './db.js';
import { registerDnsCommands } from './dns.js';
import { registerPolicyCommands } from './policy.js';
import { registerRoutesCommands } from './routes.js';

// `weft-control`: the server (`serve`) and the admin commands. Every command reads the same
// configuration (flags > environment > --config file > defaults), so run from the same directory or
// with the same --config, admin commands reach the server's database.

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Resolves when a running server should stop (SIGTERM/SIGINT for the real process). */
  untilStopped(): Promise<void>;
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = new Command('weft-control')
    .description('Weft coordination server and its admin commands')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .option(
      '--config <file>',
      'JSON config file with the serve options in camelCase (env WEFT_CONTROL_CONFIG)',
    )
    .option(
      '--db <path|url>',
      'SQLite database file or postgres://USER:PASSWORD@HOST/DB (env WEFT_CONTROL_DB; default ./weft-control.db)',
    );

  const config = (cmd: Command) =>
    loadConfig({ flags: cmd.optsWithGlobals<ConfigFlags>(), env: io.env, cwd: io.cwd });
  const withStore = async (cmd: Command, fn: (store: Store) => Promise<void>) => {
    const store = new Store((await openDatabase(config(cmd).db)).db);
    try {
      await fn(store);
    } finally {
      await store.destroy();
    }
  };

  program
    .command('serve')
    .description('run the coordination server')
    .option('--listen <host:port>', 'address to listen on (env WEFT_CONTROL_LISTEN; default 127.0.0.1:8080)')
    .option('--public-url <url>', 'URL nodes use to reach this server (env WEFT_CONTROL_PUBLIC_URL)')
    .option('--node-key-expiry <duration>', 'how long a node key is valid after sign-in (default 180d)')
    .option('--login-expiry <duration>', 'how long a sign-in link works (default 10m)')
    .option(
      '--oidc-issuer <url>',
      'OpenID Connect issuer to sign people in with (discovery URL without /.well-known)',
    )
    .option('--oidc-client-id <id>', 'client id registered at the issuer')
    .option('--oidc-client-secret-file <file>', 'file holding the client secret')
    .option('--oidc-allowed-domains <list>', 'comma-separated email domains allowed to sign in')
    .option('--oidc-allowed-users <list>', 'comma-separated email addresses allowed to sign in')
    .option(
      '--oidc-allowed-groups <list>',
      'comma-separated groups (from the groups claim) allowed to sign in',
    )
    .option('--oidc-groups-claim <name>', 'claim holding the person’s groups (default groups)')
    .option('--oidc-scopes <list>', 'scopes to request (default openid,email,profile)')
    .option('--github-client-id <id>', 'GitHub OAuth app client id, to sign in with GitHub')
    .option('--github-client-secret-file <file>', 'file holding the GitHub OAuth app client secret')
    .option('--github-url <url>', 'GitHub web URL (GitHub Enterprise Server; default https://github.com)')
    .option('--github-api-url <url>', 'GitHub API URL (default https://api.github.com)')
    .option(
      '--relays <list>',
      'relay regions sent to every node: ID,NAME,URL,KEY[,STUNPORT] entries separated by spaces or ; (env WEFT_CONTROL_RELAYS)',
    )
    .option(
      '--policy-file <file>',
      'apply this policy file and every good save of it; a bad save is logged and changes nothing',
    )
    .option(
      '--metrics-listen <host:port>',
      'serve Prometheus metrics at http://HOST:PORT/metrics (default: none; they reveal the tailnet size)',
    )
    .option('--log-format <text|json>', 'log lines on stderr as text or as JSON events (default text)')
    .option('--log-level <level>', 'debug, info, warn, error or silent (default info)')
    .action(async (_opts, cmd: Command) => {
      const running = await startControl({ config: config(cmd) });
      await io.untilStopped();
      await running.close();
    });

  const users = program.command('users').description('manage users');
  users
    .command('create <name>')
    .description('create a user')
    .option('--email <email>', 'the user’s email address')
    .action((name: string, opts: { email?: string }, cmd: Command) =>
      withStore(cmd, async (store) => {
        const user = await createUser(store, name, opts.email);
        io.err(`created user ${user.name}\n`);
      }),
    );
  users
    .command('list')
    .description('list users')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) => io.out(formatUsers(await store.listUsers(), opts.json ?? false))),
    );

  program
    .command('preauthkey')
    .description('manage pre-auth keys')
    .command('create')
    .description('create a pre-auth key; prints only the key')
    .requiredOption('--user <name>', 'the user the key registers nodes for')
    .option('--reusable', 'the key may register any number of machines (default: one)')
    .option('--ephemeral', 'nodes registered with it are deleted after going offline')
    .option('--expiration <duration>', 'how long the key is valid, e.g. 30m, 1h, 7d', '1h')
    .option('--tags <tags>', 'comma-separated tags (tag:a,tag:b) the nodes get instead of the user')
    .action(
      (
        opts: { user: string; reusable?: boolean; ephemeral?: boolean; expiration: string; tags?: string },
        cmd: Command,
      ) => withStore(cmd, async (store) => io.out(`${await createPreauthKey(store, opts)}\n`)),
    );

  const nodes = program.command('nodes').description('manage nodes');
  nodes
    .command('list')
    .description('list nodes')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) => io.out(formatNodes(await store.listNodes(), opts.json ?? false))),
    );
  nodes
    .command('delete <name>')
    .description('delete a node; it is logged out and leaves its peers’ maps at once')
    .action((name: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const node = await deleteNode(store, name);
        io.err(`deleted node ${node.name}\n`);
      }),
    );

  nodes
    .command('rename <name> <new-name>')
    .description('rename a node; its peers resolve it by the new name at once')
    .action((name: string, newName: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        await renameNode(store, name, newName);
        io.err(`renamed node ${name} to ${newName}\n`);
      }),
    );
  nodes
    .command('expire <name>')
    .description('expire a node’s key now: it leaves its peers’ maps and must sign in again')
    .action((name: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const node = await expireNode(store, name);
        io.err(`expired the key of ${node.name}\n`);
      }),
    );
  nodes
    .command('expiry <name>')
    .description('disable key expiry on a tagged node, or enable it again with a fresh deadline')
    .option('--disable', 'the node key never expires (tagged nodes only)')
    .option('--enable', 'the node key expires again, --node-key-expiry from now')
    .action((name: string, opts: { disable?: boolean; enable?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) => {
        if (opts.disable === opts.enable) throw new CliError('give exactly one of --disable and --enable');
        const node = await setNodeKeyExpiry(store, name, opts.enable === true, config(cmd).nodeKeyExpiryMs);
        io.err(
          `${node.name}: key ${node.keyExpiry === null ? 'never expires' : `expires ${node.keyExpiry}`}\n`,
        );
      }),
    );

  const apikeys = program.command('apikey').description('manage admin API keys');
  apikeys
    .command('create')
    .description('create an API key for /api/v1/; prints only the key')
    .option('--expiration <duration>', 'how long the key is valid, e.g. 30d', '90d')
    .action((opts: { expiration: string }, cmd: Command) =>
      withStore(cmd, async (store) => io.out(`${await createApiKey(store, opts.expiration)}\n`)),
    );
  apikeys
    .command('list')
    .description('list API keys (their prefixes; the keys themselves are not stored)')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) => io.out(formatApiKeys(await store.listApiKeys(), opts.json ?? false))),
    );
  apikeys
    .command('revoke <prefix>')
    .description('revoke an API key by its prefix')
    .action((prefix: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        await revokeApiKey(store, prefix);
        io.err(`revoked API key ${prefix}\n`);
      }),
    );

  registerPolicyCommands(program, io, withStore);
  registerRoutesCommands(program, io, withStore);
  registerDbCommands(program, io, (cmd) => config(cmd).db);
  registerDnsCommands(program, io, withStore);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    io.err(`weft-control: ${errorText(err)}\n`);
    return 1;
  }
}
