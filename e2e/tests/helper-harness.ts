import type { ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { type DesiredState, HelperResponse, type InterfaceStatus } from '@weft/protocol';
import { afterAll, beforeAll } from 'vitest';
import { BIN, type Host, Lab, REPO, removeScratch, scratchDir, waitFor, withoutFlows } from '../lab/index.js';

// What the weft-helper network tests share: the helper as root runs it inside a lab host, a client
// speaking the helper's protocol exactly as the engine does, and WireGuard key pairs.

export function keyPair(): { privateKey: string; publicKey: string } {
  const pair = generateKeyPairSync('x25519');
  const raw = (k: typeof pair.privateKey, field: 'd' | 'x') =>
    Buffer.from(k.export({ format: 'jwk' })[field] as string, 'base64url').toString('base64');
  return { privateKey: raw(pair.privateKey, 'd'), publicKey: raw(pair.publicKey, 'x') };
}

/** Scratch folders of one test file, removed by `removeAll`. */
export class Scratch {
  private readonly dirs: string[] = [];

  constructor(private readonly lab: () => Lab) {}

  dir(): string {
    const dir = scratchDir(`helper-${this.lab().id}`);
    this.dirs.push(dir);
    return dir;
  }

  removeAll(): void {
    for (const dir of this.dirs.splice(0)) removeScratch(dir);
  }
}

/**
 * The lab of one test file, made before its tests and cleaned up after them. It fails at once, rather
 * than passing vacuously, without root, the lab's tools, the built helper or nft.
 */
export function helperLab(): { readonly lab: Lab; readonly scratch: Scratch } {
  let lab: Lab | undefined;
  const scratch = new Scratch(() => lab as Lab);
  beforeAll(async () => {
    lab = await Lab.create();
    if (!existsSync(BIN.helper)) throw new Error(`${BIN.helper} is missing: run npm run build`);
    if (!existsSync('/usr/sbin/nft')) throw new Error('nft is missing: run scripts/setup.sh');
  });
  afterAll(async () => {
    await lab?.cleanup();
    scratch.removeAll();
  });
  return {
    get lab() {
      return lab as Lab;
    },
    scratch,
  };
}

/** The helper as root runs it, inside a lab host, with its stderr kept for assertions. */
export class Helper {
  readonly log: string[] = [];
  readonly exited: Promise<number | null>;

  private constructor(
    readonly host: Host,
    readonly socket: string,
    readonly child: ChildProcess,
  ) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => this.log.push(...text.split('\n').filter(Boolean)));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /**
   * Starts a helper listening on `socket` and waits until it answers there. Its state file is kept
   * next to the socket, so a helper started again on the same socket takes over from the last one.
   */
  static async start(host: Host, socket: string, args: string[] = []): Promise<Helper> {
    const state = args.includes('--state-dir') ? [] : ['--state-dir', join(dirname(socket), 'state')];
    const helper = new Helper(
      host,
      socket,
      host.spawn(['node', BIN.helper, '--socket', socket, ...state, ...args]),
    );
    await waitFor(`helper socket ${socket}`, async () => {
      if (helper.child.exitCode !== null) throw new Error(`helper exited: ${helper.log.join('\n')}`);
      return canConnect(socket);
    });
    return helper;
  }

  /** Starts a helper with its socket in a fresh scratch folder. */
  static async startIn(host: Host, scratch: Scratch, args: string[] = []): Promise<Helper> {
    return Helper.start(host, join(scratch.dir(), 'helper.sock'), args);
  }

  async connect(): Promise<Client> {
    return Client.connect(this.socket);
  }

  /** One request on a fresh connection. */
  async request(req: unknown): Promise<HelperResponse> {
    const client = await this.connect();
    try {
      return await client.request(req);
    } finally {
      client.close();
    }
  }

  async apply(state: DesiredState): Promise<InterfaceStatus> {
    const answer = await this.request({ id: 1, op: 'apply', state });
    if (!answer.ok) throw new Error(`apply failed: ${answer.error.code}: ${answer.error.message}`);
    return answer.status;
  }

  async down(iface: string): Promise<void> {
    const answer = await this.request({ id: 2, op: 'down', interface: iface });
    if (!answer.ok) throw new Error(`down failed: ${answer.error.code}: ${answer.error.message}`);
  }

  /** Lines the helper logged after `mark` lines (`ran …` for every OS change). */
  changesSince(mark: number): string[] {
    return this.log.slice(mark).filter((l) => l.startsWith('weft-helper: ran '));
  }

  /** SIGINT takes everything down; SIGTERM leaves it all for the next helper; SIGKILL just kills. */
  async terminate(signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    return withTimeout(this.exited, 15_000, 'helper to exit');
  }
}

/** A small NDJSON client, speaking exactly the protocol the engine speaks. */
export class Client {
  private buffered = '';
  private waiting: ((line: string) => void)[] = [];

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffered += text;
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        this.waiting.shift()?.(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
      }
    });
  }

  static connect(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path, () => resolve(new Client(socket)));
      socket.once('error', reject);
    });
  }

  request(req: unknown): Promise<HelperResponse> {
    const line = new Promise<string>((resolve) => this.waiting.push(resolve));
    this.socket.write(`${JSON.stringify(req)}\n`);
    return withTimeout(line, 30_000, 'a helper response').then((l) => HelperResponse.parse(JSON.parse(l)));
  }

  close(): void {
    this.socket.destroy();
  }
}

export function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A leak detector on a router: counts every packet from `src` to `dst` (IPv4 or IPv6) it sees
 * (before any NAT), so a test can show that traffic did not leave in the clear. Called again, it
 * adds another pair to the same detector.
 */
export async function installLeakCounter(router: Host, src: string, dst: string): Promise<void> {
  await router.must(['nft', 'add', 'table', 'inet', 'probe']);
  await router.must([
    'nft',
    'add chain inet probe pre { type filter hook prerouting priority -300; policy accept; }',
  ]);
  const ip = dst.includes(':') ? 'ip6' : 'ip';
  await router.must([
    'nft',
    'add',
    'rule',
    'inet',
    'probe',
    'pre',
    ip,
    'saddr',
    src,
    ip,
    'daddr',
    dst,
    'counter',
  ]);
}

/** Packets the leak detector on `router` has seen, all its pairs together (NaN when it has none). */
export async function leakCount(router: Host): Promise<number> {
  const out = await router.must(['nft', 'list', 'chain', 'inet', 'probe', 'pre']);
  const counts = [...out.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
  return counts.length === 0 ? Number.NaN : counts.reduce((x, y) => x + y, 0);
}

/** `nft list ruleset` in the host: what `down` must leave exactly as it found it. */
export async function ruleset(host: Host): Promise<string> {
  return withoutFlows(await host.must(['nft', 'list', 'ruleset']));
}

/** Runs a Node server script in the host's namespace and waits for it to print `listening`. */
async function startServer(host: Host, script: string, kind: string): Promise<ChildProcess> {
  const child = host.spawn(['node', '-e', script]);
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      child.stdout?.on('data', (d) => String(d).includes('listening') && resolve());
      child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)));
    }),
    10_000,
    `the ${kind} server to listen`,
  );
  return child;
}

/**
 * A tiny TCP server in the host's namespace: on every port given, on every address, it answers
 * `hello PORT from ADDRESS` with the address the connection came from (what the server sees as the
 * source). The lab kills it at cleanup (it is a lab-tracked process).
 */
export async function startTcpServer(host: Host, ports: number[]): Promise<ChildProcess> {
  const script = `
    const net = require('node:net');
    let up = 0;
    for (const port of ${JSON.stringify(ports)}) {
      // A client that exits with connections open resets them; unhandled, that kills the server.
      const answer = (s) => { s.on('error', () => {}); s.end('hello ' + port + ' from ' + String(s.remoteAddress).replace(/^::ffff:/, '') + '\\n'); };
      net.createServer(answer).listen({ port, host: '::' }, () => {
        if (++up === ${ports.length}) console.log('listening');
      });
    }`;
  return startServer(host, script, 'tcp');
}

/** Runs a probe script that prints the answer and exits 0, or exits otherwise; bounded by `timeout(1)`. */
async function probe(host: Host, script: string, timeoutS: number): Promise<string | null> {
  const r = await host.exec(['timeout', String(timeoutS + 2), 'node', '-e', script], {
    timeoutMs: (timeoutS + 4) * 1000,
  });
  return r.code === 0 ? r.stdout.trim() : null;
}

/**
 * Connects from the host to `address:port` and returns what the server said, or null when the
 * connection failed or hung (a dropped SYN): bounded by Node's own timeout and by `timeout(1)`.
 */
export async function tcpProbe(
  host: Host,
  address: string,
  port: number,
  timeoutS = 3,
): Promise<string | null> {
  const script = `
    const s = require('node:net').connect({ host: ${JSON.stringify(address)}, port: ${port}, timeout: ${timeoutS * 1000} });
    s.on('data', (d) => { process.stdout.write(d); process.exit(0); });
    s.on('timeout', () => process.exit(2));
    s.on('error', () => process.exit(1));`;
  return probe(host, script, timeoutS);
}

/**
 * A tiny UDP server in the host's namespace: on every port given, on every address, it answers a
 * datagram with `echo PORT from ADDRESS`, except `send ADDRESS PORT` from this host itself, which
 * makes it send `hi` from its port to there instead (a flow out of this port, for the filter to note).
 */
export async function startUdpEcho(host: Host, ports: number[]): Promise<ChildProcess> {
  const script = `
    const dgram = require('node:dgram');
    let up = 0;
    for (const port of ${JSON.stringify(ports)}) {
      const s = dgram.createSocket({ type: 'udp6' });
      s.on('message', (msg, from) => {
        const address = from.address.replace(/^::ffff:/, '');
        const send = /^send (\\S+) (\\d+)$/.exec(String(msg));
        // A dual-stack socket sends to IPv4 by its mapped address.
        const to = send && (send[1].includes(':') ? send[1] : '::ffff:' + send[1]);
        // 'big N': the answer padded to N bytes, more than one packet holds.
        const big = /^big (\\d+)$/.exec(String(msg));
        const text = 'echo ' + port + ' from ' + address;
        if (send && (address === '127.0.0.1' || address === '::1')) s.send('hi', Number(send[2]), to);
        else s.send(big ? text.padEnd(Number(big[1]), '.') : text, from.port, from.address);
      });
      s.bind(port, '::', () => {
        if (++up === ${ports.length}) console.log('listening');
      });
    }`;
  return startServer(host, script, 'udp');
}

/**
 * Sends one datagram from the host (from `sourcePort` when given) to `address:port` and returns the
 * answer, or null when none came within the timeout (a dropped datagram, or a dropped answer).
 */
export async function udpProbe(
  host: Host,
  address: string,
  port: number,
  opts: { sourcePort?: number; message?: string; timeoutS?: number } = {},
): Promise<string | null> {
  const timeoutS = opts.timeoutS ?? 3;
  const script = `
    const s = require('node:dgram').createSocket(${JSON.stringify(address.includes(':') ? 'udp6' : 'udp4')});
    s.on('message', (d) => { process.stdout.write(d); process.exit(0); });
    s.on('error', () => process.exit(1));
    s.bind(${opts.sourcePort ?? 0}, () => s.send(${JSON.stringify(opts.message ?? 'hello')}, ${port}, ${JSON.stringify(address)}));
    setTimeout(() => process.exit(2), ${timeoutS * 1000});`;
  return probe(host, script, timeoutS);
}

/**
 * From `host`, starts a TCP connect to ip:port every 50 ms until one is answered (for `totalMs` at
 * most); resolves with the time (Date.now() there) of the first answer, or null if none came.
 * Start it, then make the change that should open the port, and compare the times.
 */
export async function connectUntilOpen(
  host: Host,
  ip: string,
  port: number,
  totalMs: number,
): Promise<number | null> {
  const script = `
    const net = require('node:net');
    const end = Date.now() + ${totalMs};
    const attempt = () => {
      if (Date.now() > end) { console.log('never'); process.exit(0); }
      const s = net.connect({ host: ${JSON.stringify(ip)}, port: ${port} });
      s.on('data', () => { console.log('open ' + Date.now()); process.exit(0); });
      s.on('error', () => {});
      setTimeout(() => s.destroy(), 2000);
      setTimeout(attempt, 50);
    };
    attempt();`;
  const r = await host.exec(['node', '-e', script], { timeoutMs: totalMs + 7000 });
  const m = /^open (\d+)$/.exec(r.stdout.trim());
  return m ? Number(m[1]) : null;
}

/**
 * A DNS server on port 53 of the host (core/src/bench/dns-upstream.ts: A records from `records`,
 * NXDOMAIN otherwise); returns the questions it has been asked so far, with the asker's address.
 */
export async function startDnsServer(
  host: Host,
  records: Record<string, string>,
): Promise<() => { name: string; from: string }[]> {
  const module = join(REPO, 'core/dist/bench/dns-upstream.js');
  const script = `import(${JSON.stringify(module)}).then((m) => m.startTestUpstream(${JSON.stringify(records)}, '0.0.0.0', 53, (q) => console.log(JSON.stringify(q)))).then(() => console.log('ready'));`;
  const child = host.spawn(['node', '-e', script]);
  let out = '';
  child.stdout?.on('data', (d) => {
    out += String(d);
  });
  await waitFor('the DNS server', async () => out.includes('ready\n'));
  return () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { name: string; from: string });
}
