import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  applyStreamMessage,
  CONTROL_KEY_PATH,
  generateKeyPair,
  type KeyPair,
  MACHINE_AUTH_HEADER,
  mapTokenAfter,
  type NetMap,
  type NodeView,
  nodeKeyPossessionProof,
  REGISTER_PATH,
  STREAM_PATH,
  StreamServerMessage,
  signMachineRequest,
  streamPath,
} from '@weft/protocol';
import WebSocket from 'ws';
import { runCli } from '../cli/program.js';
import { type ControlConfig, loadConfig } from '../config/config.js';
import { silentLogger } from '../log.js';
import { type RunningControl, type ServeOptions, startControl } from '../server/serve.js';

// Test support (not built into dist): a real server on 127.0.0.1 port 0 over a real SQLite file in
// a temp dir, machines that sign their requests as the engine will, and the admin CLI run in-process
// on its own database connection (as a separate process would have).

const cleanups: (() => Promise<void> | void)[] = [];

export async function cleanupAll(): Promise<void> {
  while (cleanups.length > 0) await cleanups.pop()?.();
}

/** Runs `fn` at the next cleanupAll (last registered, first run). */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/**
 * Holds the first call of `target[method]` (a prototype's, say) until `release()`; later calls go
 * straight through. `calls` has every call's arguments. Restored at the next cleanupAll.
 */
export function holdFirstCall<
  K extends PropertyKey,
  T extends Record<K, (...args: never[]) => Promise<unknown>>,
>(target: T, method: K): { release: () => void; calls: Parameters<T[K]>[] } {
  const original = target[method];
  const calls: Parameters<T[K]>[] = [];
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  // The same signature as the method it stands in for; TypeScript cannot see that through T[K].
  target[method] = async function (this: unknown, ...args: Parameters<T[K]>) {
    calls.push(args);
    if (calls.length === 1) await gate;
    return original.apply(this, args);
  } as T[K];
  cleanups.push(() => {
    target[method] = original;
  });
  return { release, calls };
}

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-control-test-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A TCP port free on 127.0.0.1 right now, for a server whose URL must be known before it starts.
 * Taken below Linux's ephemeral range (32768 up), which the kernel hands to outgoing connections:
 * a port of that range could be taken by one (a load test's thousands) before the server binds it.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 100; tries++) {
    const server = createServer();
    const port = 16_384 + Math.floor(Math.random() * 16_384);
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }
  throw new Error('no free port found below the ephemeral range in 100 tries');
}

export interface TestControl {
  control: RunningControl;
  db: string;
  controlPublicKey: string;
  /** Runs `weft-control ARGS --db DB` in-process; returns exit code and output. */
  cli(...args: string[]): Promise<{ code: number; out: string; err: string }>;
  /** Creates a user (once) and a pre-auth key for it, returning the key. */
  key(...flags: string[]): Promise<string>;
}

export type TestControlOptions = Partial<Omit<ServeOptions, 'config'>> & { config?: Partial<ControlConfig> };

export async function startTestControl(options: TestControlOptions = {}): Promise<TestControl> {
  const db = options.config?.db ?? join(tempDir(), 'control.db');
  const control = await startControl({
    log: silentLogger,
    pollIntervalMs: 50,
    ...options,
    // Held presence still goes through its release, without making each test wait seconds for it.
    limits: { presenceHoldMs: 50, ...options.limits },
    config: {
      ...loadConfig({ flags: {}, env: {}, cwd: tmpdir() }),
      listen: { host: '127.0.0.1', port: 0 },
      ...options.config,
      db,
    },
  });
  cleanups.push(() => control.close());
  const cli = (...args: string[]) => runCliCaptured([...args, '--db', db]);
  const { publicKey } = (await (await fetch(`${control.url}${CONTROL_KEY_PATH}`)).json()) as {
    publicKey: string;
  };
  let userMade = false;
  return {
    control,
    db,
    controlPublicKey: publicKey,
    cli,
    async key(...flags: string[]) {
      // `users create` fails harmlessly when a restarted server's database already has alice.
      if (!userMade) await cli('users', 'create', 'alice');
      userMade = true;
      const r = await cli('preauthkey', 'create', '--user', 'alice', ...flags);
      if (r.code !== 0) throw new Error(r.err);
      return r.out.trim();
    },
  };
}

export async function runCliCaptured(argv: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()) {
  let out = '';
  let err = '';
  const code = await runCli(argv, {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    env,
    cwd,
    untilStopped: () => Promise.resolve(),
  });
  return { code, out, err };
}

/** A reply body as tests read it: a registration answer or an ErrorBody. */
type Reply = {
  status?: string;
  node: NodeView;
  authUrl: string;
  expiresAt: string;
  error: { code: string; message: string };
};

export class TestMachine {
  readonly machine: KeyPair = generateKeyPair();
  /** The node (WireGuard) key pair; registrations prove possession of it. */
  node: KeyPair = generateKeyPair();

  get nodeKey(): string {
    return this.node.publicKey;
  }

  constructor(private readonly t: TestControl) {}

  sign(method: string, path: string, body: string): string {
    return signMachineRequest({
      machinePrivateKey: this.machine.privateKey,
      controlPublicKey: this.t.controlPublicKey,
      method,
      path,
      body,
    });
  }

  /** POSTs a registration; `body` overrides the JSON text sent (and signed, unless `signature` is given). */
  async register(
    request: Record<string, unknown>,
    opts: { body?: string; signature?: string | null } = {},
  ): Promise<{ status: number; json: Reply }> {
    const nodeKeyProof = nodeKeyPossessionProof({
      nodePrivateKey: this.node.privateKey,
      controlPublicKey: this.t.controlPublicKey,
      machineKey: this.machine.publicKey,
    });
    const body =
      opts.body ?? JSON.stringify({ nodeKey: this.nodeKey, os: 'linux', nodeKeyProof, ...request });
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const signature = opts.signature === undefined ? this.sign('POST', REGISTER_PATH, body) : opts.signature;
    if (signature !== null) headers[MACHINE_AUTH_HEADER] = signature;
    const res = await fetch(`${this.t.control.url}${REGISTER_PATH}`, { method: 'POST', headers, body });
    return { status: res.status, json: (await res.json()) as Reply };
  }

  /** A signed POST with an empty body (login cancel, logout). */
  async post(path: string): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${this.t.control.url}${path}`, {
      method: 'POST',
      headers: { [MACHINE_AUTH_HEADER]: this.sign('POST', path, '') },
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }

  async join(hostname: string, authKey: string) {
    const r = await this.register({ hostname, authKey });
    if (r.status !== 200) throw new Error(`registration failed: ${JSON.stringify(r.json)}`);
    return r.json.node;
  }

  stream(signature?: string): Promise<StreamClient> {
    return StreamClient.open(this.t.control.url, signature ?? this.sign('GET', STREAM_PATH, ''));
  }

  /** A stream opened with the token of the map this node holds (`held`'s), to `url` (this control's). */
  resume(held: StreamClient, url = this.t.control.url): Promise<StreamClient> {
    const path = streamPath(held.mapToken);
    return StreamClient.open(url, this.sign('GET', path, ''), path, held.netmap);
  }
}

/**
 * Two machines (a and b unless `names` says otherwise) joined with one reusable pre-auth key of
 * `t`, both streaming, a first, each waiting up to `timeoutMs` to see the other online. b may join
 * through another replica of `t`'s database (`bOn`).
 */
export async function twoOnline(
  t: TestControl,
  opts: { names?: readonly [string, string]; bOn?: TestControl; timeoutMs?: number } = {},
) {
  const [aName, bName] = opts.names ?? ['a', 'b'];
  const key = await t.key('--reusable');
  const a = new TestMachine(t);
  const b = new TestMachine(opts.bOn ?? t);
  const aNode = await a.join(aName, key);
  const bNode = await b.join(bName, key);
  const sa = await a.stream();
  const sb = await b.stream();
  const online = (s: StreamClient, name: string) =>
    s.netmap?.peers.find((p) => p.name === name)?.online === true;
  await sa.until(`${aName} sees ${bName} online`, (c) => online(c, bName), opts.timeoutMs);
  await sb.until(`${bName} sees ${aName} online`, (c) => online(c, aName), opts.timeoutMs);
  return { key, a, b, aNode, bNode, sa, sb };
}

/** A netmap stream as a node holds it: every message kept, the map rebuilt from them. */
export class StreamClient {
  readonly messages: StreamServerMessage[] = [];
  /** The token of the map it holds (the latest message's). */
  mapToken: string | null = null;
  closed: { code: number; reason: string } | null = null;
  private waiters: (() => void)[] = [];

  private constructor(
    readonly ws: WebSocket,
    public netmap: NetMap | null,
  ) {
    ws.on('message', (data) => {
      const msg = StreamServerMessage.parse(JSON.parse(String(data)));
      this.messages.push(msg);
      this.netmap = applyStreamMessage(this.netmap, msg);
      this.mapToken = mapTokenAfter(msg);
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
      this.wake();
    });
  }

  /** A stream at `path` (signed as `signature` says), holding `netmap` already (a reconnect's). */
  static open(
    baseUrl: string,
    signature: string,
    path = STREAM_PATH,
    netmap: NetMap | null = null,
  ): Promise<StreamClient> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}${path}`, {
      headers: { [MACHINE_AUTH_HEADER]: signature },
    });
    cleanups.push(() => ws.terminate());
    return new Promise((resolve, reject) => {
      const client = new StreamClient(ws, netmap);
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => reject(new StreamRefused(res.statusCode ?? 0, text)));
      });
      ws.once('error', reject);
    });
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `test` holds (checked on every message), failing after `timeoutMs`. */
  async until(what: string, test: (c: StreamClient) => boolean, timeoutMs = 3000): Promise<number> {
    const start = Date.now();
    while (!test(this)) {
      const left = timeoutMs - (Date.now() - start);
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return Date.now() - start;
  }

  peerNames(): string[] {
    return (this.netmap?.peers ?? []).map((p) => p.name).sort();
  }

  send(value: unknown): void {
    this.ws.send(JSON.stringify(value));
  }
}

export class StreamRefused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`stream refused with ${status}: ${body}`);
  }
}
