import type { ChildExit, ChildHandle } from './runner.js';

/** The child's exit if it comes within `ms`, otherwise null. */
export async function exitWithin(child: ChildHandle, ms: number): Promise<ChildExit | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM, then SIGKILL if the process is still there after `graceMs`. */
export async function stopProcess(child: ChildHandle, graceMs: number): Promise<void> {
  child.kill('SIGTERM');
  if ((await exitWithin(child, graceMs)) !== null) return;
  child.kill('SIGKILL');
  if ((await exitWithin(child, graceMs)) === null) {
    throw new Error(`process ${child.pid} did not exit after SIGKILL`);
  }
}

export function describeExit(exit: ChildExit): string {
  if (exit.error !== undefined) return `could not start (${exit.error.message})`;
  return exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}
