#!/usr/bin/env node
import { InterfaceName } from '@weft/protocol';
import { Command, Option } from 'commander';
import { parseDuration } from '../cli/duration.js';
import { DEFAULT_KEY_ROTATION_MS } from '../control-client/rotation.js';
import { Engine } from '../engine/engine.js';
import { HelperClient } from '../helper/client.js';
import { LocalApiServer } from '../localapi/server.js';
import { DEFAULT_HELPER_SOCKET, DEFAULT_SOCKET, DEFAULT_STATE_DIR } from '../locations.js';
import { describeError, stderrLogger } from '../log/logger.js';
import { StateStore } from '../state/store.js';

// weftd: the engine as a headless daemon. Logs go to stderr; it never prompts; SIGTERM or SIGINT
// takes the interface down through the helper and exits 0 (prefs are kept, so the next start
// brings the tunnel back, from the cached netmap even before control answers).

const program = new Command('weftd')
  .description('Weft engine: keeps this node in its tailnet and drives weft-helper')
  .option('--state-dir <dir>', 'where keys, prefs and the last netmap are kept', DEFAULT_STATE_DIR)
  .option('--socket <path>', 'the LocalAPI unix socket', process.env.WEFT_SOCKET ?? DEFAULT_SOCKET)
  .option('--helper-socket <path>', "weft-helper's unix socket", DEFAULT_HELPER_SOCKET)
  .option('--interface <name>', 'the WireGuard interface name', 'weft0')
  .addOption(
    new Option('--key-rotation <duration>', "how often to rotate the node's WireGuard key, or 'off'")
      .env('WEFT_KEY_ROTATION')
      .default('30d'),
  )
  .option('--verbose', 'log debug messages')
  .showHelpAfterError()
  .parse();

const opts = program.opts<{
  stateDir: string;
  socket: string;
  helperSocket: string;
  interface: string;
  keyRotation: string;
  verbose?: boolean;
}>();

const log = stderrLogger('weftd', opts.verbose ? 'debug' : 'info');

async function main(): Promise<void> {
  if (!InterfaceName.safeParse(opts.interface).success) {
    throw new Error(
      `invalid --interface '${opts.interface}': 1-15 letters, digits, _ or -, starting with a letter`,
    );
  }
  const keyRotationMs = opts.keyRotation === 'off' ? null : parseDuration(opts.keyRotation);
  if (keyRotationMs === null && opts.keyRotation !== 'off') {
    throw new Error(`invalid --key-rotation '${opts.keyRotation}': use e.g. 30d, 12h, 20s, or off`);
  }
  if (keyRotationMs !== DEFAULT_KEY_ROTATION_MS)
    log.info(`node key rotation: ${keyRotationMs === null ? 'off' : opts.keyRotation}`);
  const helper = new HelperClient(opts.helperSocket, { log });
  const engine = new Engine({
    store: new StateStore(opts.stateDir),
    helper,
    interfaceName: opts.interface,
    log,
    keyRotationMs,
  });
  await engine.start();
  const api = new LocalApiServer(engine, log);
  await api.listen(opts.socket);
  log.info(`LocalAPI listening on ${opts.socket}`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: taking the tunnel down and exiting`);
    // A helper that hangs must not keep a supervisor waiting for ever.
    setTimeout(() => {
      log.error('shutdown took too long; exiting without confirmation that the tunnel is down');
      process.exit(1);
    }, 15_000).unref();
    await api.close();
    await engine.shutdown();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  log.error(describeError(err));
  process.exit(1);
});
