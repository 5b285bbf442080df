import { EventEmitter } from 'node:events';
import {
  type NetMap,
  nodeKeyPossessionProof,
  type RegisterRequest,
  type StreamServerMessage,
  type UpRequest,
} from '@weft/protocol';
import { WeftError } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';
import { Backoff, type BackoffOptions } from '../retry/backoff.js';
import type { Login } from '../state/schemas.js';
import type { KeyHandle, StateStore } from '../state/store.js';
import { ControlClient, ControlHttpError, isLoginEnded } from './client.js';
import { ControlKeyPinning } from './key-pin.js';
import { LoginWait } from './login.js';
import { DEFAULT_KEY_ROTATION_MS, rotateNodeKey } from './rotation.js';
import { MapSession } from './session.js';

// This node's standing with control as one state machine: the machine and node keys, the sign-in
// (a pre-auth key or a wait for the person's browser), the authorization record, the netmap
// stream, and node key rotation. It emits what the engine acts on (stream messages, signed in,
// logged out, a rotated key) and never touches the tunnel, the netmap or the prefs.

export interface ControlMachineEvents {
  /** A validated message of the netmap stream (a 'logout' one arrives as loggedOut instead). */
  message: [StreamServerMessage];
  /** The pending sign-in completed: the node key is authorized (runs in the engine's turn). */
  signedIn: [];
  /** The pending sign-in ended without success; the text says why. */
  signInEnded: [notice: string];
  /** Control logged this node out (a stream refusal or a logout message). */
  loggedOut: [reason: string];
  /** Control accepted a new node key (runs in the engine's turn); `self` is the node with it. */
  rotated: [self: NetMap['self']];
  /** Something shown in status changed: the auth URL, a problem. */
  change: [];
}

export interface ControlMachineOptions {
  store: StateStore;
  log: Logger;
  /** Runs a transition in the engine's turn, after the ones already queued. */
  serialize: <T>(fn: () => Promise<T>) => Promise<T>;
  /** The host name control knows this node by, when rotating. */
  hostname: () => string;
  /** How often to rotate the node key (default 30 days); null or 0 never rotates. */
  keyRotationMs?: number | null;
  /** Back-off between attempts at the netmap stream. */
  controlBackoff?: BackoffOptions;
  /** How often to ping control on the stream. */
  pingMs?: number;
  /** Back-off while control cannot be asked about a pending interactive login. */
  loginBackoff?: BackoffOptions;
  /** Back-off between failed node key rotations (default from 1 minute up to 1 hour). */
  rotationBackoff?: BackoffOptions;
}

export type SignInResult = 'authorized' | 'needs-auth';

export class ControlMachine extends EventEmitter<ControlMachineEvents> {
  private machineKey!: KeyHandle;
  private loginRecord: Login | null = null;
  private key: KeyHandle | null = null;
  private session: MapSession | null = null;
  /** The interactive login waiting for a person to sign in in their browser, and its link. */
  private loginWait: LoginWait | null = null;
  private url: string | null = null;
  private urlExpiresAt: string | null = null;
  /** Why control cannot be asked about the pending login right now (it is retried). */
  private loginError: WeftError | null = null;
  private streamError: WeftError | null = null;
  private rotationTimer: NodeJS.Timeout | null = null;
  private readonly rotationBackoff: Backoff;
  /** A rotation was sent but its answer not recorded (node-next.key exists): send it again. */
  private rotationPending = false;
  private rotating = false;
  private rotationError: WeftError | null = null;
  /** The rotation in flight: stop waits for it, so control's answer is recorded. */
  private rotation: Promise<void> | null = null;
  private stopped = false;
  private readonly keyPinning: ControlKeyPinning;

  constructor(private readonly opts: ControlMachineOptions) {
    super();
    this.keyPinning = new ControlKeyPinning(opts.store);
    this.rotationBackoff = new Backoff({ baseMs: 60_000, capMs: 3_600_000, ...opts.rotationBackoff });
  }

  /** The authorization record; null: NeedsLogin. */
  get login(): Login | null {
    return this.loginRecord;
  }

  /** The node key WireGuard uses (also while a sign-in waits for it to be authorized). */
  get nodeKey(): KeyHandle | null {
    return this.key;
  }

  get authUrl(): string | null {
    return this.url;
  }

  get authUrlExpiresAt(): string | null {
    return this.urlExpiresAt;
  }

  /** Why the netmap stream is down, while it is. */
  get controlProblem(): WeftError | null {
    return this.streamError;
  }

  /** Why the pending sign-in cannot be followed right now (null when none is pending). */
  get loginProblem(): WeftError | null {
    return this.loginWait ? this.loginError : null;
  }

  /** Why the last node key rotation failed (null once logged out). */
  get rotationProblem(): WeftError | null {
    return this.loginRecord ? this.rotationError : null;
  }

  get streaming(): boolean {
    return this.session !== null;
  }

  /** Loads the keys and the authorization, finishing a rotation a crash interrupted. */
  async load(): Promise<void> {
    const { store, log } = this.opts;
    this.machineKey = await store.loadOrCreateKey('machine');
    this.key = await store.loadKey('node');
    this.loginRecord = await store.loadLogin();
    await this.recoverRotation();
    if (this.loginRecord && this.key?.publicKey !== this.loginRecord.nodePublicKey) {
      log.warn('the authorized node key is missing or changed; login required');
      await store.deleteLogin();
      this.loginRecord = null;
    }
    this.scheduleRotation();
  }

  /** Stops the sign-in wait, the stream and rotation; waits for a rotation in flight. */
  async stop(): Promise<void> {
    this.stopLoginWait();
    this.stopped = true;
    this.clearRotationTimer();
    await this.rotation;
    await this.stopStream();
  }

  /**
   * Registers the node key with control (a new one if none is kept). Nothing is saved until control
   * accepts: a bad key or an unreachable control changes nothing. `accepted` runs once it has.
   */
  private async signIn(
    req: UpRequest & { controlUrl: string; hostname: string },
    accepted: () => Promise<void>,
  ): Promise<SignInResult> {
    this.stopLoginWait();
    const nodeKey = await this.opts.store.loadOrCreateKey('node');
    const client = this.client(req.controlUrl, req.acceptNewControlKey);
    const reg: RegisterRequest = {
      nodeKey: nodeKey.publicKey,
      hostname: req.hostname,
      os: process.platform,
      nodeKeyProof: nodeKeyPossessionProof({
        nodePrivateKey: nodeKey.privateKey,
        controlPublicKey: await client.controlKey(),
        machineKey: this.machineKey.publicKey,
      }),
    };
    const res = await client.register(req.authKey ? { ...reg, authKey: req.authKey } : reg);
    this.key = nodeKey;
    await accepted();
    if (res.status === 'needs-auth') {
      this.url = res.authUrl;
      this.urlExpiresAt = res.expiresAt ?? null;
      this.startLoginWait(client, reg);
      return 'needs-auth';
    }
    await this.authorized(req.controlUrl, nodeKey);
    return 'authorized';
  }

  /**
   * Signs in, or, logged in already, re-pins a control reinstalled on purpose when asked
   * (`acceptNewControlKey`) and runs `accepted`.
   */
  async signInOrResume(
    req: UpRequest & { controlUrl: string; hostname: string },
    accepted: () => Promise<void>,
  ): Promise<SignInResult> {
    if (!this.login) return this.signIn(req, accepted);
    if (req.acceptNewControlKey) await this.client(req.controlUrl, true).controlKey();
    await accepted();
    return 'authorized';
  }

  /** Refuses another control than the one logged in to (log out first to switch). */
  checkSameControl(controlUrl: string): void {
    const { login } = this;
    if (login && login.controlUrl !== controlUrl) {
      throw new WeftError(
        'conflict',
        `logged in to ${login.controlUrl}, not ${controlUrl}; run 'weft logout' first to switch`,
      );
    }
  }

  /**
   * Opens the netmap stream (no-op without a login, or when open); each connect gives `mapToken()`,
   * the token of the map the engine holds.
   */
  startStream(advertisedRoutes: string[], mapToken: () => string | null): void {
    if (this.session || !this.loginRecord) return;
    this.streamError = null;
    const session = new MapSession(this.client(this.loginRecord.controlUrl), {
      log: this.opts.log,
      backoff: this.opts.controlBackoff,
      pingMs: this.opts.pingMs,
      mapToken,
    });
    session.on('message', (msg) => {
      if (msg.type === 'logout') {
        this.loggedOut(msg.reason);
        return;
      }
      this.streamError = null;
      this.emit('message', msg);
    });
    session.on('disconnected', (err) => {
      this.streamError = err;
      this.emit('change');
    });
    session.on('refused', (err) => this.loggedOut(err.message));
    this.session = session;
    session.setAdvertisedRoutes(advertisedRoutes);
    session.start();
  }

  async stopStream(): Promise<void> {
    const session = this.session;
    this.session = null;
    this.streamError = null;
    await session?.stop();
  }

  /** Re-opens the stream at once (our public address changed: the old connection is dead). */
  reconnect(): void {
    this.session?.reconnect();
  }

  setEndpoints(endpoints: string[]): void {
    this.session?.setEndpoints(endpoints);
  }

  setAdvertisedRoutes(routes: string[]): void {
    this.session?.setAdvertisedRoutes(routes);
  }

  /** Ends a pending sign-in here and at control, whose link then stops working; true if one was pending. */
  async cancelSignIn(): Promise<boolean> {
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
  async logoutAtControl(): Promise<string | null> {
    if (!this.loginRecord) return null;
    const { controlUrl } = this.loginRecord;
    try {
      await this.client(controlUrl).logout();
      this.opts.log.info(`control at ${controlUrl} expired this node's key`);
      return null;
    } catch (err) {
      this.opts.log.warn(`logout: control could not be told: ${describeError(err)}`);
      return `logged out here, but control could not be told (${describeError(err)}): the node key stays valid there until it expires or an admin expires it`;
    }
  }

  /** Forgets the authorization and the node keys: NeedsLogin. The stream must be stopped first. */
  async forget(): Promise<void> {
    const { store } = this.opts;
    await this.cancelSignIn();
    this.clearRotationTimer();
    this.rotationError = null;
    this.rotationPending = false;
    this.loginRecord = null;
    // The login record goes first: without it the rest is unauthorized, whatever a crash leaves.
    await store.deleteLogin();
    await store.deleteKey('node');
    await store.deleteKey('node-next');
    this.key = null;
  }

  /** A client of control at `controlUrl` that checks control's key against the pinned one. */
  private client(controlUrl: string, acceptNewControlKey = false): ControlClient {
    return new ControlClient(controlUrl, this.machineKey.privateKey, {
      keyCheck: this.keyPinning,
      acceptNewControlKey,
    });
  }

  private loggedOut(reason: string): void {
    this.opts.log.warn(`control logged this node out: ${reason}`);
    this.emit('loggedOut', reason);
  }

  private async authorized(controlUrl: string, nodeKey: KeyHandle): Promise<void> {
    this.loginRecord = {
      controlUrl,
      nodePublicKey: nodeKey.publicKey,
      authorizedAt: new Date().toISOString(),
    };
    this.url = null;
    this.urlExpiresAt = null;
    await this.opts.store.saveLogin(this.loginRecord);
    this.opts.log.info(`node key authorized by ${controlUrl}`);
    this.scheduleRotation();
  }

  // --- the sign-in wait ------------------------------------------------------------------------

  /** Waits for the person to sign in in their browser: control holds each waiting registration. */
  private startLoginWait(client: ControlClient, reg: RegisterRequest): void {
    const wait = new LoginWait(client, reg, { log: this.opts.log, backoff: this.opts.loginBackoff });
    this.loginWait = wait;
    this.loginError = null;
    wait.on('url', ({ authUrl, expiresAt }) => {
      if (this.loginWait !== wait) return;
      if (authUrl === this.url && expiresAt === this.urlExpiresAt) return;
      this.url = authUrl;
      this.urlExpiresAt = expiresAt;
      this.emit('change');
    });
    wait.on('problem', (err) => {
      if (this.loginWait !== wait) return;
      this.loginError = err;
      this.emit('change');
    });
    const signedIn = () =>
      this.opts.serialize(async () => {
        if (this.loginWait !== wait || !this.key) return;
        this.stopLoginWait();
        await this.authorized(client.baseUrl, this.key);
        this.emit('signedIn');
      });
    const ended = (err: unknown) =>
      this.opts.serialize(async () => {
        if (this.loginWait !== wait) return;
        this.stopLoginWait();
        const detail = err instanceof ControlHttpError ? err.detail : describeError(err);
        const notice = isLoginEnded(err) ? `sign-in ended: ${detail}` : `sign-in failed: ${detail}`;
        this.opts.log.warn(notice);
        this.emit('signInEnded', notice);
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
    this.url = null;
    this.urlExpiresAt = null;
    this.loginError = null;
    return wait;
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
    if (this.loginRecord?.nodePublicKey === next.publicKey) {
      await store.saveKey('node', next);
      await store.deleteKey('node-next');
      this.key = next;
    } else if (this.loginRecord && this.key?.publicKey === this.loginRecord.nodePublicKey) {
      this.rotationPending = true;
    } else {
      await store.deleteKey('node-next');
    }
  }

  /** Arms the timer of the next node key rotation: `delayMs` from now, or when the key is due. */
  private scheduleRotation(delayMs?: number): void {
    this.clearRotationTimer();
    if (this.stopped) return;
    const every = this.opts.keyRotationMs === undefined ? DEFAULT_KEY_ROTATION_MS : this.opts.keyRotationMs;
    const login = this.loginRecord;
    if (!login || (!every && !this.rotationPending)) return;
    const due = this.rotationPending || !every ? Date.now() : Date.parse(login.authorizedAt) + every;
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
    const login = this.loginRecord;
    const oldKey = this.key;
    if (!login || !oldKey || this.rotating) return;
    this.rotating = true;
    try {
      // Kept on disk before control hears of it, so a crash after its answer loses no key.
      const newKey = await this.opts.store.loadOrCreateKey('node-next');
      if (this.loginRecord !== login) return;
      this.rotationPending = true;
      let self: NetMap['self'];
      try {
        self = await rotateNodeKey(this.client(login.controlUrl), {
          oldKey,
          newKey,
          machineKey: this.machineKey.publicKey,
          hostname: this.opts.hostname(),
          os: process.platform,
        });
      } catch (err) {
        if (this.loginRecord !== login) return;
        const e = err instanceof WeftError ? err : new WeftError('control-error', describeError(err));
        this.rotationError = new WeftError(
          e.code,
          `node key rotation failed (the old key stays in use): ${e.message}`,
        );
        this.opts.log.warn(this.rotationError.message);
        this.emit('change');
        this.scheduleRotation(this.rotationBackoff.next());
        return;
      }
      await this.opts.serialize(async () => {
        if (this.loginRecord === login) await this.switchNodeKey(login, oldKey, newKey, self);
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
    this.loginRecord = { ...login, nodePublicKey: newKey.publicKey, authorizedAt: new Date().toISOString() };
    await store.saveLogin(this.loginRecord);
    await store.saveKey('node', newKey);
    await store.deleteKey('node-next');
    this.key = newKey;
    this.rotationPending = false;
    this.rotationError = null;
    this.rotationBackoff.reset();
    this.opts.log.info(`node key rotated: ${shortKey(oldKey.publicKey)}… → ${shortKey(newKey.publicKey)}…`);
    this.emit('rotated', self);
    this.scheduleRotation();
  }
}

/** setTimeout waits at most 2^31-1 ms (about 24.8 days); longer waits are re-armed on the way. */
const MAX_TIMER_MS = 2_147_483_647;

const shortKey = (key: string) => key.slice(0, 8);
