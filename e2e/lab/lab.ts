import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { must, type RunResult, run } from './exec.js';

// A network lab of Linux network namespaces: hosts joined by bridged segments, cleaned up by
// namespace so even processes spawned by the code under test are killed. Every name carries the
// lab's run id, so two runs never collide; only test address ranges are used (see TESTING.md).

const REQUIRED_TOOLS = ['/usr/sbin/ip', '/usr/bin/ping', '/usr/bin/wg', '/usr/bin/wireguard-go'];

export interface HostOptions {
  segment: Segment;
  /** address/prefix on the segment, e.g. 198.18.0.2/24 (test ranges only). */
  address: string;
  gateway?: string;
}

export class Segment {
  constructor(
    readonly lab: Lab,
    readonly bridge: string,
  ) {}
}

export class Host {
  constructor(
    readonly lab: Lab,
    readonly name: string,
    readonly ns: string,
    /** The host's address on its first segment, without prefix length. */
    readonly ip: string,
  ) {}

  /**
   * The host's own resolv.conf: `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over
   * /etc/resolv.conf, so a helper on this host changes this file, never the machine's.
   */
  get resolvConf(): string {
    return `/etc/netns/${this.ns}/resolv.conf`;
  }

  /** Runs argv inside the host's namespace. */
  exec(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    return run(['ip', 'netns', 'exec', this.ns, ...argv], opts);
  }

  must(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    return must(['ip', 'netns', 'exec', this.ns, ...argv], opts);
  }

  /** Starts a long-running process in the namespace; the lab kills it at cleanup. */
  spawn(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
    return this.lab.track(
      spawn('ip', ['netns', 'exec', this.ns, ...argv], {
        env: { ...process.env, ...opts.env },
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
  }

  /**
   * Everything Weft may change on a host and must put back: links, addresses, policy rules, every
   * routing table, the nftables ruleset and the forwarding sysctls. Compare before and after.
   */
  async osSnapshot(): Promise<string> {
    const parts = await Promise.all([
      this.must(['ip', '-o', 'link', 'show']),
      this.must(['ip', '-o', 'addr', 'show']),
      this.must(['ip', 'rule', 'show']),
      this.must(['ip', '-6', 'rule', 'show']),
      this.must(['ip', 'route', 'show', 'table', 'all']),
      this.must(['ip', '-6', 'route', 'show', 'table', 'all']),
      this.must(['nft', 'list', 'ruleset']).then(withoutFlows),
      this.must([
        'sysctl',
        'net.ipv4.ip_forward',
        'net.ipv6.conf.all.forwarding',
        'net.ipv4.conf.all.src_valid_mark',
      ]),
    ]);
    return parts.join('\n---\n');
  }

  /** Pings with a bounded count and deadline; true when at least one reply came back. */
  async ping(target: string, opts: { count?: number; deadlineS?: number } = {}): Promise<boolean> {
    const count = opts.count ?? 1;
    const deadline = opts.deadlineS ?? 3;
    const r = await this.exec(
      ['ping', '-n', '-q', '-c', String(count), '-W', '1', '-w', String(deadline), target],
      {
        timeoutMs: (deadline + 2) * 1000,
      },
    );
    return r.code === 0;
  }
}

export class Lab {
  readonly id = randomBytes(3).toString('hex').slice(0, 4);
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private hub: string | null = null;
  private segments = 0;

  /** Fails at once (rather than passing vacuously) when the machine lacks the lab's tools or root. */
  static async create(): Promise<Lab> {
    if (process.getuid?.() !== 0) throw new Error('network lab needs root (namespaces, wireguard-go)');
    const missing = REQUIRED_TOOLS.filter((t) => !existsSync(t));
    if (missing.length > 0) throw new Error(`network lab needs ${missing.join(', ')}: run scripts/setup.sh`);
    return new Lab();
  }

  /** A name unique to this run, at most 15 characters (interface-name limit). */
  name(suffix: string): string {
    const n = `w${this.id}${suffix}`;
    if (n.length > 15) throw new Error(`lab name too long: ${n}`);
    return n;
  }

  private async addNamespace(suffix: string): Promise<string> {
    const ns = this.name(suffix);
    await must(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    // No duplicate-address detection: addresses are usable at once and OS snapshots are stable.
    for (const scope of ['all', 'default']) {
      await must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${scope}.accept_dad=0`]);
    }
    return ns;
  }

  /** A layer-2 segment: a bridge in the lab's hub namespace. */
  async addSegment(): Promise<Segment> {
    if (this.hub === null) this.hub = await this.addNamespace('hub');
    const bridge = `br${this.segments++}`;
    await must(['ip', '-n', this.hub, 'link', 'add', bridge, 'type', 'bridge']);
    await must(['ip', '-n', this.hub, 'link', 'set', bridge, 'up']);
    return new Segment(this, bridge);
  }

  /** Attaches namespace `ns` to a segment as interface `ifname` with `address`. */
  async attach(ns: string, segment: Segment, ifname: string, address: string): Promise<void> {
    const hub = this.hub as string;
    const outer = `v${this.namespaces.indexOf(ns)}${ifname}`.slice(0, 15);
    await must(['ip', '-n', hub, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', ifname, 'netns', ns]);
    await must(['ip', '-n', hub, 'link', 'set', outer, 'master', segment.bridge, 'up']);
    await must(['ip', '-n', ns, 'addr', 'add', address, 'dev', ifname]);
    await must(['ip', '-n', ns, 'link', 'set', ifname, 'up']);
  }

  async addHost(name: string, opts: HostOptions): Promise<Host> {
    const ns = await this.addNamespace(name);
    await this.attach(ns, opts.segment, 'eth0', opts.address);
    if (opts.gateway) await must(['ip', '-n', ns, 'route', 'add', 'default', 'via', opts.gateway]);
    const host = new Host(this, name, ns, opts.address.split('/')[0] as string);
    // Lab hosts resolve nothing unless a test says so (their resolver is a lab address no one serves).
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(
      host.resolvConf,
      `# lab host ${name}\nnameserver 198.18.255.53\noptions timeout:1 attempts:1\n`,
    );
    return host;
  }

  track(child: ChildProcess): ChildProcess {
    this.children.push(child);
    return child;
  }

  /** Kills every process in the lab's namespaces (by PID) and deletes the namespaces. */
  async cleanup(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null && c.pid) c.kill('SIGTERM');
    await waitForExit(this.children, 3000);
    for (const ns of [...this.namespaces].reverse()) {
      for (const signal of ['TERM', 'KILL']) {
        const pids = (await run(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
        if (pids.length === 0) break;
        await run(['kill', `-${signal}`, ...pids]);
        await sleep(signal === 'TERM' ? 1000 : 200);
      }
      await run(['ip', 'netns', 'del', ns]);
      rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    }
    this.namespaces.length = 0;
  }
}

/**
 * `nft list ruleset` without the flows the helper's stateless filter notes as this host's UDP leaves
 * (the elements of its `flags dynamic,timeout` sets): traffic fills them and time empties them, so
 * "the same rules" must not depend on them.
 */
export function withoutFlows(ruleset: string): string {
  return ruleset.replace(/(\tflags dynamic,timeout\n(?:\t\t[^\n]*\n)*?)\t\telements = \{[^}]*\}\n/g, '$1');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForExit(children: ChildProcess[], ms: number): Promise<void> {
  const live = children.filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.race([Promise.all(live.map((c) => new Promise((r) => c.once('exit', r)))), sleep(ms)]);
}

/** Polls `check` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}
