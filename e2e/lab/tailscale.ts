import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { RunResult } from './exec.js';
import { type Host, waitFor } from './lab.js';

// The official Tailscale client (tailscaled + the tailscale CLI) on lab hosts, built from its Go
// module by scripts/setup-tailscale.sh. Each daemon has its own state folder, socket and TUN name,
// uploads no logs, and never touches the machine's resolver: `ip netns exec` bind-mounts
// /etc/netns/NS/resolv.conf over /etc/resolv.conf, so we give each host one of its own.
// Give its host a default route (TAILSCALE_GATEWAY when nothing else): without one tailscaled
// rebinds on every netcheck, dropping its control connection, and then insists on port 443.

export const TAILSCALE_VERSION = '1.102.5';
/**
 * A gateway for lab hosts of Tailscale clients that need no real one: an address on the
 * 198.18.0.0/24 segment nobody has, so packets to it go nowhere (no forwarding, no leak).
 */
export const TAILSCALE_GATEWAY = '198.18.0.254';
export const TAILSCALE_BIN_DIR = process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin';
const BIN = {
  tailscaled: join(TAILSCALE_BIN_DIR, 'tailscaled'),
  tailscale: join(TAILSCALE_BIN_DIR, 'tailscale'),
  derper: join(TAILSCALE_BIN_DIR, 'derper'),
};

/**
 * Why tests of the official client must skip here, or null when its binaries are present. They
 * are absent only where Go is (scripts/setup.sh builds them whenever Go is present).
 */
export function tailscaleMissing(): string | null {
  const missing = Object.values(BIN).filter((b) => !existsSync(b));
  if (missing.length === 0) return null;
  return `the official Tailscale binaries are absent (${missing.join(', ')}): install Go and run scripts/setup-tailscale.sh`;
}

/** `tailscale status --json`, the parts the lab reads (ipnstate.Status). */
const TsPeer = z.object({
  ID: z.string(),
  PublicKey: z.string(),
  HostName: z.string(),
  DNSName: z.string(),
  OS: z.string(),
  TailscaleIPs: z.array(z.string()).nullish(),
  PrimaryRoutes: z.array(z.string()).nullish(),
  CurAddr: z.string(),
  Relay: z.string(),
  Online: z.boolean(),
  ExitNode: z.boolean(),
  ExitNodeOption: z.boolean(),
});
export type TsPeer = z.infer<typeof TsPeer>;

export const TsStatus = z.object({
  Version: z.string(),
  BackendState: z.string(),
  AuthURL: z.string(),
  TailscaleIPs: z.array(z.string()).nullish(),
  Self: TsPeer.nullish(),
  Health: z.array(z.string()).nullish(),
  Peer: z.record(z.string(), TsPeer).nullish(),
});
export type TsStatus = z.infer<typeof TsStatus>;

/** The peers of a status, as a list. */
export function tsPeers(s: TsStatus): TsPeer[] {
  return Object.values(s.Peer ?? {});
}

export interface TsUpOptions {
  loginServer: string;
  hostname: string;
  authKey?: string;
  advertiseRoutes?: string[];
  advertiseExitNode?: boolean;
  /** A peer's name or address, or '' for none. */
  exitNode?: string;
  acceptRoutes?: boolean;
  timeoutS?: number;
}

/** The flags of `tailscale up`/`tailscale set`. `--reset` makes up state every setting anew. */
function upFlags(o: TsUpOptions): string[] {
  return [
    '--reset',
    `--login-server=${o.loginServer}`,
    `--hostname=${o.hostname}`,
    // Never manage the host's DNS; the lab has none.
    '--accept-dns=false',
    `--accept-routes=${o.acceptRoutes ?? false}`,
    ...(o.authKey ? [`--auth-key=${o.authKey}`] : []),
    ...(o.advertiseRoutes ? [`--advertise-routes=${o.advertiseRoutes.join(',')}`] : []),
    ...(o.advertiseExitNode ? ['--advertise-exit-node'] : []),
    ...(o.exitNode !== undefined ? [`--exit-node=${o.exitNode}`] : []),
    `--timeout=${o.timeoutS ?? 60}s`,
  ];
}

export class TailscaleNode {
  private daemon: ChildProcess | null = null;
  readonly socket: string;
  readonly stateDir: string;
  private readonly resolvDir: string;

  constructor(
    readonly host: Host,
    readonly dir: string,
    /** TUN interface name (≤ 15 characters, unique to the run), or 'userspace-networking'. */
    readonly tun: string,
    /** More environment for tailscaled, e.g. SSL_CERT_FILE for a lab CA. */
    readonly env: NodeJS.ProcessEnv = {},
  ) {
    this.socket = join(dir, 'tailscaled.sock');
    this.stateDir = join(dir, 'state');
    this.resolvDir = join('/etc/netns', host.ns);
  }

  async start(): Promise<void> {
    mkdirSync(this.stateDir, { recursive: true });
    if (!existsSync(join(this.resolvDir, 'resolv.conf'))) {
      mkdirSync(this.resolvDir, { recursive: true });
      writeFileSync(join(this.resolvDir, 'resolv.conf'), '# lab host: no resolver\n');
    }
    const child = this.host.spawn(
      [
        BIN.tailscaled,
        `--statedir=${this.stateDir}`,
        `--socket=${this.socket}`,
        `--tun=${this.tun}`,
        '--port=0',
        '--no-logs-no-support',
      ],
      {
        env: {
          // nftables through netlink: the lab machine has nft but no iptables.
          TS_DEBUG_FIREWALL_MODE: 'nftables',
          // DERP over plain HTTP on the relay's own port (the relay map's ws:// URL).
          TS_DEBUG_USE_DERP_HTTP: '1',
          // Its log state in its own folder, not the machine's /var/lib/tailscale.
          TS_LOGS_DIR: this.dir,
          ...this.env,
        },
      },
    );
    const log = createWriteStream(join(this.dir, 'tailscaled.log'), { flags: 'a' });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.daemon = child;
    await waitFor(
      'tailscaled to answer on its socket',
      async () => {
        if (child.exitCode !== null)
          throw new Error(`tailscaled exited with ${child.exitCode}: see ${log.path}`);
        return (await this.cli(['status', '--json'], 5000)).stdout.includes('BackendState');
      },
      20_000,
    );
  }

  /** Stops tailscaled by its PID (SIGTERM, then SIGKILL after 5 s); its TUN goes with it. */
  async stop(): Promise<void> {
    const child = this.daemon;
    this.daemon = null;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    rmSync(this.resolvDir, { recursive: true, force: true });
  }

  /** Runs the tailscale CLI against this daemon. */
  cli(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return this.host.exec([BIN.tailscale, `--socket=${this.socket}`, ...args], { timeoutMs });
  }

  async mustCli(args: string[], timeoutMs = 30_000): Promise<string> {
    const r = await this.cli(args, timeoutMs);
    if (r.code !== 0)
      throw new Error(`tailscale ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  /** `tailscale up` with a pre-auth key (or whatever o says); throws with its output on failure. */
  async up(o: TsUpOptions): Promise<void> {
    await this.mustCli(['up', ...upFlags(o)], ((o.timeoutS ?? 60) + 10) * 1000);
  }

  /**
   * `tailscale up` without a key, left running: resolves with the AuthURL it prints and a promise
   * of its exit once someone signs in there.
   */
  async upInteractive(o: TsUpOptions): Promise<{ authUrl: string; done: Promise<number | null> }> {
    const child = this.host.spawn([BIN.tailscale, `--socket=${this.socket}`, 'up', ...upFlags(o)]);
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const done = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const authUrl = await waitFor(
      'tailscale up to print the AuthURL',
      async () => {
        if (child.exitCode !== null) throw new Error(`tailscale up exited ${child.exitCode}: ${out}`);
        return /To authenticate, visit:\s+(\S+)/.exec(out)?.[1];
      },
      30_000,
    );
    return { authUrl, done };
  }

  /** `tailscale set` with the given flags, e.g. ['--exit-node=100.64.0.2']. */
  async set(flags: string[]): Promise<void> {
    await this.mustCli(['set', ...flags]);
  }

  async status(): Promise<TsStatus> {
    return TsStatus.parse(JSON.parse(await this.mustCli(['status', '--json'])));
  }

  /** This node's tailnet IPv4 address (`tailscale ip -4`). */
  async ip4(): Promise<string> {
    return (await this.mustCli(['ip', '-4'])).trim();
  }

  /**
   * One disco ping (`tailscale ping`): how the peer answered, 'direct' with its endpoint or
   * 'derp' with the region, or null when it did not.
   */
  async tsPing(target: string): Promise<{ via: 'direct' | 'derp'; detail: string } | null> {
    const r = await this.cli(['ping', '--c=1', '--timeout=2s', '--until-direct=false', target], 10_000);
    const m = /pong from \S+ \([^)]*\) via (DERP\(([^)]*)\)|\S+)/.exec(r.stdout);
    if (!m) return null;
    return m[2] !== undefined ? { via: 'derp', detail: m[2] } : { via: 'direct', detail: m[1] as string };
  }

  /** The peer named `hostname` in this node's status, if any. */
  async peer(hostname: string): Promise<TsPeer | undefined> {
    return tsPeers(await this.status()).find((p) => p.HostName === hostname);
  }
}
