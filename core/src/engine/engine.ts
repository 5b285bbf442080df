import { EventEmitter } from 'node:events';
import {
  applyStreamMessage,
  type BackendState,
  type ExitNodeList,
  mapTokenAfter,
  type NetcheckReport,
  type NetMap,
  type Prefs,
  type PrefsPatch,
  patchPrefs,
  SerialQueue,
  type Status,
  type StreamServerMessage,
  type UpRequest,
} from '@weft/protocol';
import { normalizeControlUrl } from '../control-client/client.js';
import { defaultHostname } from '../control-client/hostname.js';
import { ControlMachine } from '../control-client/machine.js';
import { DnsSession } from '../dns/session.js';
import { WeftError } from '../errors.js';

import type { Target } from '../helper/reconciler.js';
import { describeError } from '../log/logger.js';
import { PathsSession } from '../paths/session.js';
import { NetmapCache } from '../state/netmap-cache.js';
import { desiredOsState } from './desired.js';
import { advertisedRoutes, checkExitNodeChoice, describeRoutes, ExitNodeState } from './exit-nodes.js';
import type { EngineOptions, EngineTiming } from './options.js';
import { type EngineView, engineStatus, untilRunning } from './status.js';
import { Tunnel } from './tunnel.js';
import { StatusWatch, type WatchListener } from './watch.js';

// The engine: owns the prefs, the netmap and the desired OS state, and ties this node's standing
// with control (control-client/), path selection (paths/) and the helper together.
// backendState is derived, never stored:
//   NeedsLogin  no node key authorized by control
//   Stopped     authorized, but the user wants the tunnel down
//   Starting    wanted up, waiting for a netmap or for the helper's first successful apply
//   Running     the helper has applied a netmap (control may be unreachable since: the last
//               netmap stays in force, and health says so)

export interface EngineEvents {
  change: [];
}

export class Engine extends EventEmitter<EngineEvents> {
  private prefs!: Prefs;
  private netmap: NetMap | null = null;
  /**
   * The token control gave with the message that made `netmap` (see MapToken): given back when the
   * stream opens again, so control can resume the map rather than send it whole. Null: none (a
   * message without one, or a cache without one). Cached with the map, as one record.
   */
  private mapToken: string | null = null;
  /** Sign-in, authorization, the netmap stream and key rotation. */
  private readonly control: ControlMachine;
  /** Relays, relay proxy and path selection; alive while the stream is. */
  private readonly paths: PathsSession;
  /** Something the user should know until the next `up`, such as why control logged us out. */
  private notice: string | null = null;
  /** Exit-node latencies and the servers kept outside the tunnel. */
  private readonly exits = new ExitNodeState();
  /** State transitions, one at a time in call order. */
  private readonly ops = new SerialQueue();
  private readonly tunnel: Tunnel;
  private readonly netmapCache: NetmapCache;
  private readonly watchers: StatusWatch;
  private readonly timing: EngineTiming;
  /** The tailnet resolver (MagicDNS, split DNS) and whether the OS is pointed at it (`weft dns`). */
  readonly dns: DnsSession;

  constructor(private readonly opts: EngineOptions) {
    super();
    this.timing = opts.timing ?? {};
    this.control = this.controlMachine();
    this.tunnel = new Tunnel({
      helper: opts.helper,
      interfaceName: opts.interfaceName,
      log: opts.log,
      debounceMs: this.timing.debounceMs,
      reapplyMs: this.timing.reapplyMs,
    });
    this.tunnel.on('change', () => {
      this.syncDns();
      this.emit('change');
    });
    this.dns = new DnsSession(opts.log, () => this.tunnel.iface?.osResolvers ?? []);
    // Where the resolver listens is part of the desired state.
    this.dns.on('change', () => {
      this.reconcile();
      this.emit('change');
    });
    this.netmapCache = new NetmapCache(opts.store, opts.log);
    this.watchers = new StatusWatch(() => this.status());
    this.on('change', () => this.watchers.changed());
    this.exits.on('change', () => this.reconcile());
    this.paths = this.pathsSession();
  }

  /** Loads state and resumes: with a cached netmap the tunnel comes up before control answers. */
  async start(): Promise<void> {
    const { store, log } = this.opts;
    await store.init();
    this.prefs = await store.loadPrefs();
    await this.control.load();
    const { login } = this.control;
    const held = login ? await this.netmapCache.load(login) : null;
    this.netmap = held?.netmap ?? null;
    this.mapToken = held?.mapToken ?? null;
    this.syncDns();
    this.tunnel.start();
    this.reconcile();
    if (this.control.login && this.prefs.wantRunning) this.startSession();
    log.info(`engine started: ${this.backendState()}`);
  }

  /** Stops everything and takes the interface down (prefs are kept: a restart resumes). */
  async shutdown(): Promise<void> {
    this.exits.close();
    this.paths.close();
    await this.control.stop();
    this.watchers.close();
    await this.tunnel.close();
    await this.dns.close();
    await this.netmapCache.flush();
  }

  backendState(): BackendState {
    if (!this.control.login) return 'NeedsLogin';
    if (!this.prefs.wantRunning) return 'Stopped';
    return this.tunnel.applied && this.netmap ? 'Running' : 'Starting';
  }

  /** Status without asking the helper (interface figures as last read). */
  snapshot(): Status {
    return engineStatus(this.view());
  }

  /** Status with the interface's live figures read through the helper. */
  async status(): Promise<Status> {
    await this.tunnel.readLive();
    return this.snapshot();
  }

  /**
   * Changes the routing settings (exit node, allow-LAN, what this node advertises, accept-routes);
   * they are saved, sent to control (advertised routes) and applied at once.
   */
  async setPrefs(patch: PrefsPatch): Promise<void> {
    await this.ops.run(async () => {
      if (patch.exitNodeId !== this.prefs.exitNodeId) checkExitNodeChoice(this.netmap, patch.exitNodeId);
      const next = patchPrefs(this.prefs, patch);
      const routes = (p: Prefs) => JSON.stringify(advertisedRoutes(p));
      const advertisedChanged = routes(next) !== routes(this.prefs);
      await this.savePrefs(next);
      if (advertisedChanged) this.control.setAdvertisedRoutes(advertisedRoutes(next));
      this.opts.log.info(`routing: ${describeRoutes(next)}`);
      this.syncDns();
      this.reconcile();
      this.emit('change');
    });
  }

  /** The exit nodes on offer, with their latency measured now (`weft exit-node list|suggest`). */
  async exitNodes(): Promise<ExitNodeList> {
    const running = this.backendState() === 'Running';
    const list = await this.exits.list(this.netmap, this.prefs, running);
    if (running) this.emit('change');
    return list;
  }

  /** What the node knows of its NAT and relays (`weft netcheck`). */
  async netcheck(): Promise<NetcheckReport> {
    if (!this.paths.current) throw new WeftError('conflict', 'not connected: run weft up first');
    await this.status();
    return this.paths.current.netcheck();
  }

  watch(listener: WatchListener): () => void {
    return this.watchers.add(listener);
  }

  /**
   * Logs in if needed and brings the tunnel up. Resolves once Running, or once an interactive
   * login is pending (status.authUrl); rejects with a WeftError saying what went wrong.
   */
  async up(req: UpRequest): Promise<void> {
    const pendingLogin = await this.ops.run(() => this.doUp(req));
    if (!pendingLogin) await untilRunning(this, () => this.view(), this.timing.upTimeoutMs ?? 45_000);
  }

  async down(): Promise<void> {
    await this.ops.run(async () => {
      await this.control.cancelSignIn();
      await this.savePrefs({ ...this.prefs, wantRunning: false });
      await this.stopSession();
      await this.tunnel.down();
    });
  }

  /**
   * Logs out: control is asked first to expire the node key at once (so a copy of this machine's
   * state is useless), then the login is forgotten here, whatever control answered.
   */
  async logout(): Promise<void> {
    await this.ops.run(async () => this.forgetLogin(await this.control.logoutAtControl()));
  }

  /** Gives up a pending interactive login, here and at control (its link stops working). */
  async cancelLogin(): Promise<void> {
    await this.ops.run(async () => {
      if (await this.control.cancelSignIn()) this.notice = 'sign-in cancelled';
      this.emit('change');
    });
  }

  /**
   * Sends the helper the whole desired state again now, and resolves once it has it: a restarted
   * helper starts from nothing (the desktop app's supervisor calls this after every restart).
   */
  async reapply(): Promise<void> {
    await this.ops.run(async () => {
      this.reconcile();
      // Wanted up without a netmap yet: nothing to send; the first map is applied when it comes.
      if (this.tunnel.targeted) await this.tunnel.sync();
    });
  }

  // --- the transitions -------------------------------------------------------------------------

  /** Returns true when an interactive login is now pending. */
  private async doUp(req: UpRequest): Promise<boolean> {
    const controlUrl = normalizeControlUrl(req.controlUrl);
    this.control.checkSameControl(controlUrl);
    const hostname = req.hostname ?? this.prefs.hostname ?? defaultHostname();
    const wantUp = () => this.savePrefs({ ...this.prefs, controlUrl, hostname, wantRunning: true });
    this.notice = null;
    if ((await this.control.signInOrResume({ ...req, controlUrl, hostname }, wantUp)) === 'needs-auth') {
      this.emit('change');
      return true;
    }
    this.signedIn();
    return false;
  }

  /** Authorized: the stream, paths and tunnel follow. */
  private signedIn(): void {
    this.tunnel.problem = null;
    this.startSession();
    this.reconcile();
    this.emit('change');
  }

  /** Forgets the node's authorization and key, and takes the tunnel down: NeedsLogin. */
  private async forgetLogin(notice: string | null): Promise<void> {
    await this.stopSession();
    this.netmap = null;
    this.mapToken = null;
    this.syncDns();
    this.tunnel.iface = null;
    await this.control.forget();
    await this.netmapCache.delete();
    this.notice = notice;
    await this.savePrefs({ ...this.prefs, wantRunning: false });
    await this.tunnel.down();
  }

  /** Points the reconciler at what the OS should look like now. */
  private reconcile(): void {
    const target = this.target();
    if (target) this.tunnel.set(target);
  }

  private target(): Target | null {
    const name = this.opts.interfaceName;
    const { login, nodeKey } = this.control;
    if (!login || !this.prefs.wantRunning || !nodeKey) return { op: 'down', interface: name };
    // Wanted up but no map yet: leave the OS as it is until one arrives.
    const netmap = this.netmap;
    if (!netmap) return null;
    const state = desiredOsState({
      netmap,
      prefs: this.prefs,
      paths: this.paths.current,
      mtu: this.paths.mtu.mtu,
      interfaceName: name,
      nodePrivateKey: nodeKey.privateKey,
      ...this.exits.machineFacts(login.controlUrl, netmap, name),
    });
    return { op: 'apply', state: this.prefs.useTailnetDns ? this.dns.withDns(state, netmap) : state };
  }

  /** The resolver follows the netmap, and listens while Running with tailnet DNS wanted. */
  private syncDns(): void {
    // Before start() the prefs are not loaded: nothing is wanted yet.
    const wanted = this.prefs?.useTailnetDns === true;
    void this.dns.sync(this.netmap, wanted && this.backendState() === 'Running', wanted);
  }

  // --- control and paths ------------------------------------------------------------------------

  private controlMachine(): ControlMachine {
    const control = new ControlMachine({
      ...this.timing,
      store: this.opts.store,
      log: this.opts.log,
      serialize: (fn) => this.ops.run(fn),
      hostname: () => this.prefs.hostname ?? defaultHostname(),
      keyRotationMs: this.opts.keyRotationMs,
    });
    control.on('message', (msg) => this.onStreamMessage(msg));
    control.on('signedIn', () => this.signedIn());
    control.on('signInEnded', (notice) => {
      this.notice = notice;
      this.emit('change');
    });
    control.on('loggedOut', (reason) =>
      this.ops
        .run(() => this.forgetLogin(`logged out by control: ${reason}`))
        .catch((err) => this.opts.log.warn(`logout: ${describeError(err)}`)),
    );
    control.on('rotated', (self) => this.rotated(self));
    control.on('change', () => this.emit('change'));
    return control;
  }

  private startSession(): void {
    if (this.control.streaming || !this.control.login) return;
    this.control.startStream(advertisedRoutes(this.prefs), () =>
      this.netmap === null ? null : this.mapToken,
    );
    this.paths.start(this.control.nodeKey, this.prefs.listenPort);
    this.paths.reportEndpoints();
  }

  private pathsSession(): PathsSession {
    const paths = new PathsSession({
      log: this.opts.log,
      netmap: () => this.netmap,
      interfaceName: this.opts.interfaceName,
      ...(this.opts.addressSource ? { addressSource: this.opts.addressSource } : {}),
      ...(this.opts.portMapping !== undefined ? { portMapping: this.opts.portMapping } : {}),
      ...this.timing.connectivity,
      readInterface: () => this.tunnel.readInterface(),
      applied: () => this.tunnel.synced(),
      readUnderlay: this.opts.readUnderlay,
      probePath: this.opts.probePath,
      reportEndpoints: (candidates) => {
        if (this.control.streaming) this.control.setEndpoints(candidates);
      },
      endpointsPollMs: this.timing.endpointsPollMs,
    });
    paths.on('change', () => this.reconcile());
    paths.on('mtu', (mtuChanged) => {
      // Only while up: a probe answering during a logout must not race it to the helper.
      if (mtuChanged && this.control.login !== null && this.prefs.wantRunning) this.reconcile();
      this.emit('change');
    });
    paths.on('publicAddressChanged', () => this.control.reconnect());
    paths.on('status', () => this.emit('change'));
    return paths;
  }

  private async stopSession(): Promise<void> {
    this.paths.close();
    await this.control.stopStream();
  }

  private onStreamMessage(msg: StreamServerMessage): void {
    this.netmap = applyStreamMessage(this.netmap, msg);
    this.mapToken = mapTokenAfter(msg);
    this.cacheNetmap();
    this.syncDns();
    this.paths.netmapChanged();
    this.reconcile();
    this.emit('change');
  }

  /** Control accepted a new node key: WireGuard and the relays switch to it. */
  private rotated(self: NetMap['self']): void {
    if (this.netmap) {
      this.netmap = { ...this.netmap, self };
      this.cacheNetmap();
    }
    this.paths.restart(this.control.nodeKey, this.prefs.listenPort);
    this.reconcile();
    this.emit('change');
  }

  // --- helpers ---------------------------------------------------------------------------------

  /** Writes the map with the token that names its peers, together: never one without the other. */
  private cacheNetmap(): void {
    const { login } = this.control;
    if (login && this.netmap) this.netmapCache.save(login, { netmap: this.netmap, mapToken: this.mapToken });
  }

  private async savePrefs(prefs: Prefs): Promise<void> {
    await this.opts.store.savePrefs(prefs);
    this.prefs = prefs;
  }

  private view(): EngineView {
    return {
      backendState: this.backendState(),
      prefs: this.prefs,
      netmap: this.netmap,
      control: this.control,
      tunnel: this.tunnel,
      paths: this.paths.current,
      notice: this.notice,
      mtu: this.paths.mtu,
      exits: this.exits,
    };
  }
}
