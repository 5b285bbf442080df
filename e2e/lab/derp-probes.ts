import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TAILSCALE_BIN_DIR } from './tailscale.js';

// Tailscale's own DERP and STUN clients as the module ships them (tailscale.com/cmd/derpprobe and
// cmd/stunc, built beside tailscaled by scripts/setup-tailscale.sh). derpprobe reads a DERP map;
// for each server it logs two derphttp clients in, sends a packet from one to the other (its
// "mesh" probe, here one server to itself) and sends a STUN request to the server's STUN port.
// Its clients use fresh keys, so the relay must serve any node key (`--open`), and its prober
// insists on TLS, so the relay serves a certificate made for the run.

export const DERPPROBE = join(TAILSCALE_BIN_DIR, 'derpprobe');
export const STUNC = join(TAILSCALE_BIN_DIR, 'stunc');

/** Why tests of Tailscale's DERP/STUN clients must skip here, or null when they are built. */
export function derpProbesMissing(): string | null {
  const missing = [DERPPROBE, STUNC].filter((b) => !existsSync(b));
  if (missing.length === 0) return null;
  return `Tailscale's DERP/STUN clients are absent (${missing.join(', ')}): install Go and run scripts/setup-tailscale.sh`;
}

export interface DerpMapNode {
  /** The TLS server name the clients send; they dial `ipv4`, so it needs no DNS. */
  hostName: string;
  ipv4: string;
  derpPort: number;
  stunPort: number;
}

/** The region and node names derpprobe reports its probes under. */
export const PROBE_REGION = 'lab';
export const PROBE_NODE = '900a';

/**
 * Writes a one-server DERP map (tailcfg.DERPMap) to `file`. InsecureForTests: the clients skip
 * certificate checks, since the run's certificate is self-made.
 */
export function writeDerpMap(file: string, node: DerpMapNode): void {
  const derpNode = {
    Name: PROBE_NODE,
    RegionID: 900,
    HostName: node.hostName,
    IPv4: node.ipv4,
    DERPPort: node.derpPort,
    STUNPort: node.stunPort,
    InsecureForTests: true,
  };
  const map = {
    Regions: { 900: { RegionID: 900, RegionCode: PROBE_REGION, RegionName: 'lab', Nodes: [derpNode] } },
  };
  writeFileSync(file, JSON.stringify(map));
}

/**
 * One round of derpprobe's mesh and STUN probes against the map in `mapFile`, then exit (1 if a
 * probe failed). Not its TLS probe: that one checks the certificate against the system's roots.
 */
export function derpprobeArgv(mapFile: string): string[] {
  return [DERPPROBE, '-derp-map', `file://${mapFile}`, '-once', '-spread=false', '-tls-interval', '0'];
}

export interface ProbeReport {
  /** Probe names that passed, e.g. derp/lab/900a/900a/mesh, derp/lab/900a/udp. */
  good: string[];
  /** Failed probes by name, with derpprobe's error. */
  bad: Record<string, string>;
}

/** The closing `good: NAME: latency` / `bad: NAME: error` lines of derpprobe -once (stderr). */
export function parseDerpprobe(log: string): ProbeReport {
  const report: ProbeReport = { good: [], bad: {} };
  for (const m of log.matchAll(/ (good|bad): (\S+): (.*)$/gm)) {
    const [, verdict, name, detail] = m as unknown as [string, string, string, string];
    if (verdict === 'good') report.good.push(name);
    else report.bad[name] = detail;
  }
  return report;
}

/** Names of the probes derpprobe runs against the map's one server. */
export const PROBES = {
  mesh: `derp/${PROBE_REGION}/${PROBE_NODE}/${PROBE_NODE}/mesh`,
  stun: `derp/${PROBE_REGION}/${PROBE_NODE}/udp`,
};

/** stunc HOST PORT: the address the STUN server saw (`stun addr: IP:PORT` on stderr). */
export function stuncArgv(host: string, port: number): string[] {
  return [STUNC, host, String(port)];
}

export function parseStunc(log: string): string {
  const m = /stun addr: (\S+)$/m.exec(log);
  if (m === null) throw new Error(`stunc printed no STUN address: ${log.trim()}`);
  return m[1] as string;
}
