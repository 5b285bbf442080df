import { randomBytes } from 'node:crypto';
import { LOGIN_WAIT_SECONDS, type RegisterRequest } from '@weft/protocol';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';
import type { PendingLoginRecord } from '../tailnet/records.js';
import { type AuthorizeDeps, authorizeNode } from './authorize-node.js';
import type { InteractiveLogin, RegistrationResult } from './register.js';
import { SignInError } from './sign-in-error.js';

// Interactive logins: a machine without a key asks to join, control keeps a pending login in the
// database (so any replica can finish it and a restart loses nothing) and hands out its one-time
// URL. The login is bound to the machine key and node key that asked: whoever signs in through it
// authorizes exactly that node. A waiting registration is woken at once by a completion in this
// process, and re-reads the database every second for completions elsewhere.

/** How long an ended login is kept so a late waiter or browser still learns why it ended. */
const KEEP_ENDED_MS = 60 * 60_000;
const RECHECK_MS = 1_000;

export interface LoginServiceDeps extends AuthorizeDeps {
  store: Store;
  /** control's public URL, known once the server listens. */
  publicUrl: () => string;
  loginExpiryMs: number;
  /** How long a `wait: true` registration is held (LOGIN_WAIT_SECONDS; shorter in tests). */
  waitMs?: number;
}

export class LoginService implements InteractiveLogin {
  /** Machine key → wake-ups of its waiting registrations. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;

  constructor(private readonly deps: LoginServiceDeps) {}

  /** Shutdown: waiting registrations answer `needs-auth` now rather than hold the server open. */
  close(): void {
    this.closed = true;
    for (const machineKey of [...this.waiters.keys()]) this.wake(machineKey);
  }

  urlOf(login: Pick<PendingLoginRecord, 'id'>): string {
    return `${this.deps.publicUrl()}/login/${login.id}`;
  }

  async begin(args: { machineKey: string; request: RegisterRequest }) {
    const { store } = this.deps;
    const now = this.deps.now();
    const latest = await store.latestLoginOf(args.machineKey);
    if (latest && isOpen(latest, now) && latest.nodeKey === args.request.nodeKey) return this.answer(latest);

    // A new node key (or a new attempt after expiry) supersedes any older link of this machine.
    if ((await store.cancelLoginsOf(args.machineKey)) > 0) this.wake(args.machineKey);
    await store.deleteLoginsExpiredBefore(new Date(now.getTime() - KEEP_ENDED_MS));
    const login: PendingLoginRecord = {
      // 24 random bytes: the link is a capability, so it must not be guessable.
      id: randomBytes(24).toString('base64url'),
      machineKey: args.machineKey,
      nodeKey: args.request.nodeKey,
      hostname: args.request.hostname,
      os: args.request.os,
      status: 'pending',
      nodeId: null,
      userName: null,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.deps.loginExpiryMs).toISOString(),
    };
    await store.insertPendingLogin(login);
    return this.answer(login);
  }

  async wait(args: { machineKey: string; request: RegisterRequest }): Promise<RegistrationResult> {
    const deadline = Date.now() + (this.deps.waitMs ?? LOGIN_WAIT_SECONDS * 1000);
    for (;;) {
      const now = this.deps.now();
      const login = await this.deps.store.latestLoginOf(args.machineKey);
      const current = login?.nodeKey === args.request.nodeKey ? login : undefined;
      // Nothing to wait for yet (or only a long-finished login): start one, so the node has a URL.
      if (current === undefined || (current.status !== 'pending' && !isLive(current, now))) {
        return { status: 'needs-auth', ...(await this.begin(args)) };
      }
      if (current.status === 'authorized' && current.nodeId !== null) {
        return { status: 'authorized', nodeId: current.nodeId };
      }
      if (current.status === 'cancelled') {
        throw new ApiError(410, 'login-cancelled', 'this sign-in was cancelled: start a new one (weft up)');
      }
      if (!isLive(current, now)) {
        throw new ApiError(
          410,
          'login-expired',
          `the sign-in link expired at ${current.expiresAt} before anyone signed in: start a new one (weft up)`,
        );
      }
      const left = Math.min(deadline, Date.parse(current.expiresAt)) - Date.now();
      if (this.closed || Date.now() >= deadline) return { status: 'needs-auth', ...this.answer(current) };
      await this.sleep(args.machineKey, Math.max(0, Math.min(left, RECHECK_MS)));
    }
  }

  /** The node gave up (signed POST /machine/login/cancel); true when a pending login was cancelled. */
  async cancel(machineKey: string): Promise<boolean> {
    const cancelled = await this.deps.store.cancelLoginsOf(machineKey);
    this.wake(machineKey);
    return cancelled > 0;
  }

  /** The login behind a link, if it can still be used; otherwise why not, for the result page. */
  async usable(id: string): Promise<PendingLoginRecord> {
    const login = await this.deps.store.pendingLogin(id);
    if (login === undefined) {
      throw new SignInError(
        404,
        'Unknown sign-in link',
        'This sign-in link does not exist. Copy the whole link your device printed, or start again on the device.',
      );
    }
    if (login.status === 'authorized') {
      throw new SignInError(
        409,
        'Already signed in',
        `This link has been used already: ${login.hostname} is connected as ${login.userName ?? 'its owner'}.`,
      );
    }
    if (login.status === 'cancelled') {
      throw new SignInError(
        410,
        'Sign-in cancelled',
        `The device ${login.hostname} cancelled this sign-in, or asked for a newer link. Use the newest link it shows.`,
      );
    }
    if (!isLive(login, this.deps.now())) {
      throw new SignInError(
        410,
        'Sign-in link expired',
        `This sign-in link for ${login.hostname} has expired. Run the sign-in on the device again (weft up) for a new link.`,
      );
    }
    return login;
  }

  /**
   * A person signed in through the login's link: authorizes exactly the node that asked, owned by
   * `userId`. Returns the node's name. Fails if the link ended meanwhile (nothing is authorized).
   */
  async complete(loginId: string, user: { id: string; name: string }): Promise<string> {
    const { store } = this.deps;
    const login = await this.usable(loginId);
    const nodeId = await retryConflicts(() =>
      store.transaction(async (tx) => {
        const id = await authorizeNode(tx, this.deps, {
          machineKey: login.machineKey,
          nodeKey: login.nodeKey,
          hostname: login.hostname,
          os: login.os,
          userId: user.id,
          tags: [],
          preauthKeyId: null,
          ephemeral: false,
        });
        if (
          !(await tx.finishPendingLogin(login.id, { status: 'authorized', nodeId: id, userName: user.name }))
        ) {
          throw new SignInError(410, 'Sign-in cancelled', 'The device cancelled this sign-in meanwhile.');
        }
        return id;
      }),
    );
    this.wake(login.machineKey);
    const node = await store.nodeById(nodeId);
    return node?.name ?? login.hostname;
  }

  private answer(login: PendingLoginRecord): { authUrl: string; expiresAt: string } {
    return { authUrl: this.urlOf(login), expiresAt: login.expiresAt };
  }

  private sleep(machineKey: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(machineKey) ?? new Set();
      this.waiters.set(machineKey, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(machineKey);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  private wake(machineKey: string): void {
    for (const done of [...(this.waiters.get(machineKey) ?? [])]) done();
  }
}

function isLive(login: PendingLoginRecord, now: Date): boolean {
  return Date.parse(login.expiresAt) > now.getTime();
}

function isOpen(login: PendingLoginRecord, now: Date): boolean {
  return login.status === 'pending' && isLive(login, now);
}
