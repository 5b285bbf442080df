import { randomBytes } from 'node:crypto';
import { LOGIN_WAIT_SECONDS } from '@weft/protocol';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { ApiError } from '../errors.js';
import type { PendingLoginRecord } from '../tailnet/records.js';
import { type AuthorizeDeps, authorizeNode } from './authorize-node.js';
import type { InteractiveLogin, LoginRequest, RegistrationResult } from './register.js';
import { SignInError } from './sign-in-error.js';

// Interactive logins: a machine without a key asks to join, control keeps a pending login in the
// database (so any replica can finish it and a restart loses nothing) and hands out its one-time
// URL. The login is bound to the machine key and node key that asked: whoever signs in through it
// and then confirms the device in the same browser authorizes exactly that node. Any caller (a
// Weft node, the Tailscale-protocol adapter) begins and waits with a LoginRequest. A waiting
// registration sleeps until the event that ends it: a completion or cancel in this process wakes
// it at once, and `recheck` (called on the database change feed) for ones elsewhere.

/** How long an ended login is kept so a late waiter or browser still learns why it ended. */
const KEEP_ENDED_MS = 60 * 60_000;

export interface LoginServiceDeps extends AuthorizeDeps {
  store: Store;
  /** control's public URL, known once the server listens. */
  publicUrl: () => string;
  loginExpiryMs: number;
  /** How long a `wait: true` registration is held (LOGIN_WAIT_SECONDS; shorter in tests). */
  waitMs?: number;
  /** Caps on open (pending, unexpired) logins: per source address and in all. */
  maxPendingPerSource: number;
  maxPendingTotal: number;
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

  async begin(args: LoginRequest) {
    const { store } = this.deps;
    const now = this.deps.now();
    const latest = await store.latestLoginOf(args.machineKey);
    if (latest && isOpen(latest, now) && latest.nodeKey === args.nodeKey) return this.answer(latest);

    // Checked before anything changes; the open login this one replaces does not count.
    await this.refuseOverCap(args.source, now, latest && isOpen(latest, now) ? latest : undefined);
    // A new node key (or a new attempt after expiry) supersedes any older link of this machine.
    if ((await store.cancelLoginsOf(args.machineKey)) > 0) this.wake(args.machineKey);
    await store.deleteLoginsExpiredBefore(new Date(now.getTime() - KEEP_ENDED_MS));
    const login: PendingLoginRecord = {
      // 24 random bytes: the link is a capability, so it must not be guessable.
      id: randomBytes(24).toString('base64url'),
      machineKey: args.machineKey,
      nodeKey: args.nodeKey,
      hostname: args.hostname,
      os: args.os,
      status: 'pending',
      nodeId: null,
      userName: null,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.deps.loginExpiryMs).toISOString(),
      source: args.source,
    };
    await store.insertPendingLogin(login);
    return this.answer(login);
  }

  async wait(args: LoginRequest): Promise<RegistrationResult> {
    const deadline = Date.now() + (this.deps.waitMs ?? LOGIN_WAIT_SECONDS * 1000);
    for (;;) {
      const now = this.deps.now();
      const login = await this.deps.store.latestLoginOf(args.machineKey);
      const current = login?.nodeKey === args.nodeKey ? login : undefined;
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
      await this.sleep(args.machineKey, Math.max(0, left));
    }
  }

  /** The database changed under us (another process or replica): waiters look again. */
  recheck(): void {
    for (const machineKey of [...this.waiters.keys()]) this.wake(machineKey);
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

  /** Too many open logins from this address, or in all: refused before anything is stored. */
  private async refuseOverCap(source: string, now: Date, replaced?: PendingLoginRecord): Promise<void> {
    const { store, maxPendingPerSource, maxPendingTotal } = this.deps;
    const fromSource = (await store.countOpenLogins(now, source)) - (replaced?.source === source ? 1 : 0);
    if (fromSource >= maxPendingPerSource) {
      throw new ApiError(
        429,
        'too-many-logins',
        `${maxPendingPerSource} sign-ins are already pending from ${source}: finish or cancel one (or let one expire) first`,
      );
    }
    if ((await store.countOpenLogins(now)) - (replaced ? 1 : 0) >= maxPendingTotal) {
      throw new ApiError(
        503,
        'login-capacity',
        `control has ${maxPendingTotal} sign-ins pending, its limit: try again later`,
      );
    }
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
