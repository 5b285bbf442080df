import { setTimeout as sleep } from 'node:timers/promises';
import { generateKeyPair } from '@weft/protocol';
import { DerpClient } from '@weft/relay/derp-client';

// DERP load for comparing relays: the same TypeScript DERP client (relay/src/derp/client.ts, over
// the relay's own framing code) drives whichever relay it is pointed at, so two relays measured
// in one run see the same load. Sender→receiver pairs, each with at most `window` packets in
// flight; a packet's first 8 bytes are its send time, so receivers measure one-way latency on one
// clock.

export interface LoadOptions {
  pairs: number;
  size: number;
  window: number;
  seconds: number;
}

export interface LoadResult {
  bytes: number;
  seconds: number;
  packets: number;
  p50us: number;
  p99us: number;
}

/** What the caller samples (the relay's CPU time) exactly around the measured seconds. */
export interface Window {
  start(): void;
  end(): void;
}

const WARMUP_MS = 1_000;
/** Nothing arrived for this long: count the window as lost (a relay may drop), send again. */
const LOST_MS = 50;

async function login(url: string): Promise<{ client: DerpClient; key: Uint8Array }> {
  const keys = generateKeyPair();
  const client = await DerpClient.connect(url, keys);
  await client.loggedIn();
  return { client, key: new Uint8Array(Buffer.from(keys.publicKey, 'base64')) };
}

export async function derpLoad(url: string, opts: LoadOptions, window: Window): Promise<LoadResult> {
  const clients: DerpClient[] = [];
  const latencies: number[] = [];
  let measuring = false;
  let stopped = false;
  let bytes = 0;
  const timers: NodeJS.Timeout[] = [];
  try {
    for (let i = 0; i < opts.pairs; i++) {
      const [src, dst] = await Promise.all([login(url), login(url)]);
      clients.push(src.client, dst.client);
      const packet = Buffer.alloc(opts.size);
      const send = () => {
        packet.writeDoubleBE(performance.now(), 0);
        src.client.send(dst.key, packet);
      };
      let arrived = 0;
      dst.client.on('packet', (_source, data) => {
        arrived++;
        if (measuring) {
          bytes += data.length;
          latencies.push((performance.now() - data.readDoubleBE(0)) * 1000);
        }
        if (!stopped) send();
      });
      let seen = 0;
      timers.push(
        setInterval(() => {
          if (arrived === seen && !stopped) for (let n = 0; n < opts.window; n++) send();
          seen = arrived;
        }, LOST_MS),
      );
      for (let n = 0; n < opts.window; n++) send();
    }
    await sleep(WARMUP_MS);
    window.start();
    measuring = true;
    const start = performance.now();
    await sleep(opts.seconds * 1000);
    measuring = false;
    const seconds = (performance.now() - start) / 1000;
    window.end();
    stopped = true;
    latencies.sort((a, b) => a - b);
    const pct = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
    return { bytes, seconds, packets: latencies.length, p50us: pct(0.5), p99us: pct(0.99) };
  } finally {
    stopped = true;
    for (const t of timers) clearInterval(t);
    for (const c of clients) c.close();
  }
}

/** Logs `conns` clients in (a few at a time), calls `whileConnected`, then closes them all. */
export async function holdIdle(url: string, conns: number, whileConnected: () => void): Promise<void> {
  const clients: DerpClient[] = [];
  try {
    for (let i = 0; i < conns; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, conns - i) }, () => login(url)));
      clients.push(...batch.map((b) => b.client));
    }
    whileConnected();
  } finally {
    for (const c of clients) c.close();
  }
}
