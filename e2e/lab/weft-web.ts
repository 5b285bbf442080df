import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { BIN } from './weft.js';

// The real `weft web`, as a person starts it next to weftd: the built CLI, its URL read from the
// first line of stdout, stopped with SIGTERM (it must exit 0). Its log goes to DIR/weft-web.log.

export interface WeftWeb {
  url: string;
  origin: string;
  child: ChildProcess;
  stop(): Promise<number | null>;
}

export async function startWeftWeb(socket: string, dir: string, extraArgs: string[] = []): Promise<WeftWeb> {
  const child = spawn(
    process.execPath,
    [BIN.weft, '--socket', socket, 'web', '--prefs-file', join(dir, 'web-shell.json'), ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log = createWriteStream(join(dir, 'weft-web.log'), { flags: 'a' });
  child.stderr?.pipe(log);
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`weft web printed no URL in 15 s: ${out}`)), 15_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`weft web exited with ${code} before printing its URL (see ${dir}/weft-web.log)`));
    });
  });
  return {
    url,
    origin: new URL(url).origin,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000));
      const code = await Promise.race([exited, timeout]);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        return null;
      }
      return code;
    },
  };
}
