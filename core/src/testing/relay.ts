import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitUntil } from './wait.js';

// The real `weft-relay` binary (built by `npm run build`; core does not import the relay's code)
// on loopback, for tests of core's relay side.

const RELAY_BIN = fileURLToPath(new URL('../../../relay/dist/cli/main.js', import.meta.url));

export interface Relay {
  url: string;
  key: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/**
 * Starts weft-relay on 127.0.0.1 (a free port, kept across restarts). `cleanup` is given what
 * stops it and removes its state folder, to run after the test (in reverse order of registration).
 * `serving` says whom it serves: by default `--open` (these tests' node keys are in no tailnet).
 */
export async function weftRelay(
  cleanup: (fn: () => Promise<unknown> | unknown) => void,
  serving: string[] = ['--open'],
): Promise<Relay> {
  if (!existsSync(RELAY_BIN)) throw new Error(`${RELAY_BIN} is not built: run npm run build`);
  const dir = await mkdtemp(join(tmpdir(), 'weft-core-relay-'));
  cleanup(() => rm(dir, { recursive: true, force: true }));
  let child: ChildProcess | null = null;
  let port = 0;
  let key = '';
  const start = async () => {
    const c = spawn(
      process.execPath,
      [
        RELAY_BIN,
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--reflector-port',
        '0',
        '--state-dir',
        dir,
        ...serving,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = c;
    let out = '';
    c.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    await waitUntil(
      'weft-relay to listen',
      () => /listening on ws:\/\/127\.0\.0\.1:(\d+)\/relay/.test(out),
      10_000,
    );
    port = Number(/127\.0\.0\.1:(\d+)\/relay/.exec(out)?.[1]);
    key = /key (\S+)/.exec(out)?.[1] as string;
  };
  const stop = async () => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGTERM');
    await exited;
  };
  await start();
  cleanup(stop);
  return {
    get url() {
      return `ws://127.0.0.1:${port}/relay`;
    },
    get key() {
      return key;
    },
    get port() {
      return port;
    },
    start,
    stop,
  };
}
