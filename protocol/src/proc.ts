import { readFileSync } from 'node:fs';

// What the benchmarks read about a process from Linux's /proc. A subpath export
// (@weft/protocol/proc): Linux and Node only, and nothing of Weft reads it at run time.

/** Linux's USER_HZ, the unit of /proc's CPU times: 100 on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;

/** `pid` as a ChildProcess gives it: undefined when the process never started. */
function procFile(pid: number | undefined, file: 'stat' | 'status'): string {
  if (pid === undefined) throw new Error('no process id: the process never started');
  return readFileSync(`/proc/${pid}/${file}`, 'utf8');
}

/** CPU seconds (user + system) the process `pid` has used so far. */
export function cpuSeconds(pid: number | undefined): number {
  const stat = procFile(pid, 'stat');
  // Fields after the command's name in parentheses (which may hold either): utime and stime are
  // the 12th and 13th of them.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** The resident memory of the process `pid`, in bytes (VmRSS). */
export function rssBytes(pid: number | undefined): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(procFile(pid, 'status'));
  if (m === null) throw new Error(`no VmRSS for process ${pid}: it has exited`);
  return Number(m[1]) * 1024;
}
