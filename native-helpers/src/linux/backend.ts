import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DesiredState, InterfaceStatus } from '@weft/protocol';
import { absentStatus, BackendError, type PlatformBackend } from '../backend.js';
import type { Logger } from '../log.js';
import type { StateFile } from '../state-file.js';
import type { OsDns } from './dns.js';
import {
  desiredRules,
  hasTunnelDefault,
  parseRules,
  planRules,
  tunnelDefault,
  WEFT_TABLE,
} from './exit-routing.js';
import { parseFlows, renderFlows } from './flows.js';
import { HeldSysctls, sysctlsFor } from './held-sysctls.js';
import { type LinkSnapshot, parseLink, parseRoutes } from './ip.js';
import { HASH_SET, parseTableHash, type RenderedTable, renderTable, TABLE_FAMILY, tableName } from './nft.js';
import { type Command, planAddresses, planLink, planRoutes } from './plan.js';
import { describeExit, exitWithin, stopProcess } from './process.js';
import { type ChildExit, type ChildHandle, CommandError, formatCommand, type Runner } from './runner.js';
import type { Sysctl } from './sysctl.js';
import type { UdpBuffers } from './udp-buffers.js';
import {
  parseDump,
  peersToEmpty,
  renderConfig,
  requestedEndpoints,
  type SetEndpoints,
  type WgDump,
  wgMatches,
} from './wg.js';

// Linux: kernel WireGuard when the module is there, wireguard-go otherwise, configured with `wg` and
// `ip`. Every apply reads the interface back and changes only what differs, so applying the same state
// twice changes nothing the second time.

const READY_POLL_MS = 50;

export interface LinuxBackendOptions {
  runner: Runner;
  buffers: UdpBuffers;
  /** Kernel parameters: IP forwarding for routers, src_valid_mark for exit-node clients. */
  sysctl: Sysctl;
  log: Logger;
  /** How long wireguard-go gets to create its interface and control socket. */
  readyTimeoutMs?: number;
  /** How long wireguard-go gets to exit after SIGTERM (and again after SIGKILL). */
  stopGraceMs?: number;
  /** Where what this helper owns is kept across restarts, and the boot it belongs to. */
  owned?: { file: StateFile; bootId: string };
  /** The OS's resolver configuration; without it DNS requests are refused. */
  dns?: OsDns;
}

interface Device {
  link: LinkSnapshot;
  wg: WgDump;
  backend: 'kernel' | 'wireguard-go';
}

/** An interface this process created. */
interface Created {
  /** The wireguard-go process serving it; null for kernel WireGuard. */
  child: ChildHandle | null;
  /** Set while `down` removes it, so wireguard-go exiting then is expected. */
  stopping: boolean;
}

export class LinuxBackend implements PlatformBackend {
  private readonly created = new Map<string, Created>();
  /** Per interface, the peer endpoints this process last set (see SetEndpoints). */
  private readonly setEndpoints = new Map<string, SetEndpoints>();
  /** Interfaces whose nftables table this process installed (removed again at exit). */
  private readonly firewalls = new Set<string>();
  /** Per interface, the last table rendered and the input it was rendered from (see tableFor). */
  private readonly rendered = new Map<string, { from: string; table: RenderedTable | null }>();
  /** Every interface this process applied a state to: at exit, what was added for them is undone. */
  private readonly managed = new Set<string>();
  /** The interface whose exit node the policy routing rules serve; there is one default route. */
  private exitOwner: string | null = null;
  private readonly sysctls: HeldSysctls;
  private readonly sysctl: Sysctl;
  private readonly runner: Runner;
  private readonly buffers: UdpBuffers;
  private readonly log: Logger;
  private readonly readyTimeoutMs: number;
  private readonly stopGraceMs: number;
  private readonly owned: LinuxBackendOptions['owned'];
  private readonly dns: OsDns | undefined;

  constructor(opts: LinuxBackendOptions) {
    this.runner = opts.runner;
    this.buffers = opts.buffers;
    this.log = opts.log;
    this.sysctls = new HeldSysctls(opts.sysctl, opts.log);
    this.sysctl = opts.sysctl;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 5000;
    this.stopGraceMs = opts.stopGraceMs ?? 3000;
    this.owned = opts.owned;
    this.dns = opts.dns;
  }

  async apply(state: DesiredState): Promise<InterfaceStatus> {
    const { name, addresses, mtu } = state.interface;
    if (state.exitNode !== undefined && this.exitOwner !== null && this.exitOwner !== name) {
      throw new BackendError(
        'invalid-request',
        `${this.exitOwner} already uses an exit node; clear it there before selecting one on ${name}`,
      );
    }
    if (state.dns !== undefined && this.dns === undefined) {
      throw new BackendError('invalid-request', 'this helper does not manage DNS');
    }
    // Rendered before anything else, so a table over the size limit is refused with nothing changed.
    const table = this.tableFor(state, await this.hostForwards());
    let device = await this.readDevice(name);
    this.managed.add(name);
    try {
      // The firewall first: its rules match the interface by name, so they are in force before the
      // interface exists and before any peer can send.
      await this.syncFirewall(name, table);
      if (device === null) {
        await this.create(name);
        device = await this.readDevice(name);
        if (device === null)
          throw new BackendError('os-error', `${name} disappeared right after it was created`);
      }
      await this.syncWireGuard(name, device.wg, state);
      await this.syncAddresses(name, device.link, addresses);
      await this.runAll(planLink(name, device.link, mtu));
      await this.syncRoutes(name, state.routes);
      await this.sysctls.hold(name, sysctlsFor(state));
      await this.syncExitRouting(name, state);
      // Last: the redirect to the resolver is in the table and the address exists by now.
      await this.dns?.sync(name, state.dns ?? null);
    } finally {
      // Also after a failure half-way: what was changed is ours to take back.
      await this.persist();
    }
    return this.status(name);
  }

  async status(name: string): Promise<InterfaceStatus> {
    const device = await this.readDevice(name);
    if (device === null) return absentStatus(name);
    const { link, wg, backend } = device;
    const osResolvers = await this.dns?.osResolvers(name);
    return {
      name,
      exists: true,
      backend,
      publicKey: wg.publicKey,
      listenPort: wg.listenPort,
      addresses: link.addresses,
      peers: wg.peers.map(({ persistentKeepalive: _, ...peer }) => peer),
      ...(osResolvers === undefined ? {} : { osResolvers }),
    };
  }

  async down(name: string): Promise<InterfaceStatus> {
    try {
      return await this.takeDown(name);
    } finally {
      await this.persist();
    }
  }

  private async takeDown(name: string): Promise<InterfaceStatus> {
    const device = await this.readDevice(name);
    await this.undoExtras(name);
    const ours = this.created.get(name);
    if (ours !== undefined) ours.stopping = true;
    try {
      // Addresses and routes through the interface go with it.
      if (device !== null) await this.change(['ip', 'link', 'del', name]);
    } catch (e) {
      if (ours !== undefined) ours.stopping = false;
      throw e;
    }
    this.setEndpoints.delete(name);
    this.rendered.delete(name);
    if (ours !== undefined) await this.forget(name, ours);
    return absentStatus(name);
  }

  async shutdown(): Promise<void> {
    for (const name of [...this.created.keys()]) {
      try {
        await this.takeDown(name);
      } catch (e) {
        this.log.error(`could not take down ${name}: ${(e as Error).message}`);
      }
    }
    // Interfaces we adopted stay, but what we added for them goes.
    for (const name of [...new Set([...this.managed, ...this.firewalls])]) {
      try {
        await this.undoExtras(name);
      } catch (e) {
        this.log.error(`could not undo the routing and firewall of ${name}: ${(e as Error).message}`);
      }
    }
    await this.persist();
  }

  async detach(): Promise<void> {
    // The OS's own resolvers come back while no helper runs (with an exit node, the kill switch still
    // keeps their queries from leaving outside the tunnel); the next apply points the OS at us again.
    await this.dns?.release();
    await this.persist();
    const names = [...new Set([...this.managed, ...this.created.keys()])];
    if (names.length === 0) return;
    const exit =
      this.exitOwner === null ? '' : `, with the exit routing and kill switch of ${this.exitOwner},`;
    this.log.info(
      `leaving ${names.join(', ')}${exit} in place for the next helper${this.owned ? ` (${this.owned.file.path})` : ''}`,
    );
  }

  async restore(): Promise<void> {
    // A helper killed while tailnet DNS was on left its record: the OS's resolvers go back first.
    await this.dns?.release();
    if (this.owned === undefined) return;
    const state = await this.owned.file.read(this.owned.bootId);
    if (state === null) return;
    for (const [name, { created }] of Object.entries(state.interfaces)) {
      this.managed.add(name);
      // A wireguard-go left running is no child of ours: deleting its interface ends it.
      if (created) this.created.set(name, { child: null, stopping: false });
    }
    for (const name of state.firewalls) this.firewalls.add(name);
    this.exitOwner = state.exitOwner;
    this.sysctls.load(state.sysctls);
    this.buffers.load(state.socketBuffers);
    const names = Object.keys(state.interfaces).join(', ') || 'no interface';
    this.log.info(
      `took over ${names}${state.exitOwner === null ? '' : ` (exit node on ${state.exitOwner}, kill switch kept)`} from ${this.owned.file.path}`,
    );
  }

  /** Records what this helper owns; with nothing owned, the file goes. */
  private async persist(): Promise<void> {
    if (this.owned === undefined) return;
    const names = new Set([...this.managed, ...this.created.keys()]);
    if (
      names.size === 0 &&
      this.firewalls.size === 0 &&
      this.exitOwner === null &&
      this.sysctls.held().length === 0
    ) {
      await this.owned.file.remove();
      return;
    }
    await this.owned.file.write({
      version: 1,
      bootId: this.owned.bootId,
      interfaces: Object.fromEntries([...names].map((n) => [n, { created: this.created.has(n) }])),
      firewalls: [...this.firewalls].sort(),
      exitOwner: this.exitOwner,
      sysctls: this.sysctls.snapshot(),
      socketBuffers: this.buffers.snapshot(),
    });
  }

  /** Takes back everything but the interface: exit-node routing, the firewall, kernel parameters. */
  private async undoExtras(name: string): Promise<void> {
    await this.dns?.sync(name, null);
    // With no exit owner (a helper restarted after a crash), leftover rules at our priorities go too.
    if (this.exitOwner === null || this.exitOwner === name) await this.syncExitRouting(name, null);
    await this.removeFirewall(name);
    await this.sysctls.release(name);
    this.managed.delete(name);
  }

  /**
   * Policy routing for an exit node (see exit-routing.ts): the default route in WEFT_TABLE first, then
   * the rules; when the exit node is cleared, the rules go first and then the route. Without a state
   * (down), everything at our priorities is removed.
   */
  private async syncExitRouting(name: string, state: DesiredState | null): Promise<void> {
    const exit = state !== null && state.exitNode !== undefined;
    // Another interface's exit node: its rules are not ours to touch from here.
    const rulesOwned = this.exitOwner === null || this.exitOwner === name;
    const rules = [
      ...parseRules(await this.runner.run(['ip', '-j', 'rule', 'show']), 4),
      ...parseRules(await this.runner.run(['ip', '-j', '-6', 'rule', 'show']), 6),
    ];
    const plan = rulesOwned ? planRules(rules, state === null ? [] : desiredRules(state)) : [];
    const routes: string[][] = [];
    for (const family of [4, 6] as const) {
      const present = await this.hasTunnelDefault(name, family);
      if (exit && !present) routes.push(tunnelDefault(family, 'add', name));
      if (!exit && present) routes.push(tunnelDefault(family, 'del', name));
    }
    await this.runAll(exit ? [...routes, ...plan] : [...plan, ...routes]);
    if (exit) this.exitOwner = name;
    else if (this.exitOwner === name || plan.length > 0) this.exitOwner = null;
  }

  private async hasTunnelDefault(name: string, family: 4 | 6): Promise<boolean> {
    const argv = ['ip', '-j', ...(family === 6 ? ['-6'] : []), 'route', 'show', 'table', String(WEFT_TABLE)];
    try {
      return hasTunnelDefault(await this.runner.run(argv), name);
    } catch (e) {
      // An empty table does not exist as far as `ip` is concerned.
      if (e instanceof CommandError && e.stderr.includes('does not exist')) return false;
      throw e;
    }
  }

  /** Whether the host forwards IP packets (read at each apply, so the table follows within one). */
  private async hostForwards(): Promise<boolean> {
    for (const key of ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']) {
      // A kernel without IPv6 has no such key: it forwards no IPv6.
      if ((await this.sysctl.read(key).catch(() => '0')) !== '0') return true;
    }
    return false;
  }

  /**
   * The state's nftables table. The engine applies its state again every 30 s whether or not it
   * changed, and rendering a 1,000-rule filter takes 40–70 ms of CPU, taken from the tunnel on a busy
   * host; so the last table is reused while its input is the same. The kernel's table is still read
   * back and replaced on every apply when it differs (deleted, edited by hand).
   */
  private tableFor(state: DesiredState, forwards: boolean): RenderedTable | null {
    const name = state.interface.name;
    const from = JSON.stringify([state, forwards]);
    const last = this.rendered.get(name);
    if (last?.from === from) return last.table;
    const table = renderTable(state, { forwards });
    this.rendered.set(name, { from, table });
    return table;
  }

  /** Installs the interface's nftables table, or replaces it in one transaction when it differs. */
  private async syncFirewall(name: string, table: RenderedTable | null): Promise<void> {
    if (table === null) {
      await this.removeFirewall(name);
      return;
    }
    const installed = await this.readTableHash(name);
    if (installed !== table.hash) {
      const carried = installed === undefined ? '' : await this.readFlows(name, table);
      await withPrivateFile('weft-nft-', 'rules.nft', table.file + carried, (file) =>
        this.change(['nft', '-f', file]),
      );
    }
    this.firewalls.add(name);
  }

  /**
   * The installed table's flows, as `nft -f` lines for the new table's sets of the same name (see
   * flows.ts). A listing it cannot read costs those flows' replies until they send again, not the apply.
   */
  private async readFlows(name: string, table: RenderedTable): Promise<string> {
    let lines = '';
    for (const set of table.flowSets) {
      try {
        const json = await this.runner.run(['nft', '-j', 'list', 'set', TABLE_FAMILY, table.name, set.name]);
        lines += renderFlows(TABLE_FAMILY, table.name, set.name, parseFlows(json, set.family));
      } catch (e) {
        // The installed table may predate the set (another filter, another version).
        if (e instanceof CommandError && /No such file or directory/.test(e.stderr)) continue;
        this.log.warn(`could not carry ${name}'s ${set.name} flows over: ${(e as Error).message}`);
      }
    }
    return lines;
  }

  private async removeFirewall(name: string): Promise<void> {
    if ((await this.readTableHash(name)) !== undefined) {
      await this.change(['nft', 'delete', 'table', TABLE_FAMILY, tableName(name)]);
    }
    this.firewalls.delete(name);
  }

  /**
   * The installed table's hash; null when it has none; undefined when there is no table (or no nft).
   * Both reads list no set element: the flow sets can hold 65,536 each, and nft fetches them all for
   * any listing of the whole table, even terse (docs/performance.md).
   */
  private async readTableHash(name: string): Promise<string | null | undefined> {
    const table = tableName(name);
    const absent = (e: unknown) =>
      e instanceof CommandError && /No such file or directory|ENOENT/.test(e.stderr);
    try {
      return parseTableHash(
        await this.runner.run(['nft', '-j', 'list', 'set', TABLE_FAMILY, table, HASH_SET]),
        table,
      );
    } catch (e) {
      if (!absent(e)) throw e;
    }
    // No hash set: no table, or one without it (an older helper's, edited by hand), which is replaced.
    // This listing fails only when the table is absent; what it prints (all tables' sets) is not read.
    try {
      await this.runner.run(['nft', '-t', 'list', 'sets', 'table', TABLE_FAMILY, table]);
      return null;
    } catch (e) {
      if (absent(e)) return undefined;
      throw e;
    }
  }

  /** The interface if it exists; refuses one that exists but is not WireGuard. */
  private async readDevice(name: string): Promise<Device | null> {
    const link = await this.readLink(name);
    if (link === null) return null;
    const notWireGuard = new BackendError(
      'invalid-request',
      `${name} exists and is not a WireGuard interface; refusing to touch it`,
    );
    // wireguard-go's interface is a plain TUN device: only its control socket tells it apart.
    if (link.kind !== 'wireguard' && link.kind !== 'tun') throw notWireGuard;
    try {
      const wg = parseDump(await this.runner.run(['wg', 'show', name, 'dump']));
      return { link, wg, backend: link.kind === 'wireguard' ? 'kernel' : 'wireguard-go' };
    } catch (e) {
      if (e instanceof CommandError && link.kind === 'tun') throw notWireGuard;
      throw e;
    }
  }

  private async readLink(name: string): Promise<LinkSnapshot | null> {
    try {
      return parseLink(await this.runner.run(['ip', '-j', '-d', 'address', 'show', 'dev', name]));
    } catch (e) {
      if (e instanceof CommandError && e.stderr.includes('does not exist')) return null;
      throw e;
    }
  }

  /** Kernel WireGuard if the kernel has it, else wireguard-go in the foreground as our child. */
  private async create(name: string): Promise<void> {
    this.setEndpoints.delete(name);
    try {
      await this.change(['ip', 'link', 'add', name, 'type', 'wireguard']);
      this.created.set(name, { child: null, stopping: false });
      return;
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      this.log.info(`no kernel WireGuard for ${name} (${e.stderr.trim()}); starting wireguard-go`);
    }
    await this.buffers.raise(name);
    const argv = ['wireguard-go', '-f', name];
    const child = this.runner.start(argv, { WG_PROCESS_FOREGROUND: '1' });
    this.log.info(`started ${formatCommand(argv)} (pid ${child.pid})`);
    const record: Created = { child, stopping: false };
    this.created.set(name, record);
    void child.exited.then((exit) => this.onChildExit(name, record, exit));
    try {
      await this.waitUntilReady(name, child);
    } catch (e) {
      await this.forget(name, record);
      throw e;
    }
  }

  private async waitUntilReady(name: string, child: ChildHandle): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      if (await this.isReady(name)) return;
      if (Date.now() >= deadline) {
        throw new BackendError(
          'os-error',
          `wireguard-go did not bring up ${name} within ${this.readyTimeoutMs} ms`,
        );
      }
      const exit = await exitWithin(child, READY_POLL_MS);
      if (exit !== null) {
        throw new BackendError(
          'os-error',
          `wireguard-go for ${name} ${describeExit(exit)} before it was ready`,
        );
      }
    }
  }

  /** The link exists and wireguard-go answers on its control socket (which is what `wg` talks to). */
  private async isReady(name: string): Promise<boolean> {
    if ((await this.readLink(name)) === null) return false;
    try {
      await this.runner.run(['wg', 'show', name, 'dump']);
      return true;
    } catch (e) {
      if (e instanceof CommandError) return false;
      throw e;
    }
  }

  /** wireguard-go died on its own: its interface went with it, and the next apply starts a new one. */
  private onChildExit(name: string, record: Created, exit: ChildExit): void {
    if (this.created.get(name) !== record || record.stopping) return;
    this.log.warn(`wireguard-go for ${name} ${describeExit(exit)}; the next apply recreates ${name}`);
    this.created.delete(name);
    void this.buffers.release(name);
  }

  /** Drops an interface we created: stops its wireguard-go and gives back the socket buffer limits. */
  private async forget(name: string, record: Created): Promise<void> {
    record.stopping = true;
    if (this.created.get(name) === record) this.created.delete(name);
    if (record.child !== null) await stopProcess(record.child, this.stopGraceMs);
    // Also for a wireguard-go taken over from an earlier helper (no child of ours); a no-op for kernel.
    await this.buffers.release(name);
  }

  /**
   * `wg syncconf` replaces the whole peer list (peers not in the file are removed). The file holds the
   * private key, so it lives in a fresh 0700 directory as a 0600 file only while `wg` reads it.
   */
  private async syncWireGuard(name: string, dump: WgDump, state: DesiredState): Promise<void> {
    const setBefore = this.setEndpoints.get(name) ?? new Map<string, string>();
    if (!wgMatches(dump, state, setBefore)) {
      await withPrivateFile('weft-wg-', 'wg.conf', renderConfig(state, setBefore), (file) =>
        this.change(['wg', 'syncconf', name, file]),
      );
      for (const key of peersToEmpty(dump, state)) {
        await this.change(['wg', 'set', name, 'peer', key, 'allowed-ips', '']);
      }
    }
    this.setEndpoints.set(name, requestedEndpoints(state));
  }

  private async syncAddresses(name: string, link: LinkSnapshot, desired: readonly string[]): Promise<void> {
    const plan = planAddresses(name, link, desired);
    if (plan.length === 0) return;
    await this.runAll(plan);
    // Deleting a primary IPv4 address also deletes the secondaries in its subnet, so read back once
    // and put back any that went with it.
    const after = await this.readLink(name);
    if (after === null)
      throw new BackendError('os-error', `${name} disappeared while its addresses were set`);
    await this.runAll(planAddresses(name, after, desired));
  }

  private async syncRoutes(name: string, desired: readonly string[]): Promise<void> {
    const current = [
      ...parseRoutes(await this.runner.run(['ip', '-j', 'route', 'show', 'dev', name]), 4),
      ...parseRoutes(await this.runner.run(['ip', '-j', '-6', 'route', 'show', 'dev', name]), 6),
    ];
    for (const command of planRoutes(name, current, desired)) {
      try {
        await this.change(command);
      } catch (e) {
        if (e instanceof CommandError && command.includes('add') && e.stderr.includes('File exists')) {
          const dst = command[command.indexOf('add') + 1];
          throw new BackendError(
            'os-error',
            `route ${dst} already exists through another interface; refusing to take it over (${e.message})`,
          );
        }
        throw e;
      }
    }
  }

  private async runAll(plan: readonly Command[]): Promise<void> {
    for (const command of plan) await this.change(command);
  }

  /** Runs a command that changes the OS, and logs it: the log is the audit trail of every change. */
  private async change(argv: readonly string[]): Promise<void> {
    await this.runner.run(argv);
    this.log.info(`ran ${formatCommand(argv)}`);
  }
}

/** Writes `content` to a 0600 file in a fresh 0700 directory, runs `use` on it, then removes both. */
async function withPrivateFile(
  prefix: string,
  fileName: string,
  content: string,
  use: (file: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    const file = join(dir, fileName);
    await writeFile(file, content, { mode: 0o600, flag: 'wx' });
    await use(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
