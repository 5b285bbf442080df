import type { Host } from './lab.js';
import { sleep } from './lab.js';

// One bounded iperf3 TCP run between two lab hosts, as the benchmarks take it.

export interface IperfResult {
  /** Received throughput, Mbit/s. */
  mbps: number;
  /** The client's command line, for the benchmark's printout. */
  cmd: string;
}

/**
 * A fresh one-shot server in `server`'s namespace, a client in `client`'s to `target`, `seconds` long
 * after `omitS` seconds that are sent but not counted (TCP's start, a path still settling).
 */
export async function iperf(
  client: Host,
  server: Host,
  target: string,
  seconds: number,
  port = 5201,
  omitS = 0,
): Promise<IperfResult> {
  const srv = server.spawn(['iperf3', '-s', '-1', '-p', String(port)]);
  await sleep(500);
  const argv = [
    'iperf3',
    '-c',
    target,
    '-p',
    String(port),
    '-t',
    String(seconds),
    ...(omitS > 0 ? ['-O', String(omitS)] : []),
    '--connect-timeout',
    '3000',
    '-J',
  ];
  try {
    const r = await client.exec(['timeout', String(seconds + omitS + 15), ...argv], {
      timeoutMs: (seconds + omitS + 20) * 1000,
    });
    const j = JSON.parse(r.stdout || '{}') as {
      end?: { sum_received?: { bits_per_second?: number } };
      error?: string;
    };
    const bps = j.end?.sum_received?.bits_per_second;
    if (!bps) throw new Error(`iperf3 to ${target}: ${j.error ?? (r.stderr || 'no result')}`);
    return { mbps: bps / 1e6, cmd: `ip netns exec ${client.ns} ${argv.join(' ')}` };
  } finally {
    if (srv.exitCode === null) srv.kill('SIGTERM');
  }
}
