#!/usr/bin/env node
import { Command } from 'commander';
import { lookupGroupId } from './group.js';
import { stderrLogger as log } from './log.js';
import { platformBackend } from './platform.js';
import { HelperServer } from './server.js';

// weft-helper: the only privileged Weft process. It listens on a local socket for complete desired
// states from the engine and converges the OS to them; on SIGTERM or SIGINT it takes down what it
// created, so stopping it puts the machine back as it was.

const DEFAULT_SOCKET = '/run/weft/helper.sock';

async function main(): Promise<void> {
  const program = new Command('weft-helper')
    .description(
      'Weft privileged helper: WireGuard interfaces, addresses and routes, from one validated command',
    )
    .option('--socket <path>', 'unix socket to listen on', DEFAULT_SOCKET)
    .option(
      '--group <name>',
      'let members of this group use the socket (mode 0660); default: root only (0600)',
    )
    .showHelpAfterError()
    .parse();
  const opts = program.opts<{ socket: string; group?: string }>();

  const backend = platformBackend(log);
  const gid = opts.group === undefined ? undefined : await lookupGroupId(opts.group);
  const server = new HelperServer({ backend, log });
  await server.listen(opts.socket, gid);
  log.info(`listening on ${opts.socket}${opts.group === undefined ? '' : ` for group ${opts.group}`}`);

  let stopping = false;
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: taking down the interfaces this helper created`);
    await server.close();
    await backend.shutdown();
    process.exit(0);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      stop(signal).catch((e: unknown) => {
        log.error(`shutdown failed: ${(e as Error).message}`);
        process.exit(1);
      });
    });
  }
}

main().catch((e: unknown) => {
  log.error((e as Error).message);
  process.exit(1);
});
