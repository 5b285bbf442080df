import {
  canonicalPrefix,
  type DesiredState,
  formatEndpoint,
  type PeerConfig,
  parseEndpoint,
  type WgPeerStatus,
} from '@weft/protocol';
import { WEFT_FWMARK } from './exit-routing.js';

// `wg show NAME dump` reading, the comparison that lets an unchanged state skip `wg syncconf`, and the
// configuration file `wg syncconf` reads.

export interface WgDump {
  privateKey: string | null;
  publicKey: string | null;
  listenPort: number;
  /** The socket's firewall mark; 0 when off. */
  fwmark: number;
  peers: WgDumpPeer[];
}

export interface WgDumpPeer extends WgPeerStatus {
  /** Seconds; 0 when off. */
  persistentKeepalive: number;
}

const none = (field: string): string | null => (field === '(none)' ? null : field);

/**
 * Parses `wg show NAME dump`: a tab-separated line for the interface (private key, public key, listen
 * port, fwmark), then one per peer (public key, preshared key, endpoint, allowed IPs, latest handshake,
 * rx bytes, tx bytes, persistent keepalive).
 */
export function parseDump(text: string): WgDump {
  const lines = text.split('\n').filter((l) => l !== '');
  const iface = lines.shift()?.split('\t');
  if (iface === undefined || iface.length !== 4) throw new Error('unexpected output from wg show dump');
  const [privateKey, publicKey, listenPort, fwmark] = iface as [string, string, string, string];
  const peers = lines.map((line): WgDumpPeer => {
    const f = line.split('\t');
    if (f.length !== 8) throw new Error('unexpected peer line from wg show dump');
    const [key, , endpoint, allowed, handshake, rx, tx, keepalive] = f as [string, ...string[]];
    const allowedIPs = none(allowed as string);
    return {
      publicKey: key,
      endpoint: none(endpoint as string),
      allowedIPs: allowedIPs === null ? [] : allowedIPs.split(','),
      latestHandshake: handshake === '0' ? null : Number(handshake),
      rxBytes: Number(rx),
      txBytes: Number(tx),
      persistentKeepalive: keepalive === 'off' ? 0 : Number(keepalive),
    };
  });
  return {
    privateKey: none(privateKey),
    publicKey: none(publicKey),
    listenPort: Number(listenPort),
    fwmark: fwmark === 'off' ? 0 : Number(fwmark),
    peers,
  };
}

/**
 * Endpoints the helper last set on an interface, by peer key (canonical). WireGuard moves a peer's
 * endpoint when packets arrive from a new address (roaming: a relayed peer found a direct path), and
 * the engine re-applies the same state periodically; re-setting an endpoint that is still the one
 * requested would undo roaming every time. So an endpoint is set only when it is new or changed.
 */
export type SetEndpoints = ReadonlyMap<string, string>;

/** The endpoint to write for a peer, or undefined to leave the device's (possibly roamed) one alone. */
function endpointToSet(peer: PeerConfig, setBefore: SetEndpoints): string | undefined {
  if (peer.endpoint === undefined) return undefined;
  const endpoint = canonicalEndpoint(peer.endpoint);
  return setBefore.get(peer.publicKey) === endpoint ? undefined : endpoint;
}

/** The endpoints a state asks for, as they are remembered after applying it. */
export function requestedEndpoints(state: DesiredState): Map<string, string> {
  const endpoints = new Map<string, string>();
  for (const p of state.peers)
    if (p.endpoint !== undefined) endpoints.set(p.publicKey, canonicalEndpoint(p.endpoint));
  return endpoints;
}

/**
 * True when the device already has the requested key, port and peers, so `wg syncconf` can be skipped.
 * Listen port 0 means "any port", so whichever the device picked is fine.
 */
export function wgMatches(dump: WgDump, state: DesiredState, setBefore: SetEndpoints): boolean {
  const { privateKey, listenPort } = state.interface;
  if (dump.privateKey !== privateKey) return false;
  if (listenPort !== 0 && dump.listenPort !== listenPort) return false;
  if (dump.fwmark !== fwmarkFor(state)) return false;
  if (dump.peers.length !== state.peers.length) return false;
  const current = new Map(dump.peers.map((p) => [p.publicKey, p]));
  return state.peers.every((want) => {
    const have = current.get(want.publicKey);
    const endpoint = endpointToSet(want, setBefore);
    return (
      have !== undefined &&
      sameSet(have.allowedIPs, want.allowedIPs) &&
      have.persistentKeepalive === (want.persistentKeepalive ?? 0) &&
      (endpoint === undefined || (have.endpoint !== null && canonicalEndpoint(have.endpoint) === endpoint))
    );
  });
}

/**
 * The `wg syncconf` file. `wg` cannot read an empty AllowedIPs line, so a peer without allowed IPs gets
 * none and keeps whatever it had: `peersToEmpty` names those for `wg set … allowed-ips ""`.
 */
export function renderConfig(state: DesiredState, setBefore: SetEndpoints): string {
  const { privateKey, listenPort } = state.interface;
  const lines = ['[Interface]', `PrivateKey = ${privateKey}`];
  // ListenPort = 0 would make WireGuard pick a new port on every sync; leaving it out keeps the port.
  if (listenPort !== 0) lines.push(`ListenPort = ${listenPort}`);
  const fwmark = fwmarkFor(state);
  lines.push(`FwMark = ${fwmark === 0 ? 'off' : `0x${fwmark.toString(16)}`}`);
  for (const peer of state.peers) {
    lines.push('', '[Peer]', `PublicKey = ${peer.publicKey}`);
    if (peer.allowedIPs.length > 0) lines.push(`AllowedIPs = ${peer.allowedIPs.join(', ')}`);
    const endpoint = endpointToSet(peer, setBefore);
    if (endpoint !== undefined) lines.push(`Endpoint = ${endpoint}`);
    lines.push(`PersistentKeepalive = ${peer.persistentKeepalive ?? 'off'}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The WireGuard socket marks its packets while an exit node is used, so policy routing sends them out
 * the physical route and not back into the tunnel; otherwise the mark is off.
 */
export function fwmarkFor(state: Pick<DesiredState, 'exitNode'>): number {
  return state.exitNode === undefined ? 0 : WEFT_FWMARK;
}

/** Peers that must end up with no allowed IPs but still have some on the device. */
export function peersToEmpty(dump: WgDump, state: DesiredState): string[] {
  const current = new Map(dump.peers.map((p) => [p.publicKey, p]));
  return state.peers
    .filter((p) => p.allowedIPs.length === 0 && (current.get(p.publicKey)?.allowedIPs.length ?? 0) > 0)
    .map((p) => p.publicKey);
}

function sameSet(have: readonly string[], want: readonly string[]): boolean {
  const a = new Set(have.map(canonicalPrefix));
  const b = new Set(want.map(canonicalPrefix));
  return a.size === b.size && [...a].every((x) => b.has(x));
}

/** Endpoints in one spelling (`wg` prints IPv6 compressed); the text was validated, or printed by `wg`. */
function canonicalEndpoint(text: string): string {
  const e = parseEndpoint(text);
  return e === null ? text : formatEndpoint(e.addr, e.port);
}
