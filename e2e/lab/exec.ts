import { execFile } from 'node:child_process';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs an argument vector (never a shell string) with a time limit; never throws on exit code. */
export function run(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('run: empty argv');
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like run, but throws with the command and its stderr when it fails. */
export async function must(
  argv: string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0)
    throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}
