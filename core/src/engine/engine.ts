import { EventEmitter } from 'node:events';
import { hostname as osHostname } from 'node:os';
import {
  applyStreamMessage,
  type BackendState,
  type ExitNodeList,
  type InterfaceStatus,
  type NetcheckReport,
  type NetMap,
  nodeKeyPossessionProof,
  type Prefs,
  type PrefsPatch,
  type RegisterRequest,
  type Status,
  type StreamServerMessage,
  type UpRequest,
} from '@weft/protocol';
import { ControlClient, ControlHttpError, isLoginEnded } from '../control-client/client.js';
import { ControlKeyPinning } from '../control-client/key-pin.js';
import { LoginWait } from '../control-client/login.js';
import { DEFAULT_KEY_ROTATION_MS, rotateNodeKey } from '../control-client/rotation.js';
import { MapSession } from '../control-client/session.js';
import { WeftError } from '../errors.js';
import type { HelperClient } from '../helper/client.js';
import { type ReconcileResult, Reconciler, type Target } from '../helper/reconciler.js';
import { describeError, type Logger } from '../log/logger.js';
import { Connectivity, type ConnectivityOptions } from '../paths/connectivity.js';
import { type AddressSource, localEndpoints, osAddresses } from '../paths/local-endpoints.js';
import { Backoff, type BackoffOptions } from '../retry/backoff.js';
import { LatestWriter } from '../state/latest-writer.js';
import type { Login } from '../state/schemas.js';
import type { KeyHandle, StateStore } from '../state/store.js';
import { desiredOsState } from './desired.js';
import {
  advertisedRoutes,
  exitNodeList,
  exitNodeProblem,
  localPrefixes,
  measureLatency,
  osInterfacePrefixes,
  relayUrls,
  routeStatus,
  ServerAddresses,
} from './exit-nodes.js';
import { buildStatus } from './status.js';
import { StatusWatch, type WatchListener } from './watch.js';

// The engine: one state machine tying the control stream, the desired OS state and the helper
// together. backendState is derived, never stored:
//   NeedsLogin  no node key authorized by control
//   Stopped     authorized, but the user wants the tunnel down
//   Starting    wanted up, waiting for a netmap or for the helper's first successful apply
//   Running     the helper has applied a netmap (control may be unreachable since: the last
//               netmap stays in force, and health says so)

export interface EngineTiming {
  controlBackoff?: BackoffOptions;
  pingMs?: number;
  endpointsPollMs?: number;
  reapplyMs?: number;
  debounceMs?: number;
  /** How long `up` waits for Running before answering with a timeout. */
  upTimeoutMs?: number;
  /** Back-off while control cannot be asked about a pending interactive login. */
  loginBackoff?: BackoffOptions;
  /** Back-off between failed node key rotations (default from 1 minute up to 1 hour). */
  rotationBackoff?: BackoffOptions;
  /** Path selection and relay timing (tests make them short). */
  connectivity?: Partial<
    Pick<ConnectivityOptions, 'pathTiming' | 'pollMs' | 'fastPollMs' | 'relayBackoff' | 'relayPingMs'>
  >;
}

export interface EngineOptions {
  store: StateStore;
  helper: HelperClient;
  interfaceName: string;
  log: Logger;
  timing?: EngineTiming;
  addressSource?: AddressSource;
  /** How often to rotate the node key (default 30 days); null or 0 never rotates. */
  keyRotationMs?: number | null;
}

export interface EngineEvents {
  change: [];
}

export class Engine extends EventEmitter<EngineEvents> {
  private prefs!: Prefs;
  private machineKey!: KeyHandle;
  private login: Login | null = null;
  private nodeKey: KeyHandle | null = null;
  private netmap: NetMap | null = null;
  private session: MapSession | null = null;
  /** Relays, relay proxy and path selection; alive while the session is. */
  private conn: Connectivity | null = null;
  /** The interactive login waiting for a person to sign in in their browser, and its link. */
  private loginWait: LoginWait | null = null;
  private authUrl: string | null = null;
  private authUrlExpiresAt: string | null = null;
  /** Why control cannot be asked about the pending login right now (it is retried). */
  private loginProblem: WeftError | null = null;
  private rotationTimer: NodeJS.Timeout | null = null;
  private rotationBackoff = new Backoff();
  /** A rotation was sent but its answer not recorded (node-next.key exists): send it again. */
  private rotationPending = false;
  private rotating = false;
  private rotationProblem: WeftError | null = null;
  /** The rotation in flight: shutdown waits for it, so control's answer is recorded. */
  private rotation: Promise<void> | null = null;
  private shuttingDown = false;
  /** Whether the helper has applied an "up" state since the tunnel was last wanted up. */
  private tunnelApplied = false;
  private controlProblem: WeftError | null = null;
  private helperProblem: WeftError | null = null;
  /** Something the user should know until the next `up`, such as why control logged us out. */
  private notice: string | null = null;
  private lastIface: InterfaceStatus | null = null;
  private endpointsTimer: NodeJS.Timeout | null = null;
  /** Control and relay servers, which stay outside the tunnel while an exit node is in use. */
  private readonly servers = new ServerAddresses();
  /** Last measured round trip to exit nodes, by peer id (null: no answer). */
  private readonly latency = new Map<string, number | null>();
  private ops: Promise<unknown> = Promise.resolve();
  private readonly reconciler: Reconciler;
  private readonly netmapWriter: LatestWriter<NetMap>;
  private readonly watchers: StatusWatch;
  private readonly timing: EngineTiming;
  private readonly keyPinning: ControlKeyPinning;

  constructor(private readonly opts: EngineOptions) {
    super();
    this.timing = opts.timing ?? {};
    this.keyPinning = new ControlKeyPinning(opts.store);
    this.rotationBackoff = new Backoff({ baseMs: 60_000, capMs: 3_600_000, ...this.timing.rotationBackoff });
    this.reconciler = new Reconciler(opts.helper, {
      log: opts.log,
      debounceMs: this.timing.debounceMs,
      reapplyMs: this.timing.reapplyMs,
    });
    this.reconciler.on('result', (r) => this.onReconciled(r));
    this.netmapWriter = new LatestWriter(
      (m) => opts.store.saveNetmap(m),
      (err) => opts.log.warn(`could not cache the netmap: ${describeError(err)}`),
    );
    this.watchers = new StatusWatch(() => this.status());
    this.on('change', () => this.watchers.changed());
    this.servers.on('change', () => this.reconcile());
    opts.helper.on('connected', () => this.emit('change'));
    opts.helper.on('disconnected', () => this.emit('change'));
  }

  /** Loads state and resumes: with a cached netmap the tunnel comes up before control answers. */
  async start(): Promise<void> {
    const { store, log } = this.opts;
    await store.init();
    this.prefs = await store.loadPrefs();
    this.machineKey = await store.loadOrCreateKey('machine');
    this.nodeKey = await store.loadKey('node');
    this.login = await store.loadLogin();
    await this.recoverRotation();
    if (this.login && this.nodeKey?.publicKey !== this.login.nodePublicKey) {
      log.warn('the authorized node key is missing or changed; login required');
      await store.deleteLogin();
      this.login = null;
    }
    if (this.login) {
      try {
        this.netmap = await store.loadNetmap();
      } catch (err) {
        // Only a cache: control sends a full map again.
        log.warn(`ignoring the cached netmap: ${describeError(err)}`);
      }
    }
    this.opts.helper.start();
    this.reconcile();
    if (this.login && this.prefs.wantRunning) this.startSession();
    this.scheduleRotation();
    this.endpointsTimer = setInterval(() => this.reportEndpoints(), this.timing.endpointsPollMs ?? 5_000);
    log.info(`engine started: ${this.backendState()}`);
  }

  /** Stops everything and takes the interface down (prefs are kept: a restart resumes). */
  async shutdown(): Promise<void> {
    if (this.endpointsTimer) clearInterval(this.endpointsTimer);
    this.servers.close();
    this.stopLoginWait();
    this.shuttingDown = true;
    this.clearRotationTimer();
    await this.rotation;
    await this.stopSession();
    this.reconciler.stop();
    this.watchers.close();
    if (this.opts.helper.connected) {
      try {
        await this.opts.helper.down(this.opts.interfaceName);
      } catch (err) {
        this.opts.log.warn(`helper down on shutdown: ${describeError(err)}`);
      }
    }
    await this.opts.helper.close();
    await this.netmapWriter.flush();
  }

  backendState(): BackendState {
    if (!this.login) return 'NeedsLogin';
    if (!this.prefs.wantRunning) return 'Stopped';
    return this.tunnelApplied && this.netmap ? 'Running' : 'Starting';
  }

  /** Status without asking the helper (interface figures as last read). */
  snapshot(): Status {
    const health: string[] = [];
    const wanted = this.login !== null && this.prefs.wantRunning;
    if (wanted && this.controlProblem) health.push(this.controlProblem.message);
    if (this.helperProblem) health.push(this.helperProblem.message);
    else if (wanted && !this.opts.helper.connected)
      health.push(`weft-helper is not reachable at ${this.opts.helper.socketPath}`);
    if (this.notice) health.push(this.notice);
    if (this.loginWait && this.loginProblem) health.push(this.loginProblem.message);
    if (this.login && this.rotationProblem) health.push(this.rotationProblem.message);
    if (wanted && this.conn) health.push(...this.conn.problems());
    const conn = wanted ? this.conn : null;
    return this.routedStatus(
      buildStatus({
        peerPath: conn ? (key, endpoint) => conn.peerPath(key, endpoint) : undefined,
        backendState: this.backendState(),
        controlUrl: this.login?.controlUrl ?? this.prefs.controlUrl,
        authUrl: this.authUrl,
        authUrlExpiresAt: this.authUrlExpiresAt,
        netmap: this.netmap,
        iface: wanted ? this.lastIface : null,
        health,
      }),
    );
  }

  /** Status with the interface's live figures read through the helper. */
  async status(): Promise<Status> {
    if (this.reconciler.current?.op === 'apply' && this.opts.helper.connected) {
      this.reconciler.flushPending();
      try {
        this.lastIface = await this.opts.helper.status(this.opts.interfaceName);
      } catch (err) {
        this.opts.log.debug(`helper status: ${describeError(err)}`);
      }
    }
    return this.snapshot();
  }

  /**
   * Changes the routing settings (exit node, allow-LAN, what this node advertises, accept-routes);
   * they are saved, sent to control (advertised routes) and applied at once.
   */
  async setPrefs(patch: PrefsPatch): Promise<void> {
    await this.exclusive(async () => {
      const id = patch.exitNodeId;
      if (id !== undefined && id !== null && id !== this.prefs.exitNodeId) {
        const peer = this.netmap?.peers.find((p) => p.id === id);
        if (this.netmap && id === this.netmap.self.id) {
          throw new WeftError('invalid-request', 'this node cannot be its own exit node');
        }
        if (!peer) throw new WeftError('invalid-request', `no peer with id ${id} in the tailnet`);
        if (!peer.exitNodeOption) {
          throw new WeftError(
            'conflict',
            `${peer.name} does not offer an exit node to this node (it must advertise one, and an admin or the policy approve it)`,
          );
        }
      }
      const next: Prefs = { ...this.prefs };
      for (const [k, v] of Object.entries(patch)) if (v !== undefined) Object.assign(next, { [k]: v });
      const routes = (p: Prefs) => JSON.stringify(advertisedRoutes(p));
      const advertisedChanged = routes(next) !== routes(this.prefs);
      await this.savePrefs(next);
      if (advertisedChanged) this.session?.setAdvertisedRoutes(advertisedRoutes(next));
      this.opts.log.info(
        `routing: exit node ${next.exitNodeId ?? 'none'}${next.exitNodeId ? ` (allow LAN ${next.exitNodeAllowLan ? 'on' : 'off'})` : ''}, advertising ${advertisedRoutes(next).join(', ') || 'nothing'}, accept routes ${next.acceptRoutes ? 'on' : 'off'}`,
      );
      this.reconcile();
      this.emit('change');
    });
  }

  /** The exit nodes on offer, with their latency measured now (`weft exit-node list|suggest`). */
  async exitNodes(): Promise<ExitNodeList> {
    const offered = exitNodeList(this.netmap, this.prefs, this.latency).exitNodes;
    if (this.backendState() === 'Running') {
      await Promise.all(
        offered.map(async (n) => {
          const v4 = n.addresses.find((a) => !a.includes(':')) ?? n.addresses[0];
          this.latency.set(n.id, n.online && v4 ? await measureLatency(v4) : null);
        }),
      );
      this.emit('change');
    }
    return exitNodeList(this.netmap, this.prefs, this.latency);
  }

  /** What the node knows of its NAT and relays (`weft netcheck`). */
  async netcheck(): Promise<NetcheckReport> {
    if (!this.conn) throw new WeftError('conflict', 'not connected: run weft up first');
    await this.status();
    const source = this.opts.addressSource ?? osAddresses;
    return this.conn.netcheck(localEndpoints(source, this.opts.interfaceName, this.prefs.listenPort));
  }

  watch(listener: WatchListener): () => void {
    return this.watchers.add(listener);
  }

  /**
   * Logs in if needed and brings the tunnel up. Resolves once Running, or once an interactive
   * login is pending (status.authUrl); rejects with a WeftError saying what went wrong.
   */
  async up(req: UpRequest): Promise<void> {
    const pendingLogin = await this.exclusive(() => this.doUp(req));
    if (!pendingLogin) await this.waitRunning(this.timing.upTimeoutMs ?? 45_000);
  }

  async down(): Promise<void> {
    await this.exclusive(async () => {
      await this.cancelLoginWait();
      await this.savePrefs({ ...this.prefs, wantRunning: false });
      await this.stopSession();
      await this.settleDown();
    });
  }

  /**
   * Logs out: control is asked first to expire the node key at once (so a copy of this machine's
   * state is useless), then the login is forgotten here, whatever control answered.
   */
  async logout(): Promise<void> {
    await this.exclusive(async () => this.forgetLogin(await this.tellControlLogout()));
  }

  /** Gives up a pending interactive login, here and at control (its link stops working). */
  async cancelLogin(): Promise<void> {
    await this.exclusive(async () => {
      if (await this.cancelLoginWait()) this.notice = 'sign-in cancelled';
      this.emit('change');
    });
  }

  /**
   * Sends the helper the whole desired state again now, and resolves once it has it: a restarted
   * helper starts from nothing (the desktop app's supervisor calls this after every restart).
   */
  async reapply(): Promise<void> {
    await this.exclusive(async () => {
      this.reconcile();
      // Wanted up without a netmap yet: nothing to send; the first map is applied when it comes.
      if (!this.reconciler.current) return;
      const r = await this.reconciler.sync();
      if (!r.ok) throw r.error;
    });
  }

  // --- the transitions -------------------------------------------------------------------------

  /** Returns true when an interactive login is now pending. */
  private async doUp(req: UpRequest): Promise<boolean> {
    const controlUrl = normalizeUrl(req.controlUrl);
    if (this.login && this.login.controlUrl !== controlUrl) {
      throw new WeftError(
        'conflict',
        `logged in to ${this.login.controlUrl}, not ${controlUrl}; run 'weft logout' first to switch`,
      );
    }
    const hostname = req.hostname ?? this.prefs.hostname ?? defaultHostname();
    this.notice = null;
    if (!this.login) {
      this.stopLoginWait();
      const nodeKey = await this.opts.store.loadOrCreateKey('node');
      const client = this.controlClient(controlUrl, req.acceptNewControlKey);
      const reg: RegisterRequest = {
        nodeKey: nodeKey.publicKey,
        hostname,
        os: process.platform,
        nodeKeyProof: nodeKeyPossessionProof({
          nodePrivateKey: nodeKey.privateKey,
          controlPublicKey: await client.controlKey(),
          machineKey: this.machineKey.publicKey,
        }),
      };
      // Nothing is saved until control accepts: a bad key or an unreachable control changes nothing.
      const res = await client.register(req.authKey ? { ...reg, authKey: req.authKey } : reg);
      this.nodeKey = nodeKey;
      await this.savePrefs({ ...this.prefs, controlUrl, hostname, wantRunning: true });
      if (res.status === 'needs-auth') {
        this.authUrl = res.authUrl;
        this.authUrlExpiresAt = res.expiresAt ?? null;
        this.startLoginWait(client, reg);
        this.emit('change');
        return true;
      }
      await this.authorized(controlUrl, nodeKey);
    } else {
      // Logged in already: the flag re-pins a control that was reinstalled on purpose.
      if (req.acceptNewControlKey) await this.controlClient(controlUrl, true).controlKey();
      await this.savePrefs({ ...this.prefs, controlUrl, hostname, wantRunning: true });
    }
    this.helperProblem = null;
    this.startSession();
    this.reconcile();
    this.emit('change');
    return false;
  }

  private async authorized(controlUrl: string, nodeKey: KeyHandle): Promise<void> {
    this.login = { controlUrl, nodePublicKey: nodeKey.publicKey, authorizedAt: new Date().toISOString() };
    this.authUrl = null;
    this.authUrlExpiresAt = null;
    await this.opts.store.saveLogin(this.login);
    this.opts.log.info(`node key authorized by ${controlUrl}`);
    this.scheduleRotation();
  }

  /** Forgets the node's authorization and key, and takes the tunnel down: NeedsLogin. */
  private async forgetLogin(notice: string | null): Promise<void> {
    const { store } = this.opts;
    await this.cancelLoginWait();
    this.clearRotationTimer();
    this.rotationProblem = null;
    this.rotationPending = false;
    await this.stopSession();
    this.login = null;
    this.netmap = null;
    this.lastIface = null;
    this.netmapWriter.discard();
    await this.netmapWriter.flush();
    // The login record goes first: without it the rest is unauthorized, whatever a crash leaves.
    await store.deleteLogin();
    await store.deleteNetmap();
    await store.deleteKey('node');
    await store.deleteKey('node-next');
    this.nodeKey = null;
    this.notice = notice;
    await this.savePrefs({ ...this.prefs, wantRunning: false });
    await this.settleDown();
  }

  /** Sets the "down" target and waits for the helper; the reconciler retries if this fails. */
  private async settleDown(): Promise<void> {
    this.tunnelApplied = false;
    this.reconcile();
    this.emit('change');
    const r = await this.reconciler.sync();
    if (!r.ok) {
      throw new WeftError(
        r.error.code,
        `${r.error.message} (the interface is removed once weft-helper answers)`,
      );
    }
  }

  /** Points the reconciler at what the OS should look like now. */
  private reconcile(): void {
    const target = this.target();
    if (target) this.reconciler.set(target);
  }

  private target(): Target | null {
    const name = this.opts.interfaceName;
    if (!this.login || !this.prefs.wantRunning || !this.nodeKey) return { op: 'down', interface: name };
    // Wanted up but no map yet: leave the OS as it is until one arrives.
    const netmap = this.netmap;
    if (!netmap) return null;
    // The control server and the relays stay outside the tunnel while an exit node is in use.
    this.servers.set([this.login.controlUrl, ...relayUrls(netmap)]);
    return {
      op: 'apply',
      state: desiredOsState({
        netmap,
        prefs: this.prefs,
        paths: this.conn,
        interfaceName: name,
        nodePrivateKey: this.nodeKey.privateKey,
        localPrefixes: localPrefixes(osInterfacePrefixes, name, netmap.tailnetRanges),
        bypass: this.servers.prefixes(),
      }),
    };
  }

  private routedStatus(status: Status): Status {
    const wanted = this.login !== null && this.prefs.wantRunning;
    const problem = wanted ? exitNodeProblem(this.netmap, this.prefs) : null;
    const withHealth = problem ? { ...status, health: [...status.health, problem] } : status;
    return routeStatus(withHealth, status.self ? this.netmap : null, this.prefs, this.latency);
  }

  private onReconciled(r: ReconcileResult): void {
    if (r.ok) {
      this.helperProblem = null;
      if (r.target.op === 'apply' && !this.tunnelApplied) {
        this.tunnelApplied = true;
        this.opts.log.info(`tunnel ${r.target.state.interface.name} is up`);
      }
    } else {
      this.helperProblem = r.error;
    }
    this.emit('change');
  }

  // --- control ---------------------------------------------------------------------------------

  /** A client of control at `controlUrl` that checks control's key against the pinned one. */
  private controlClient(controlUrl: string, acceptNewControlKey = false): ControlClient {
    return new ControlClient(controlUrl, this.machineKey.privateKey, {
      keyCheck: this.keyPinning,
      acceptNewControlKey,
    });
  }

  private startSession(): void {
    if (this.session || !this.login) return;
    this.controlProblem = null;
    const session = new MapSession(this.controlClient(this.login.controlUrl), {
      log: this.opts.log,
      backoff: this.timing.controlBackoff,
      pingMs: this.timing.pingMs,
    });
    session.on('message', (msg) => this.onStreamMessage(msg));
    session.on('disconnected', (err) => {
      this.controlProblem = err;
      this.emit('change');
    });
    session.on('refused', (err) => this.loggedOutByControl(err.message));
    this.session = session;
    session.setAdvertisedRoutes(advertisedRoutes(this.prefs));
    this.startConnectivity();
    session.start();
    this.reportEndpoints();
  }

  private startConnectivity(): void {
    if (this.conn || !this.nodeKey) return;
    const iface = this.opts.interfaceName;
    const conn = new Connectivity({
      nodePrivateKey: this.nodeKey.privateKey,
      nodeKey: this.nodeKey.publicKey,
      listenPort: this.prefs.listenPort,
      log: this.opts.log,
      netmap: () => this.netmap,
      ...this.timing.connectivity,
      readInterface: async () => {
        if (this.reconciler.current?.op !== 'apply' || !this.opts.helper.connected) return null;
        this.lastIface = await this.opts.helper.status(iface);
        return this.lastIface;
      },
    });
    conn.on('change', () => this.reconcile());
    let publicIps = '';
    conn.on('endpoints', () => {
      // Our public address changed (a new lease, another network): connections through the old
      // one are dead even if no packet said so. Re-open the control stream at once.
      const ips = [...new Set(conn.reflectedEndpoints().map((e) => e.replace(/:\d+$/, '')))].sort().join(' ');
      const known = publicIps.split(' ');
      if (publicIps !== '' && ips.split(' ').some((ip) => ip !== '' && !known.includes(ip))) {
        this.opts.log.info(`public address changed (${publicIps} → ${ips}): reconnecting to control`);
        this.session?.reconnect();
      }
      if (ips !== '') publicIps = ips;
      this.reportEndpoints();
    });
    conn.on('status', () => this.emit('change'));
    this.conn = conn;
    conn.netmapChanged();
  }

  private async stopSession(): Promise<void> {
    this.conn?.close();
    this.conn = null;
    const session = this.session;
    this.session = null;
    this.controlProblem = null;
    await session?.stop();
  }

  private onStreamMessage(msg: StreamServerMessage): void {
    if (msg.type === 'logout') {
      this.loggedOutByControl(msg.reason);
      return;
    }
    this.netmap = applyStreamMessage(this.netmap, msg);
    this.controlProblem = null;
    if (this.netmap) this.netmapWriter.push(this.netmap);
    this.conn?.netmapChanged();
    this.reconcile();
    this.emit('change');
  }

  private loggedOutByControl(reason: string): void {
    this.opts.log.warn(`control logged this node out: ${reason}`);
    this.exclusive(() => this.forgetLogin(`logged out by control: ${reason}`)).catch((err) =>
      this.opts.log.warn(`logout: ${describeError(err)}`),
    );
  }

  private reportEndpoints(): void {
    if (!this.session) return;
    const source = this.opts.addressSource ?? osAddresses;
    const local = localEndpoints(source, this.opts.interfaceName, this.prefs.listenPort);
    // Reflected mappings first: peers try candidates in the order reported (after same-LAN ones).
    const reflected = this.conn?.reflectedEndpoints() ?? [];
    this.session.setEndpoints([...reflected, ...local.filter((e) => !reflected.includes(e))]);
  }

  /** Waits for the person to sign in in their browser: control holds each waiting registration. */
  private startLoginWait(client: ControlClient, reg: RegisterRequest): void {
    const wait = new LoginWait(client, reg, { log: this.opts.log, backoff: this.timing.loginBackoff });
    this.loginWait = wait;
    this.loginProblem = null;
    wait.on('url', ({ authUrl, expiresAt }) => {
      if (this.loginWait !== wait) return;
      if (authUrl === this.authUrl && expiresAt === this.authUrlExpiresAt) return;
      this.authUrl = authUrl;
      this.authUrlExpiresAt = expiresAt;
      this.emit('change');
    });
    wait.on('problem', (err) => {
      if (this.loginWait !== wait) return;
      this.loginProblem = err;
      this.emit('change');
    });
    const signedIn = () =>
      this.exclusive(async () => {
        if (this.loginWait !== wait || !this.nodeKey) return;
        this.stopLoginWait();
        await this.authorized(client.baseUrl, this.nodeKey);
        this.helperProblem = null;
        this.startSession();
        this.reconcile();
        this.emit('change');
      });
    const ended = (err: unknown) =>
      this.exclusive(async () => {
        if (this.loginWait !== wait) return;
        this.stopLoginWait();
        const detail = err instanceof ControlHttpError ? err.detail : describeError(err);
        this.notice = isLoginEnded(err) ? `sign-in ended: ${detail}` : `sign-in failed: ${detail}`;
        this.opts.log.warn(this.notice);
        this.emit('change');
      });
    wait
      .run()
      .then((node) => (node ? signedIn() : undefined), ended)
      .catch((err) => this.opts.log.warn(`sign-in: ${describeError(err)}`));
  }

  /** Stops waiting for a sign-in here; returns the wait that was pending, if any. */
  private stopLoginWait(): LoginWait | null {
    const wait = this.loginWait;
    wait?.stop();
    this.loginWait = null;
    this.authUrl = null;
    this.authUrlExpiresAt = null;
    this.loginProblem = null;
    return wait;
  }

  /** Ends a pending sign-in here and at control, whose link then stops working; true if one was pending. */
  private async cancelLoginWait(): Promise<boolean> {
    const wait = this.stopLoginWait();
    if (!wait) return false;
    try {
      await wait.client.cancelLogin();
      this.opts.log.info('sign-in cancelled');
    } catch (err) {
      this.opts.log.warn(
        `could not cancel the sign-in at control (its link expires by itself): ${describeError(err)}`,
      );
    }
    return true;
  }

  /** Asks control to expire this node's key now; returns what the user should know if it could not. */
  private async tellControlLogout(): Promise<string | null> {
    if (!this.login) return null;
    const client = this.controlClient(this.login.controlUrl);
    try {
      await client.logout();
      this.opts.log.info(`control at ${this.login.controlUrl} expired this node's key`);
      return null;
    } catch (err) {
      this.opts.log.warn(`logout: control could not be told: ${describeError(err)}`);
      return `logged out here, but control could not be told (${describeError(err)}): the node key stays valid there until it expires or an admin expires it`;
    }
  }

  // --- node key rotation -----------------------------------------------------------------------

  /**
   * A rotation interrupted by a crash: if control's answer was recorded (login.json names the new
   * key) the key file is replaced now; if not, the rotation is sent again once started.
   */
  private async recoverRotation(): Promise<void> {
    const { store } = this.opts;
    const next = await store.loadKey('node-next');
    if (!next) return;
    if (this.login?.nodePublicKey === next.publicKey) {
      await store.saveKey('node', next);
      await store.deleteKey('node-next');
      this.nodeKey = next;
    } else if (this.login && this.nodeKey?.publicKey === this.login.nodePublicKey) {
      this.rotationPending = true;
    } else {
      await store.deleteKey('node-next');
    }
  }

  /** Arms the timer of the next node key rotation: `delayMs` from now, or when the key is due. */
  private scheduleRotation(delayMs?: number): void {
    this.clearRotationTimer();
    if (this.shuttingDown) return;
    const every = this.opts.keyRotationMs === undefined ? DEFAULT_KEY_ROTATION_MS : this.opts.keyRotationMs;
    if (!this.login || (!every && !this.rotationPending)) return;
    const due = this.rotationPending || !every ? Date.now() : Date.parse(this.login.authorizedAt) + every;
    const delay = Math.max(0, delayMs ?? due - Date.now());
    this.rotationTimer = setTimeout(
      () => {
        if (delay > MAX_TIMER_MS) return this.scheduleRotation(delay - MAX_TIMER_MS);
        this.rotation = this.rotate().finally(() => {
          this.rotation = null;
        });
      },
      Math.min(delay, MAX_TIMER_MS),
    );
  }

  private clearRotationTimer(): void {
    if (this.rotationTimer) clearTimeout(this.rotationTimer);
    this.rotationTimer = null;
  }

  /**
   * Moves to a new node key, proving the old one to control. The old key stays in force until
   * control has accepted the new one; then WireGuard switches (peers learn the key from control).
   */
  private async rotate(): Promise<void> {
    const login = this.login;
    const oldKey = this.nodeKey;
    if (!login || !oldKey || this.rotating) return;
    this.rotating = true;
    try {
      // Kept on disk before control hears of it, so a crash after its answer loses no key.
      const newKey = await this.opts.store.loadOrCreateKey('node-next');
      if (this.login !== login) return;
      this.rotationPending = true;
      let self: NetMap['self'];
      try {
        self = await rotateNodeKey(this.controlClient(login.controlUrl), {
          oldKey,
          newKey,
          machineKey: this.machineKey.publicKey,
          hostname: this.prefs.hostname ?? defaultHostname(),
          os: process.platform,
        });
      } catch (err) {
        if (this.login !== login) return;
        const e = err instanceof WeftError ? err : new WeftError('control-error', describeError(err));
        this.rotationProblem = new WeftError(
          e.code,
          `node key rotation failed (the old key stays in use): ${e.message}`,
        );
        this.opts.log.warn(this.rotationProblem.message);
        this.emit('change');
        this.scheduleRotation(this.rotationBackoff.next());
        return;
      }
      await this.exclusive(async () => {
        if (this.login === login) await this.switchNodeKey(login, oldKey, newKey, self);
      });
    } catch (err) {
      this.opts.log.warn(`node key rotation: ${describeError(err)}`);
      this.scheduleRotation(this.rotationBackoff.next());
    } finally {
      this.rotating = false;
    }
  }

  /** Control accepted `newKey`: record it, then let WireGuard use it. */
  private async switchNodeKey(
    login: Login,
    oldKey: KeyHandle,
    newKey: KeyHandle,
    self: NetMap['self'],
  ): Promise<void> {
    const { store } = this.opts;
    // login.json first: from here on a restart finishes the switch from node-next.key.
    this.login = { ...login, nodePublicKey: newKey.publicKey, authorizedAt: new Date().toISOString() };
    await store.saveLogin(this.login);
    await store.saveKey('node', newKey);
    await store.deleteKey('node-next');
    this.nodeKey = newKey;
    this.rotationPending = false;
    this.rotationProblem = null;
    this.rotationBackoff.reset();
    if (this.netmap) {
      this.netmap = { ...this.netmap, self };
      this.netmapWriter.push(this.netmap);
    }
    this.opts.log.info(`node key rotated: ${shortKey(oldKey.publicKey)}… → ${shortKey(newKey.publicKey)}…`);
    if (this.conn) {
      // Relays deliver by node key and the relay connection proved the old one: reconnect as the
      // new key. Peers start again on the relay and their direct paths are re-confirmed.
      this.conn.close();
      this.conn = null;
      this.startConnectivity();
    }
    this.reconcile();
    this.emit('change');
    this.scheduleRotation();
  }

  // --- helpers ---------------------------------------------------------------------------------

  private async savePrefs(prefs: Prefs): Promise<void> {
    await this.opts.store.savePrefs(prefs);
    this.prefs = prefs;
  }

  /** Runs state transitions one at a time, in call order. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.ops.then(fn);
    this.ops = run.catch(() => undefined);
    return run;
  }

  /** Resolves when Running; rejects as soon as something makes that impossible for now. */
  private waitRunning(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (err?: WeftError) => {
        clearTimeout(timer);
        this.off('change', check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        const state = this.backendState();
        if (state === 'Running') return finish();
        if (state === 'NeedsLogin')
          return finish(new WeftError('control-rejected', this.notice ?? 'logged out'));
        if (state === 'Stopped')
          return finish(new WeftError('conflict', 'the tunnel was brought down meanwhile'));
        if (this.helperProblem) return finish(this.helperProblem);
        if (!this.netmap && this.controlProblem) {
          const p = this.controlProblem;
          return finish(new WeftError(p.code, `${p.message} (weftd keeps retrying in the background)`));
        }
      };
      const timer = setTimeout(
        () =>
          finish(
            new WeftError(
              'timeout',
              `not running after ${Math.round(timeoutMs / 1000)} s: ${this.snapshot().health.join('; ') || 'waiting for control'}`,
            ),
          ),
        timeoutMs,
      );
      this.on('change', check);
      check();
    });
  }
}

/** setTimeout waits at most 2^31-1 ms (about 24.8 days); longer waits are re-armed on the way. */
const MAX_TIMER_MS = 2_147_483_647;

const shortKey = (key: string) => key.slice(0, 8);

function normalizeUrl(url: string): string {
  return new URL(url).toString().replace(/\/+$/, '');
}

/** The OS host name turned into a valid machine name (lower case, letters, digits and -). */
export function defaultHostname(raw = osHostname()): string {
  const name = (raw.toLowerCase().split('.')[0] ?? '')
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return name || 'weft-node';
}
