import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { RelayConnection } from '@weft/core';
import { generateKeyPair, RELAY_MAX_PACKET_BYTES } from '@weft/protocol';
import { cpuSeconds } from '@weft/protocol/proc';
import { parseWholeOptions } from './options.js';

// Relay forwarding capacity: the real weft-relay binary in its own process, synthetic node pairs
// on loopback in worker threads (one sender and one receiver each), counting what arrives.
// The figure that matters is bits forwarded per second of the relay's own CPU time ("per core"),
// since the clients share the machine; wall-clock throughput is printed alongside.
//
//   npm run bench -- relay [--pairs N] [--size BYTES] [--seconds S]

interface Options {
  pairs: number;
  size: number;
  seconds: number;
}

interface WorkerInput {
  url: string;
  relayKey: string;
  size: number;
  /** Per pair: [sentPackets, receivedPackets, receivedBytes]. */
  counters: SharedArrayBuffer;
  slot: number;
}

const WARMUP_S = 1;
const QUEUE_BYTES = 1024 * 1024;
const WINDOW_BYTES = 2 * 1024 * 1024;

function parseOptions(argv: string[]): Options {
  return parseWholeOptions(
    argv,
    { pairs: 2, size: 1452, seconds: 5 },
    { pairs: [1, 16], size: [32, RELAY_MAX_PACKET_BYTES], seconds: [1, 60] },
    `forwarding [--pairs 1-16] [--size 32-${RELAY_MAX_PACKET_BYTES}] [--seconds 1-60]`,
  );
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const stateDir = mkdtempSync(join(tmpdir(), 'weft-relay-bench-'));
  const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  const relay = spawn(
    process.execPath,
    // --open: the synthetic clients' keys belong to no tailnet.
    [cli, 'serve', '--listen', '127.0.0.1:0', '--reflector-port', '0', '--state-dir', stateDir, '--open'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const workers: Worker[] = [];
  try {
    const [line] = (await Promise.race([once(relay.stdout, 'data'), once(relay, 'exit')])) as [unknown];
    if (!Buffer.isBuffer(line)) throw new Error(`weft-relay exited (${line}) before listening`);
    const m = /listening on (\S+), .* key (\S+)/.exec(line.toString());
    if (m === null) throw new Error(`unexpected relay output: ${line.toString()}`);
    const counters = new SharedArrayBuffer(opts.pairs * 3 * 8);
    const totals = new Float64Array(counters);
    for (let slot = 0; slot < opts.pairs; slot++) {
      const input: WorkerInput = {
        url: m[1] as string,
        relayKey: m[2] as string,
        size: opts.size,
        counters,
        slot,
      };
      workers.push(new Worker(new URL(import.meta.url), { workerData: input }));
    }
    await Promise.all(workers.map((w) => once(w, 'message')));
    for (const w of workers) w.postMessage('go');

    const snapshot = () => {
      let sent = 0;
      let packets = 0;
      let bytes = 0;
      for (let i = 0; i < opts.pairs; i++) {
        sent += totals[i * 3] as number;
        packets += totals[i * 3 + 1] as number;
        bytes += totals[i * 3 + 2] as number;
      }
      return { at: performance.now(), cpu: cpuSeconds(relay.pid), sent, packets, bytes };
    };
    await sleep(WARMUP_S * 1000);
    const a = snapshot();
    await sleep(opts.seconds * 1000);
    const b = snapshot();

    const wall = (b.at - a.at) / 1000;
    const cpu = b.cpu - a.cpu;
    const packets = b.packets - a.packets;
    const gbit = ((b.bytes - a.bytes) * 8) / 1e9;
    const lost = Math.max(0, b.sent - a.sent - packets);
    const f = (n: number, d = 2) => n.toFixed(d);
    console.log(
      [
        `relay forwarding: ${opts.pairs} pairs, ${opts.size}-byte packets, ${opts.seconds} s after ${WARMUP_S} s warm-up, loopback, ${availableParallelism()} CPUs`,
        `command: npm run bench -- relay --pairs ${opts.pairs} --size ${opts.size} --seconds ${opts.seconds}`,
        `forwarded ${packets} packets (${f(gbit)} Gbit); relay CPU ${f(cpu)} s in ${f(wall)} s wall (${f(cpu / wall)} cores busy); in flight or lost ${lost}`,
        `wall clock:       ${f(gbit / wall)} Gbit/s, ${f(packets / wall, 0)} packets/s`,
        `per relay core:   ${f(gbit / cpu)} Gbit/s, ${f(packets / cpu, 0)} packets/s (issue 3 goal: 2 Gbit/s per core)`,
      ].join('\n'),
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    relay.kill('SIGTERM');
    await once(relay, 'exit');
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** One pair: a sender that keeps its socket's queue full, and a receiver that counts. */
async function pair(input: WorkerInput): Promise<void> {
  const counts = new Float64Array(input.counters, input.slot * 3 * 8, 3);
  const make = () => {
    const keys = generateKeyPair();
    const conn = new RelayConnection({
      url: input.url,
      nodePrivateKey: keys.privateKey,
      nodeKey: keys.publicKey,
      relayKey: input.relayKey,
      maxQueueBytes: QUEUE_BYTES,
    });
    return { conn, key: Buffer.from(keys.publicKey, 'base64') };
  };
  const { conn: sender } = make();
  const { conn: receiver, key: receiverKey } = make();
  receiver.on('packet', (_from, packet) => {
    counts[1] = (counts[1] as number) + 1;
    counts[2] = (counts[2] as number) + packet.length;
  });
  const connected = [once(sender, 'up'), once(receiver, 'up')];
  sender.start();
  receiver.start();
  await Promise.all(connected);
  const port = parentPort as NonNullable<typeof parentPort>;
  port.postMessage('ready');
  await once(port, 'message');
  const packet = new Uint8Array(input.size).fill(0xa5);
  // Closed loop: at most WINDOW_BYTES in flight, so the relay forwards rather than drops.
  const window = Math.max(1, Math.floor(WINDOW_BYTES / input.size));
  for (;;) {
    while ((counts[0] as number) - (counts[1] as number) < window && sender.send(receiverKey, packet)) {
      counts[0] = (counts[0] as number) + 1;
    }
    await new Promise((r) => setImmediate(r));
  }
}

if (isMainThread) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
} else {
  void pair(workerData as WorkerInput);
}
