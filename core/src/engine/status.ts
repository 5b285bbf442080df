import type { EventEmitter } from 'node:events';
import type {
  BackendState,
  InterfaceStatus,
  NetMap,
  PeerStatus,
  Prefs,
  Status,
  WgPeerStatus,
} from '@weft/protocol';
import type { ControlMachine } from '../control-client/machine.js';
import { WeftError } from '../errors.js';
import type { Connectivity } from '../paths/connectivity.js';
import type { MtuChoice } from '../paths/mtu.js';
import type { ExitNodeState } from './exit-nodes.js';
import type { Tunnel } from './tunnel.js';
import { untilSettled } from './until-settled.js';

// The LocalAPI Status: what control says about each peer (name, addresses, online) merged with
// what the real WireGuard interface says (endpoint in use, last handshake, bytes). Pure, but for
// engineStatus, which gathers the engine's parts into it and their health.

export interface StatusInputs {
  backendState: BackendState;
  controlUrl: string | null;
  authUrl: string | null;
  authUrlExpiresAt?: string | null;
  netmap: NetMap | null;
  /** The interface as the helper last reported it; null when not known. */
  iface: InterfaceStatus | null;
  health: string[];
  /** Path selection's view of a peer (direct or relayed, and through which region). */
  peerPath?: (
    key: string,
    endpoint: string | null,
  ) => { path: 'direct' | 'relay'; relayRegion: string | null; relayReason: string | null };
}

/** Strips the prefix length: status shows addresses, not interface prefixes. */
const bare = (addr: string) => addr.replace(/\/\d+$/, '');

/** NAME.BASE-DOMAIN while the tailnet has MagicDNS on (what the node resolves by). */
const dnsNameOf = (map: NetMap, name: string) =>
  map.dns?.magicDns ? { dnsName: `${name}.${map.dns.baseDomain}` } : {};

export function buildStatus(inp: StatusInputs): Status {
  const logged = inp.backendState !== 'NeedsLogin';
  const map = logged ? inp.netmap : null;
  // Peers are listed only while the tunnel is wanted: a stopped node reaches nobody.
  const showPeers = inp.backendState === 'Running' || inp.backendState === 'Starting';
  const wg = new Map<string, WgPeerStatus>(
    (inp.iface?.exists ? inp.iface.peers : []).map((p) => [p.publicKey, p]),
  );
  const peers: PeerStatus[] =
    showPeers && map
      ? map.peers.map((p) => {
          const w = wg.get(p.nodeKey);
          return {
            id: p.id,
            name: p.name,
            ...dnsNameOf(map, p.name),
            user: p.user,
            tags: p.tags,
            os: p.os,
            addresses: p.addresses.map(bare),
            online: p.online,
            lastSeen: p.lastSeen,
            endpoint: w?.endpoint ?? null,
            lastHandshake: w?.latestHandshake ? new Date(w.latestHandshake * 1000).toISOString() : null,
            rxBytes: w?.rxBytes ?? 0,
            txBytes: w?.txBytes ?? 0,
            ...(inp.peerPath ? inp.peerPath(p.nodeKey, w?.endpoint ?? null) : {}),
          };
        })
      : [];
  peers.sort((a, b) => a.name.localeCompare(b.name));
  return {
    backendState: inp.backendState,
    controlUrl: inp.controlUrl,
    authUrl: inp.authUrl,
    authUrlExpiresAt: inp.authUrl ? (inp.authUrlExpiresAt ?? null) : null,
    self: map
      ? {
          id: map.self.id,
          name: map.self.name,
          ...dnsNameOf(map, map.self.name),
          addresses: map.self.addresses.map(bare),
          keyExpiry: map.self.keyExpiry,
          os: map.self.os,
        }
      : null,
    peers,
    health: inp.health,
    user: map?.self.user ? { loginName: map.self.user, displayName: map.self.user } : null,
  };
}

/** The engine's parts that its status is built from. */
export interface EngineView {
  backendState: BackendState;
  prefs: Prefs;
  netmap: NetMap | null;
  control: ControlMachine;
  tunnel: Tunnel;
  paths: Connectivity | null;
  /** Something the user should know until the next `up`. */
  notice: string | null;
  mtu: MtuChoice;
  exits: ExitNodeState;
}

/** The status as the engine's parts have it now (the interface's figures as last read). */
export function engineStatus(v: EngineView): Status {
  const { control, prefs, netmap } = v;
  const wanted = control.login !== null && prefs.wantRunning;
  const health: string[] = [];
  if (wanted && control.controlProblem) health.push(control.controlProblem.message);
  const helper = v.tunnel.health(wanted);
  if (helper) health.push(helper);
  if (v.notice) health.push(v.notice);
  if (control.loginProblem) health.push(control.loginProblem.message);
  if (control.rotationProblem) health.push(control.rotationProblem.message);
  const conn = wanted ? v.paths : null;
  if (conn) health.push(...conn.problems());
  const status = v.exits.status(
    buildStatus({
      peerPath: conn ? (key, endpoint) => conn.peerPath(key, endpoint) : undefined,
      backendState: v.backendState,
      controlUrl: control.login?.controlUrl ?? prefs.controlUrl,
      authUrl: control.authUrl,
      authUrlExpiresAt: control.authUrlExpiresAt,
      netmap,
      iface: wanted ? v.tunnel.iface : null,
      health,
    }),
    netmap,
    prefs,
    wanted,
  );
  return wanted && v.tunnel.applied ? { ...status, mtu: v.mtu } : status;
}

/**
 * Resolves when the engine is Running; rejects as soon as something makes that impossible for now,
 * or after `timeoutMs` with its health.
 */
export function untilRunning(
  engine: EventEmitter<{ change: [] }>,
  view: () => EngineView,
  timeoutMs: number,
): Promise<void> {
  return untilSettled(
    engine,
    () => upOutcome(view()),
    timeoutMs,
    () => {
      const why = engineStatus(view()).health.join('; ') || 'waiting for control';
      return new WeftError('timeout', `not running after ${Math.round(timeoutMs / 1000)} s: ${why}`);
    },
  );
}

/** Whether `up` is done (Running), cannot finish for now (why, as a WeftError), or waits on (null). */
function upOutcome(v: EngineView): WeftError | 'done' | null {
  if (v.backendState === 'Running') return 'done';
  if (v.backendState === 'NeedsLogin') return new WeftError('control-rejected', v.notice ?? 'logged out');
  if (v.backendState === 'Stopped') return new WeftError('conflict', 'the tunnel was brought down meanwhile');
  if (v.tunnel.problem) return v.tunnel.problem;
  const p = v.control.controlProblem;
  if (!v.netmap && p) return new WeftError(p.code, `${p.message} (weftd keeps retrying in the background)`);
  return null;
}
