import type { AddressInfo } from 'node:net';
import { generateKeyPair, publicKeyOf } from '@weft/protocol';
import { LoginService } from '../auth/logins.js';
import { GithubProvider } from '../auth/providers/github.js';
import { OidcProvider } from '../auth/providers/oidc.js';
import type { IdentityProvider } from '../auth/providers/provider.js';
import { ReplayWindow } from '../auth/replay-window.js';
import type { ControlConfig } from '../config/config.js';
import type { ChangeFeed } from '../db/change-feed.js';
import { openDatabase } from '../db/open.js';
import { replicaSessionName, Store } from '../db/store.js';
import { DnsSync } from '../dns/sync.js';
import { errorText, type Logger, stderrLogger } from '../log.js';
import { ControlMetrics } from '../metrics/control-metrics.js';
import { listenForScrapes, type ScrapeListener } from '../metrics/scrape-listener.js';
import { timedStore } from '../metrics/timed-store.js';
import { NetmapHub } from '../netmap/hub.js';
import { pacedFlush } from '../netmap/paced-flush.js';
import { PolicyVisibility, wildcardSourcesOf } from '../netmap/policy-visibility.js';
import { NetmapSync } from '../netmap/sync.js';
import { RelayMembers } from '../relays/members.js';
import { randomUlaPrefix, TAILNET_IPV4_RANGE } from '../tailnet/addresses.js';
import { buildApp } from './app.js';
import { Background } from './background.js';
import { reloadsFor } from './change-reloads.js';
import { ConnectQueue } from './connect-queue.js';
import type { ControlContext } from './context.js';
import { EPHEMERAL_GRACE_MS, startEphemeralSweeper } from './ephemeral.js';
import { DEFAULT_LIMITS, type ServerLimits } from './limits.js';
import { PolicyFileWatcher, PolicySync } from './policy-sync.js';
import { DEAD_AFTER_MS, HEARTBEAT_MS, newReplicaId, Presence } from './presence.js';

export interface ServeOptions {
  config: ControlConfig;
  log?: Logger;
  pingIntervalMs?: number;
  /** How often a SQLite database is polled for other processes' commits. */
  pollIntervalMs?: number;
  ephemeralGraceMs?: number;
  /** Replicas' heartbeat period and the silence after which a replica's streams are dropped (presence.ts). */
  heartbeatMs?: number;
  deadAfterMs?: number;
  /** How long a waiting registration is held before it answers `needs-auth` again. */
  loginWaitMs?: number;
  /** Overrides of DEFAULT_LIMITS (tests use small ones). */
  limits?: Partial<ServerLimits>;
}

export interface RunningControl {
  /** Where the server listens, e.g. http://127.0.0.1:8080. */
  url: string;
  publicUrl: string;
  /** Where Prometheus scrapes, when --metrics-listen is set. */
  metricsUrl: string | null;
  close(): Promise<void>;
}

export const PING_INTERVAL_MS = 15_000;
const SHUTDOWN_GRACE_MS = 2_000;
/**
 * Connections the kernel may hold before control accepts them (Node's default is 511; Linux caps
 * it at net.core.somaxconn, 4096 by default). After a restart every node reconnects within a few
 * seconds: a connection the queue has no room for loses its SYN, and the node's kernel tries again
 * only after 1, 3, 7, 15, 31 s, which made a 10,000-node restart take minutes.
 */
export const LISTEN_BACKLOG = 65_535;

const SETTING_CONTROL_KEY = 'control_private_key';
const SETTING_ULA = 'tailnet_ula_prefix';
const SETTING_TAILSCALE_KEY = 'tailscale_noise_private_key';

/** The configured identity providers; an issuer that cannot be discovered stops the start here. */
async function identityProviders(config: ControlConfig): Promise<IdentityProvider[]> {
  const providers: IdentityProvider[] = [];
  if (config.oidc) providers.push(await OidcProvider.discover(config.oidc));
  if (config.github) providers.push(new GithubProvider(config.github));
  return providers;
}

export async function startControl(options: ServeOptions): Promise<RunningControl> {
  const { config } = options;
  const log = options.log ?? stderrLogger(config.log);
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  let providers: IdentityProvider[];
  try {
    providers = await identityProviders(config);
  } catch (err) {
    throw new Error(`cannot start control: ${errorText(err)}`);
  }
  if (config.github && config.allow.groups.length > 0) {
    log.warn('--oidc-allowed-groups is set: GitHub sign-ins carry no groups and will all be refused');
  }
  const replica = newReplicaId();
  const database = await openDatabase(config.db, replicaSessionName(replica));
  const metrics = new ControlMetrics();
  const store = timedStore(new Store(database.db), metrics.dbQuery);
  let scrapes: ScrapeListener | null = null;
  let feed: ChangeFeed | null = null;
  let stopSweeper = () => {};
  let stopSync = () => {};
  let policyFile: PolicyFileWatcher | null = null;
  let logins: LoginService | null = null;
  const background = new Background(log);
  let presence: Presence | null = null;
  let app: Awaited<ReturnType<typeof buildApp>> | null = null;
  try {
    // Generated on first start and kept: nodes pin control's key, and addresses come from the ULA.
    const privateKey = await store.ensureSetting(SETTING_CONTROL_KEY, () => generateKeyPair().privateKey);
    const ulaPrefix = await store.ensureSetting(SETTING_ULA, randomUlaPrefix);
    // Tailscale clients pin this one (GET /key) as Weft nodes pin the control key.
    const tailscaleKey = await store.ensureSetting(SETTING_TAILSCALE_KEY, () => generateKeyPair().privateKey);

    // Peers and packet filters come from the policy in the database; allow-all until one is set.
    const tailnetRanges = [TAILNET_IPV4_RANGE, ulaPrefix];
    const visibility = new PolicyVisibility(wildcardSourcesOf(tailnetRanges));
    // Deltas go out merged per node: on the next turn, or after a long flush a pause later (a burst);
    // a node's batch also goes once it has merged 256 changes (a mass reconnect keeps the loop busy).
    // Peers' presence-only changes wait up to presenceHoldMs, merged (unreferenced: a stopping
    // control has no streams left to tell).
    const hub = new NetmapHub(visibility, tailnetRanges, undefined, pacedFlush(), (release) => {
      setTimeout(release, limits.presenceHoldMs).unref();
    });
    metrics.watch(hub);
    if (config.relays && config.relays.length > 0) hub.relayMap = { regions: config.relays };
    const relayMembers = new RelayMembers();
    const sync = new NetmapSync(store, hub, log, (nodes) => relayMembers.update(nodes));
    const policy = new PolicySync(store, visibility, hub, log);
    const dns = new DnsSync(store, hub, log);
    stopSync = () => sync.close();
    presence = new Presence(
      store,
      sync,
      () => hub.streams(),
      database.exclusive,
      log,
      {
        heartbeatMs: options.heartbeatMs ?? HEARTBEAT_MS,
        deadAfterMs: options.deadAfterMs ?? DEAD_AFTER_MS,
        restartGraceMs: limits.restartGraceMs,
      },
      database.kind === 'sqlite',
      Date.now,
      replica,
    );
    hub.replica = presence.replica;
    // LISTEN before the first reads: a commit between a read and the LISTEN would never be heard.
    const changes = database.changeFeed(log, options.pollIntervalMs);
    feed = changes;
    await changes.start((change) => {
      // A sign-in finished by another process or replica wakes this one's waiting registrations.
      logins?.recheck();
      const reload = reloadsFor(change);
      background.run('reloading after a database change', async () => {
        if (reload.dns) await dns.refresh();
        if (reload.policy) await policy.refresh();
        if (reload.nodes === 'all') await sync.refresh();
        else if (reload.nodes.size > 0) await sync.refreshNodes(reload.nodes);
      });
    });
    await presence.start();
    await dns.refresh();
    await policy.refresh();
    await sync.refresh();
    if (config.policyFile !== null) {
      // A file that is refused at start stops the start: the admin is there to read why.
      policyFile = new PolicyFileWatcher(config.policyFile, store, () => policy.refresh(), log);
      await policyFile.start();
    }

    // Known once the server listens (port 0 in tests); only read by requests, which come later.
    let publicUrl = '';
    const authorize = { ulaPrefix, nodeKeyExpiryMs: config.nodeKeyExpiryMs, now: () => new Date() };
    logins =
      providers.length === 0
        ? null
        : new LoginService({
            ...authorize,
            store,
            publicUrl: () => publicUrl,
            loginExpiryMs: config.loginExpiryMs,
            waitMs: options.loginWaitMs,
            maxPendingPerSource: limits.pendingLoginsPerSource,
            maxPendingTotal: limits.pendingLoginsTotal,
          });
    const ctx: ControlContext = {
      store,
      hub,
      sync,
      controlKey: { privateKey, publicKey: publicKeyOf(privateKey) },
      machineNonces: new ReplayWindow(),
      tailscaleKey: { privateKey: tailscaleKey, publicKey: publicKeyOf(tailscaleKey) },
      relayMembers,
      registration: { ...authorize, store, interactive: logins, controlPrivateKey: privateKey },
      signIn: logins === null ? null : { providers, logins, allow: config.allow, publicUrl: () => publicUrl },
      log,
      metrics,
      background,
      connects: new ConnectQueue(limits.streamConnectTurnMs, (err) =>
        log.error(`connecting a stream: ${errorText(err)}`),
      ),
      presence,
      exclusive: database.exclusive,
      limits,
      pingIntervalMs: options.pingIntervalMs ?? PING_INTERVAL_MS,
    };
    const server = await buildApp(ctx);
    app = server;

    stopSweeper = startEphemeralSweeper(ctx, options.ephemeralGraceMs ?? EPHEMERAL_GRACE_MS);

    // Before the public port: a scrape address that is taken must stop the start with nothing served.
    if (config.metricsListen !== null) {
      scrapes = await listenForScrapes(metrics.registry, config.metricsListen);
    }
    await server.listen({ host: config.listen.host, port: config.listen.port, backlog: LISTEN_BACKLOG });
    presence?.startGrace();
    const address = server.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const url = `http://${host}:${address.port}`;
    publicUrl = config.publicUrl ?? url;
    log.info(`weft-control listening on ${url} (public URL ${publicUrl}, database ${database.shown})`);
    if (scrapes !== null) log.info(`metrics at ${scrapes.url}`);
    if (providers.length > 0) {
      const callbacks = providers.map((p) => `${publicUrl}${p.callbackPath}`).join(', ');
      log.info(`sign-in with ${providers.map((p) => p.id).join(' and ')} (redirect URI ${callbacks})`);
    }

    let closing: Promise<void> | null = null;
    const close = async () => {
      log.info('shutting down');
      stopSweeper();
      changes.close();
      await policyFile?.close();
      stopSync();
      logins?.close();
      ctx.connects.close();
      presence?.shuttingDown(hub.closeAll('control is shutting down'));
      // A node that does not answer the close handshake must not hold the shutdown up.
      const killer = setTimeout(() => {
        for (const client of server.websocketServer.clients) client.terminate();
      }, SHUTDOWN_GRACE_MS);
      await server.close();
      await scrapes?.close();
      await background.drain();
      clearTimeout(killer);
      await presence?.close();
      await store.destroy();
      log.info('stopped');
    };
    return {
      url,
      publicUrl,
      metricsUrl: scrapes?.url ?? null,
      close: () => {
        closing ??= close();
        return closing;
      },
    };
  } catch (err) {
    // Everything opened so far is closed, so a failed start leaves no port open and lets the process exit.
    await app?.close();
    await scrapes?.close();
    stopSweeper();
    feed?.close();
    await policyFile?.close();
    stopSync();
    logins?.close();
    await background.drain();
    await presence?.close().catch(() => {});
    await store.destroy();
    throw new Error(`cannot start control: ${errorText(err)}`);
  }
}
