#!/usr/bin/env node
import { Command } from 'commander';
import { lookupGroupId } from './group.js';
import { stderrLogger as log } from './log.js';
import { platformBackend } from './platform.js';
import { HelperServer } from './server.js';

// weft-helper: the only privileged Weft process. It listens on a local socket for complete desired
// states from the engine and converges the OS to them. SIGINT takes down everything it created, so
// stopping it that way puts the machine back as it was. SIGTERM (a restart or package upgrade) leaves
// everything in place, kill switch included, for the next helper to take over from its state file:
// an exit-node user's traffic stays refused, not leaked, while no helper runs.

const DEFAULT_SOCKET = '/run/weft-helper/helper.sock';
const DEFAULT_STATE_DIR = '/var/lib/weft-helper';

async function main(): Promise<void> {
  const program = new Command('weft-helper')
    .description(
      'Weft privileged helper: WireGuard interfaces, addresses and routes, from one validated command',
    )
    .option('--socket <path>', 'unix socket to listen on, in a directory only root can write', DEFAULT_SOCKET)
    .option('--state-dir <dir>', 'where it records what it owns on the OS (root only)', DEFAULT_STATE_DIR)
    .option(
      '--resolv-conf <path>',
      'the resolver file it points at the tailnet resolver and restores (without systemd-resolved)',
      '/etc/resolv.conf',
    )
    .option(
      '--group <name>',
      'let members of this group use the socket (mode 0660); default: root only (0600)',
    )
    .showHelpAfterError()
    .parse();
  const opts = program.opts<{ socket: string; stateDir: string; resolvConf: string; group?: string }>();

  const gid = opts.group === undefined ? undefined : await lookupGroupId(opts.group);
  const backend = await platformBackend(log, opts.stateDir, opts.resolvConf);
  const server = new HelperServer({ backend, log });

  // The handlers go in before anything is taken over or listened on: a signal during start-up
  // (a fast restart, a test) must still end in the chosen teardown, never Node's default exit.
  let stopping = false;
  let started: Promise<void> = Promise.resolve();
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await started.catch(() => {});
    await server.close();
    if (signal === 'SIGINT') {
      log.info('SIGINT: taking down everything this helper set up');
      await backend.shutdown();
    } else {
      log.info('SIGTERM: leaving everything in place for the next helper (SIGINT takes it down)');
      await backend.detach();
    }
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

  started = (async () => {
    await backend.restore();
    await server.listen(opts.socket, gid);
  })();
  await started;
  log.info(`listening on ${opts.socket}${opts.group === undefined ? '' : ` for group ${opts.group}`}`);
}

main().catch((e: unknown) => {
  log.error((e as Error).message);
  process.exit(1);
});
