import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOCALAPI_PREFIX, Status } from '@weft/protocol';
import type { RunResult } from './exec.js';
import { type Host, type Lab, waitFor } from './lab.js';
import type { LabCa } from './tls-front.js';

// Starts Weft's real, built binaries on lab hosts: control, and nodes made of helper + weftd.

/** The repository root, found upward from this file (it runs from e2e/lab as source and e2e/dist/lab built). */
export const REPO = findRepoRoot(dirname(fileURLToPath(import.meta.url)));

function findRepoRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, '.ci', 'run'))) return dir;
  }
  throw new Error(`no repository root above ${from}`);
}
const bin = (path: string) => join(REPO, path);
export const BIN = {
  control: bin('control/dist/cli/main.js'),
  weftd: bin('core/dist/daemon/main.js'),
  weft: bin('core/dist/cli/main.js'),
  helper: bin('native-helpers/dist/main.js'),
  relay: bin('relay/dist/cli/main.js'),
};

/** A scratch folder for one test run; removed by `removeScratch`. */
export function scratchDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `weft-${prefix}-`));
}

export function removeScratch(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

function startLogged(host: Host, argv: string[], logFile: string): ChildProcess {
  const child = host.spawn(argv);
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

async function stopChild(child: ChildProcess | null, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

export class ControlServer {
  private child: ChildProcess | null = null;
  readonly url: string;

  constructor(
    readonly host: Host,
    readonly dir: string,
    readonly port = 8080,
    /** More `serve` flags, e.g. ['--relays', '1,lab,ws://…/relay,KEY']. */
    readonly extraArgs: string[] = [],
    /** A SQLite file in `dir`, or a postgres:// URL that several replicas share. */
    readonly db = join(dir, 'control.db'),
  ) {
    this.url = `http://${host.ip}:${port}`;
  }

  async start(): Promise<void> {
    this.child = startLogged(
      this.host,
      [
        'node',
        BIN.control,
        'serve',
        '--listen',
        `${this.host.ip}:${this.port}`,
        '--public-url',
        this.url,
        '--db',
        this.db,
        ...this.extraArgs,
      ],
      join(this.dir, 'control.log'),
    );
    // Roomy: on PostgreSQL the first start also migrates, and a loaded machine is slow to start node.
    await waitFor('control to answer /healthz', () => this.healthz(), 30_000);
  }

  /** Health probe from inside the control host's namespace (Node's fetch: curl may be absent). */
  private async healthz(): Promise<boolean> {
    const r = await this.host.exec(
      [
        'node',
        '-e',
        `fetch(${JSON.stringify(`${this.url}/healthz`)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))`,
      ],
      { timeoutMs: 3000 },
    );
    return r.code === 0;
  }

  /** SIGTERM: a clean shutdown; SIGKILL: a crashed replica. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await stopChild(this.child, signal);
    this.child = null;
  }

  /** Control's public key, as a relay pins it (GET /machine/key). */
  async publicKey(): Promise<string> {
    const r = await this.host.exec(
      [
        'node',
        '-e',
        `fetch(${JSON.stringify(`${this.url}/machine/key`)}).then(r=>r.json()).then(j=>console.log(j.publicKey),()=>process.exit(1))`,
      ],
      { timeoutMs: 5000 },
    );
    if (r.code !== 0) throw new Error(`cannot read control's key: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** Runs the admin CLI against the same database, as an admin on the server would. */
  async cli(args: string[]): Promise<string> {
    const r = await this.host.exec(['node', BIN.control, ...args, '--db', this.db], { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`weft-control ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout.trim();
  }
}

/** A `weft-relay` (relay and DERP, WireGuard reflector, STUN) on a lab host. */
export class RelayServer {
  private child: ChildProcess | null = null;
  /** ws:// until started with TLS, wss:// then. */
  url: string;
  readonly stateDir: string;
  publicKey = '';

  constructor(
    readonly host: Host,
    readonly dir: string,
    readonly port = 8443,
    readonly reflectorPort = 3478,
    /** STUN for Tailscale clients' netcheck (in their DERP map through control's relay map). */
    readonly stunPort = 3479,
  ) {
    this.url = `ws://${host.ip}:${port}/relay`;
    this.stateDir = join(dir, 'relay-state');
  }

  /** Creates the relay's key (if new) and returns it, as an admin does for the relay map. */
  async key(): Promise<string> {
    const r = await this.host.exec(['node', BIN.relay, 'key', '--state-dir', this.stateDir], {
      timeoutMs: 20_000,
    });
    if (r.code !== 0) throw new Error(`weft-relay key failed: ${r.stderr}`);
    this.publicKey = r.stdout.trim();
    return this.publicKey;
  }

  /** `ID,NAME,URL,KEY,STUNPORT` for control's --relays. */
  async mapEntry(regionId: number, name: string): Promise<string> {
    return `${regionId},${name},${this.url},${this.publicKey || (await this.key())},${this.stunPort}`;
  }

  /**
   * Serves the tailnet of `control` (started first), or with none any node key (`--open`); over
   * TLS with `tls`'s certificate and key.
   */
  async start(control?: ControlServer, tls?: Pick<LabCa, 'certFile' | 'keyFile'>): Promise<void> {
    const serving = control
      ? ['--control-url', control.url, '--control-key', await control.publicKey()]
      : ['--open'];
    const tlsArgs = tls ? ['--tls-cert', tls.certFile, '--tls-key', tls.keyFile] : [];
    if (tls) this.url = this.url.replace(/^ws:/, 'wss:');
    const child = startLogged(
      this.host,
      [
        'node',
        BIN.relay,
        'serve',
        '--listen',
        `${this.host.ip}:${this.port}`,
        '--reflector-port',
        String(this.reflectorPort),
        '--stun-port',
        String(this.stunPort),
        '--state-dir',
        this.stateDir,
        ...serving,
        ...tlsArgs,
      ],
      join(this.dir, 'relay.log'),
    );
    this.child = child;
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    await waitFor('weft-relay to listen', async () => {
      if (child.exitCode !== null) throw new Error(`weft-relay exited with ${child.exitCode}`);
      return out.includes('listening');
    });
  }

  async stop(): Promise<void> {
    await stopChild(this.child);
    this.child = null;
  }
}

export class WeftNode {
  private helper: ChildProcess | null = null;
  private daemon: ChildProcess | null = null;
  readonly socket: string;
  readonly helperSocket: string;

  constructor(
    readonly host: Host,
    readonly dir: string,
    /** WireGuard interface name, unique machine-wide (wireguard-go's sockets share one folder). */
    readonly iface: string,
  ) {
    this.socket = join(dir, 'weftd.sock');
    this.helperSocket = join(dir, 'helper.sock');
  }

  async startHelper(): Promise<void> {
    this.helper = startLogged(
      this.host,
      [
        'node',
        BIN.helper,
        '--socket',
        this.helperSocket,
        '--state-dir',
        join(this.dir, 'helper-state'),
        // The lab host's own file (never this machine's /etc/resolv.conf).
        '--resolv-conf',
        this.host.resolvConf,
      ],
      join(this.dir, 'helper.log'),
    );
    // As roomy as weftd's: seven nodes' helpers starting at once under load 29 took over 10 s.
    await waitFor('helper socket', async () => existsSync(this.helperSocket), 30_000);
  }

  async startDaemon(): Promise<void> {
    this.daemon = startLogged(
      this.host,
      [
        'node',
        BIN.weftd,
        '--state-dir',
        join(this.dir, 'state'),
        '--socket',
        this.socket,
        '--helper-socket',
        this.helperSocket,
        '--interface',
        this.iface,
        // WEFT_LAB_VERBOSE=1: debug logs in each node's weftd.log.
        ...(process.env.WEFT_LAB_VERBOSE ? ['--verbose'] : []),
      ],
      join(this.dir, 'weftd.log'),
    );
    // Bounded but roomy: a dozen nodes starting at once on a loaded machine take a while.
    await waitFor('weftd socket', async () => existsSync(this.socket), 30_000);
  }

  async start(): Promise<void> {
    await this.startHelper();
    await this.startDaemon();
  }

  /** Stops the helper with `signal` (SIGKILL: as a crash leaves things; SIGTERM: a restart). */
  async stopHelper(signal: NodeJS.Signals): Promise<void> {
    await stopChild(this.helper, signal);
    this.helper = null;
  }

  async stopDaemon(): Promise<void> {
    await stopChild(this.daemon);
    this.daemon = null;
  }

  async stop(): Promise<void> {
    await this.stopDaemon();
    // SIGINT: the helper takes down all it set up (SIGTERM would leave it for a next helper).
    await stopChild(this.helper, 'SIGINT');
    this.helper = null;
  }

  weft(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return this.host.exec(['node', BIN.weft, '--socket', this.socket, ...args], { timeoutMs });
  }

  async status(): Promise<Status> {
    const r = await this.weft(['status', '--json']);
    if (r.code !== 0) throw new Error(`weft status failed: ${r.stderr}`);
    return Status.parse(JSON.parse(r.stdout));
  }

  /**
   * The status read straight from the LocalAPI socket, without starting a CLI process (hundreds of
   * ms on a loaded machine): for benchmarks that time a change of state. Tests use `status()`,
   * what a user runs.
   */
  async statusFromSocket(): Promise<Status> {
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ socketPath: this.socket, path: `${LOCALAPI_PREFIX}/status` }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.on('error', reject);
      });
      req.setTimeout(10_000, () => req.destroy(new Error('weftd did not answer /status in 10 s')));
      req.on('error', reject);
      req.end();
    });
    return Status.parse(JSON.parse(body));
  }

  async up(controlUrl: string, authKey: string, hostname: string): Promise<void> {
    const r = await this.weft(
      ['up', '--control-url', controlUrl, '--insecure-http', '--authkey', authKey, '--hostname', hostname],
      60_000,
    );
    if (r.code !== 0) throw new Error(`weft up failed: ${r.stderr || r.stdout}`);
  }

  /** This node's tunnel IPv4 address. */
  async ip4(): Promise<string> {
    const r = await this.weft(['ip', '-4']);
    if (r.code !== 0) throw new Error(`weft ip failed: ${r.stderr}`);
    return r.stdout.trim();
  }
}

/**
 * Tears a test tailnet down: stops its nodes and control, kills what is left in the lab's
 * namespaces and removes them, then removes every scratch folder. Safe on a half-built tailnet.
 */
export async function stopTailnet(t: {
  nodes: Iterable<WeftNode>;
  control?: ControlServer | null;
  lab?: Lab | null;
  dir?: string | null;
}): Promise<void> {
  const nodes = [...t.nodes];
  for (const n of nodes) await n.stop();
  await t.control?.stop();
  await t.lab?.cleanup();
  for (const n of nodes) removeScratch(n.dir);
  if (t.dir) removeScratch(t.dir);
}
