import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';

// Test support: the built `weft-control` binary as a real process (to SIGTERM or SIGKILL it).

export const repoRoot = join(import.meta.dirname, '../../..');
export const controlBin = join(repoRoot, 'control/dist/cli/main.js');

/** Builds control (a no-op when the build is current); call from beforeAll. */
export function buildControl(): void {
  execFileSync('npx', ['tsc', '-b', 'control'], { cwd: repoRoot, stdio: 'inherit' });
}

/** Starts `weft-control serve --listen 127.0.0.1:0 ARGS` and resolves with its URL once it listens. */
export async function serveProcess(
  args: string[],
  cwd: string,
): Promise<{ child: ChildProcess; url: string; logs: () => string }> {
  const child = spawn(process.execPath, [controlBin, 'serve', '--listen', '127.0.0.1:0', ...args], {
    cwd,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr?.on('data', (d) => {
      logs += d;
      const m = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(logs);
      if (m) resolve(m[1] as string);
    });
    child.on('exit', () => reject(new Error(`serve exited: ${logs}`)));
  });
  return { child, url, logs: () => logs };
}
