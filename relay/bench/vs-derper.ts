import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, rssBytes } from '@weft/protocol/proc';
import { derpLoad, holdIdle } from './derp-load.js';
import { parseWholeOptions } from './options.js';

// weft-relay against Tailscale's derper (tailscale.com/cmd/derper v1.102.5) under the same DERP
// load, in the same run: one TypeScript DERP client (derp-load.ts) drives both, N sender→receiver
// pairs with a window of packets in flight each, timestamps in the packets for latency. Both relays serve plain HTTP on loopback, derper with
// -stun=false, weft-relay --open (the load's keys belong to no tailnet).
//
//   npm run bench -- relay-vs-derper [--pairs N] [--size BYTES] [--seconds S] [--window PKTS] [--conns N]

const BIN = process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin';
const DERPER = join(BIN, 'derper');
const TS_VERSION = 'v1.102.5';

interface Options {
  pairs: number;
  size: number;
  seconds: number;
  window: number;
  conns: number;
}

interface Result {
  gbitPerCore: number;
  gbitWall: number;
  cpu: number;
  wall: number;
  p50us: number;
  p99us: number;
  rssPerConnKiB: number;
}

function parseOptions(argv: string[]): Options {
  return parseWholeOptions(
    argv,
    { pairs: 4, size: 1452, seconds: 5, window: 32, conns: 500 },
    { pairs: [1, 64], size: [16, 65_536], seconds: [1, 60], window: [1, 4_096], conns: [10, 5_000] },
    'relay-vs-derper [--pairs 1-64] [--size 16-65536] [--seconds 1-60] [--window 1-4096] [--conns 10-5000]',
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function probe(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once('error', () => resolve(false));
    req.end();
  });
}

async function waitProbe(base: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${base}: the relay exited (${child.exitCode})`);
    if (await probe(`${base}/derp/probe`)) return;
    await sleep(50);
  }
  throw new Error(`${base}: no answer on /derp/probe in 10 s`);
}

async function measure(name: string, url: string, pid: number, opts: Options): Promise<Result> {
  let at = { t: 0, cpu: 0 };
  let cpu = 0;
  let wall = 0;
  const load = await derpLoad(url, opts, {
    start: () => {
      at = { t: performance.now(), cpu: cpuSeconds(pid) };
    },
    end: () => {
      cpu = cpuSeconds(pid) - at.cpu;
      wall = (performance.now() - at.t) / 1000;
    },
  });
  const gbit = (load.bytes * 8) / 1e9;
  // Memory: the relay's RSS with `conns` idle logged-in clients, over its RSS just before.
  const before = rssBytes(pid);
  let during = before;
  await holdIdle(url, opts.conns, () => {
    during = rssBytes(pid);
  });
  console.error(`${name}: done`);
  return {
    gbitPerCore: gbit / cpu,
    gbitWall: gbit / wall,
    cpu,
    wall,
    p50us: load.p50us,
    p99us: load.p99us,
    rssPerConnKiB: (during - before) / opts.conns / 1024,
  };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(3_000).then(() => child.kill('SIGKILL'))]);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(DERPER))
    throw new Error(`${DERPER} is missing: install Go and run scripts/setup-tailscale.sh`);
  const dir = mkdtempSync(join(tmpdir(), 'weft-vs-derper-'));
  const children: ChildProcess[] = [];
  try {
    const weftPort = await freePort();
    const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
    const weftArgs = [
      cli,
      'serve',
      '--listen',
      `127.0.0.1:${weftPort}`,
      '--reflector-port',
      '0',
      '--state-dir',
      join(dir, 'weft'),
      '--open',
      '--max-connections-per-source',
      `${opts.conns + 2 * opts.pairs + 10}`,
    ];
    const weft = spawn(process.execPath, weftArgs, { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(weft);
    const derperPort = await freePort();
    const derperArgs = ['-a', `127.0.0.1:${derperPort}`, '-c', join(dir, 'derper.key'), '-stun=false'];
    const derper = spawn(DERPER, derperArgs, { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(derper);
    const weftBase = `http://127.0.0.1:${weftPort}`;
    const derperBase = `http://127.0.0.1:${derperPort}`;
    await Promise.all([waitProbe(weftBase, weft), waitProbe(derperBase, derper)]);

    const w = await measure('weft-relay', `${weftBase}/derp`, weft.pid as number, opts);
    const d = await measure('derper', `${derperBase}/derp`, derper.pid as number, opts);

    const f = (n: number, digits = 2) => n.toFixed(digits);
    const row = (label: string, a: string, b: string, ratio: string) =>
      `${label.padEnd(26)}${a.padStart(14)}${b.padStart(14)}${ratio.padStart(16)}`;
    console.log(
      [
        `relay-vs-derper: ${opts.pairs} pairs of DERP clients (relay/bench/derp-load.ts, one Node process), ${opts.size}-byte packets, window ${opts.window} packets, ${opts.seconds} s after 1 s warm-up; memory with ${opts.conns} idle clients; loopback, ${availableParallelism()} CPUs shared with the load`,
        `command: npm run bench -- relay-vs-derper --pairs ${opts.pairs} --size ${opts.size} --seconds ${opts.seconds} --window ${opts.window} --conns ${opts.conns}`,
        `weft-relay: node ${weftArgs.join(' ')}`,
        `derper:     ${DERPER} ${derperArgs.join(' ')}  (tailscale.com/cmd/derper ${TS_VERSION}, ${process.version.replace(/^v/, 'node ')} for weft-relay)`,
        row('', 'weft-relay', 'derper', 'weft / derper'),
        row(
          'Gbit/s per relay core',
          f(w.gbitPerCore),
          f(d.gbitPerCore),
          `${f(w.gbitPerCore / d.gbitPerCore)}x`,
        ),
        row('Gbit/s wall clock', f(w.gbitWall), f(d.gbitWall), `${f(w.gbitWall / d.gbitWall)}x`),
        row('relay CPU s / wall s', `${f(w.cpu)}/${f(w.wall)}`, `${f(d.cpu)}/${f(d.wall)}`, ''),
        row('latency p50 (µs)', f(w.p50us, 0), f(d.p50us, 0), `${f(w.p50us / d.p50us)}x`),
        row('latency p99 (µs)', f(w.p99us, 0), f(d.p99us, 0), `${f(w.p99us / d.p99us)}x`),
        row(
          'RSS per connection (KiB)',
          f(w.rssPerConnKiB, 1),
          f(d.rssPerConnKiB, 1),
          `${f(w.rssPerConnKiB / d.rssPerConnKiB)}x`,
        ),
        'goal (issue 11): weft-relay >= 2x derper in Gbit/s per core. One run: figures on a shared machine are noisy.',
      ].join('\n'),
    );
  } finally {
    await Promise.all(children.map(stop));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
