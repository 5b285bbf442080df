import { readFileSync } from 'node:fs';

// What the benchmarks read about a process from Linux's /proc. A subpath export
// (@weft/protocol/proc): Linux and Node only, and nothing of Weft reads it at run time.

/** Linux's USER_HZ, the unit of /proc's CPU times: 100 on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;

/** `pid` as a ChildProcess gives it (undefined when the process never started), or this process. */
function procFile(pid: number | 'self' | undefined, file: 'stat' | 'status'): string {
  if (pid === undefined) throw new Error('no process id: the process never started');
  return readFileSync(`/proc/${pid}/${file}`, 'utf8');
}

/**
 * CPU seconds (user + system) the process `pid` has used so far: its own, and its children's that
 * it has waited for (the commands a helper runs, once they have exited).
 */
export function cpuTimes(pid: number | 'self' | undefined): { own: number; children: number } {
  const stat = procFile(pid, 'stat');
  // Fields after the command's name in parentheses (which may hold either): utime, stime, cutime
  // and cstime are the 12th to the 15th of them.
  const [utime = Number.NaN, stime = Number.NaN, cutime = Number.NaN, cstime = Number.NaN] = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .slice(11, 15)
    .map(Number);
  return { own: (utime + stime) / TICKS_PER_SECOND, children: (cutime + cstime) / TICKS_PER_SECOND };
}

/** CPU seconds (user + system) the process `pid` has used so far, its own. */
export const cpuSeconds = (pid: number | undefined): number => cpuTimes(pid).own;

/** The resident memory of the process `pid`, in bytes (VmRSS). */
export function rssBytes(pid: number | undefined): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(procFile(pid, 'status'));
  if (m === null) throw new Error(`no VmRSS for process ${pid}: it has exited`);
  return Number(m[1]) * 1024;
}
