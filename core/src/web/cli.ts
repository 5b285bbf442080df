import type { Command } from 'commander';
import { stderrLogger } from '../log/logger.js';
import { defaultPrefsFile, startWebCommand } from './command.js';

/** `weft web`: prints the shell's URL (with its token) as the first line of stdout, then serves. */
export function addWebCommand(program: Command, socket: () => string): void {
  program
    .command('web')
    .description(
      'serve the desktop UI to a browser; prints its URL (with a one-time token), then serves until interrupted',
    )
    .option('--listen <address:port>', 'where to listen; loopback only unless --allow-remote', '127.0.0.1:0')
    .option('--renderer-dir <dir>', 'the built desktop UI (default: found next to the installed packages)')
    .option('--prefs-file <path>', `the UI's own settings (default: ${defaultPrefsFile()})`)
    .option(
      '--allow-remote',
      'allow a non-loopback --listen address (the token then crosses the network in clear)',
    )
    .option('--verbose', 'log debug messages')
    .action(
      async (o: {
        listen: string;
        rendererDir?: string;
        prefsFile?: string;
        allowRemote?: boolean;
        verbose?: boolean;
      }) => {
        const log = stderrLogger('weft-web', o.verbose ? 'debug' : 'info');
        const running = await startWebCommand({
          socket: socket(),
          listen: o.listen,
          rendererDir: o.rendererDir,
          prefsFile: o.prefsFile,
          allowRemote: o.allowRemote,
          log,
        });
        process.stdout.write(`${running.shell.url}\n`);
        const signal = await new Promise<string>((resolve) => {
          process.once('SIGINT', () => resolve('SIGINT'));
          process.once('SIGTERM', () => resolve('SIGTERM'));
        });
        log.info(`${signal}: stopping`);
        await running.close();
        process.exit(0);
      },
    );
}
