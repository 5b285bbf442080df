import { execFile, spawn } from 'node:child_process';

// Every OS change goes through a Runner as an argument vector: never a shell, so no field of a
// request can become shell syntax, and unit tests can record exactly which commands would run.

const COMMAND_TIMEOUT_MS = 15_000;
/** `ip` and `wg` print errors the backend recognises (such as "does not exist") only in English. */
const COMMAND_ENV = { ...process.env, LC_ALL: 'C' };

export interface Runner {
  /** Runs a command to completion and returns its stdout; rejects with CommandError when it fails. */
  run(argv: readonly string[]): Promise<string>;
  /** Starts a long-running command (wireguard-go) whose output goes to the helper's stderr. */
  start(argv: readonly string[], env: Record<string, string>): ChildHandle;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the program could not be started at all (e.g. not installed). */
  error?: Error;
}

export interface ChildHandle {
  readonly pid: number | undefined;
  readonly exited: Promise<ChildExit>;
  /** Signals this process by its PID; a no-op once it has exited. */
  kill(signal: NodeJS.Signals): void;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(
      `${formatCommand(argv)}: ${exitCode === null ? 'did not finish' : `exit ${exitCode}`}: ${stderr.trim()}`,
    );
    this.name = 'CommandError';
  }
}

/** A command as a reader would type it: arguments that are empty or unusual are quoted. */
export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

export const execRunner: Runner = {
  run(argv) {
    const [cmd, ...args] = argv;
    if (cmd === undefined) return Promise.reject(new Error('empty command'));
    return new Promise((resolve, reject) => {
      execFile(
        cmd,
        args,
        { env: COMMAND_ENV, timeout: COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err === null) resolve(stdout);
          else
            reject(
              new CommandError(argv, typeof err.code === 'number' ? err.code : null, stderr || err.message),
            );
        },
      );
    });
  },

  start(argv, env) {
    const [cmd, ...args] = argv;
    if (cmd === undefined) throw new Error('empty command');
    const child = spawn(cmd, args, { env: { ...COMMAND_ENV, ...env }, stdio: ['ignore', 2, 2] });
    const exited = new Promise<ChildExit>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    return {
      pid: child.pid,
      exited,
      // ChildProcess.kill signals this child's PID and does nothing once it has been reaped.
      kill: (signal) => void child.kill(signal),
    };
  },
};
