import type { DnsStatus, NetcheckReport, Status } from '@weft/protocol';

// Human output of `weft status`. Pure, so its layout is tested without a daemon.

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} ${units[i]}` : `${v.toFixed(1)} ${units[i]}`;
}

/** "12s ago", "3m ago", "2h ago", "5d ago"; "-" for never. */
export function formatAgo(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, c) => {
      widths[c] = Math.max(widths[c] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `weft dns status`: the settings in force, where the resolver listens, and the names it answers. */
export function formatDnsStatus(d: DnsStatus): string {
  const lines: string[] = [];
  lines.push(`Tailnet DNS: ${d.useTailnetDns ? 'on' : 'off (weft set --accept-dns to turn it on)'}`);
  if (d.settings === null) {
    lines.push('No DNS settings from control yet.');
  } else {
    const s = d.settings;
    lines.push(`MagicDNS: ${s.magicDns ? `on, names end in .${s.baseDomain}` : 'off'}`);
    lines.push(
      `Nameservers: ${s.nameservers.join(', ') || `none set; the OS's own (${d.osResolvers.join(', ') || 'none known'})`}`,
    );
    for (const [domain, servers] of Object.entries(s.splitDns))
      lines.push(`Split DNS: ${domain} -> ${servers.join(', ')}`);
    if (s.searchDomains.length > 0) lines.push(`Search domains: ${s.searchDomains.join(', ')}`);
  }
  lines.push(
    d.resolver
      ? `Resolver: 100.100.100.100 (listening on ${d.resolver.addresses.join(', ')} port ${d.resolver.port})`
      : 'Resolver: not in use (the tunnel is down or tailnet DNS is off)',
  );
  const st = d.stats;
  lines.push(
    `Queries: ${st.queries} (${st.answeredLocally} answered locally, ${st.forwarded} forwarded, ${st.cacheHits} from cache, ${st.failed} failed, ${st.malformed} malformed)`,
  );
  if (d.records.length > 0) {
    lines.push('', table([['NAME', 'ADDRESSES'], ...d.records.map((r) => [r.name, r.addresses.join(', ')])]));
  }
  return lines.join('\n');
}

export function formatStatus(st: Status, now = Date.now()): string {
  const lines: string[] = [];
  if (st.backendState === 'NeedsLogin') {
    lines.push(
      st.authUrl
        ? `Logged out. To log in, visit:\n\n\t${st.authUrl}\n`
        : 'Logged out. Log in with: weft up --control-url URL',
    );
  } else if (st.backendState === 'Stopped') {
    lines.push('Weft is stopped. Start it with: weft up --control-url URL');
  } else {
    if (st.backendState === 'Starting') lines.push('Starting…');
    if (st.self)
      lines.push(`${st.self.dnsName ?? st.self.name}  ${st.self.addresses.join(', ')}  (this device)`);
    if (st.mtu) lines.push(`MTU ${st.mtu.mtu}: ${st.mtu.reason}`);
    if (st.exitNode) {
      const exit = st.peers.find((p) => p.id === st.exitNode?.id);
      lines.push(
        `Exit node: ${exit?.name ?? st.exitNode.id}${st.exitNode.allowLan ? ' (LAN access allowed)' : ''}`,
      );
    }
    const offers = st.peers.filter((p) => p.exitNodeOption && !p.exitNode).map((p) => p.name);
    if (offers.length > 0) lines.push(`Exit nodes offered: ${offers.join(', ')} (weft exit-node list)`);
    if (st.peers.length > 0) {
      // The PATH column appears once the engine reports paths (it has relays to choose from).
      const paths = st.peers.some((p) => p.path !== undefined);
      const rows = [
        ['NAME', 'ADDRESSES', 'ONLINE', ...(paths ? ['PATH'] : []), 'ENDPOINT', 'HANDSHAKE', 'RX', 'TX'],
      ];
      for (const p of st.peers) {
        const path =
          p.path === 'relay' ? `relay${p.relayRegion ? ` (${p.relayRegion})` : ''}` : (p.path ?? '-');
        rows.push([
          p.dnsName ?? p.name,
          p.addresses.join(', '),
          p.online ? 'yes' : 'no',
          ...(paths ? [path] : []),
          p.endpoint ?? '-',
          formatAgo(p.lastHandshake, now),
          formatBytes(p.rxBytes),
          formatBytes(p.txBytes),
        ]);
      }
      lines.push('', table(rows));
      const why = st.peers.filter((p) => p.online && p.path === 'relay' && p.relayReason);
      if (why.length > 0) lines.push('', ...why.map((p) => `${p.name} is relayed: ${p.relayReason}`));
    } else if (st.backendState === 'Running') {
      lines.push('', 'No peers yet.');
    }
  }
  if (st.health.length > 0) lines.push('', 'Health:', ...st.health.map((h) => `  - ${h}`));
  return lines.join('\n');
}

function formatPortMapping(m: NetcheckReport['portMapping']): string {
  if (m.answered === null) return 'not tried yet';
  if (m.answered === 'none') return 'none (the gateway mapped nothing by PCP, NAT-PMP or UPnP)';
  return `${m.endpoint ?? '-'} (${m.answered})`;
}

export function formatNetcheck(r: NetcheckReport): string {
  const yesNo = (v: boolean | null) => (v === null ? 'unknown' : v ? 'yes' : 'no');
  const lines = [
    'Report:',
    `  UDP: ${r.udp === null ? 'unknown (no relays)' : r.udp ? 'yes' : 'no (blocked?)'}`,
    `  Reflected endpoints: ${r.reflected.length > 0 ? r.reflected.join(', ') : '-'}`,
    `  Mapping varies by destination: ${yesNo(r.mappingVariesByDestination)}${
      r.mappingVariesByDestination === null ? ' (needs two reflectors)' : ''
    }`,
    `  Local candidates: ${r.local.length > 0 ? r.local.join(', ') : '-'}`,
    `  Port mapping: ${formatPortMapping(r.portMapping)}`,
    `  Home relay: ${r.homeRegion ?? '-'}`,
  ];
  if (r.relays.length > 0) {
    lines.push('  Relays:');
    const rows = [['', 'REGION', 'LATENCY', 'REFLECTED', 'URL']];
    for (const relay of r.relays) {
      rows.push([
        relay.home ? '*' : '',
        `${relay.regionId}/${relay.name}`,
        relay.connected ? (relay.latencyMs === null ? '?' : `${relay.latencyMs.toFixed(1)} ms`) : 'down',
        relay.reflected ?? '-',
        relay.url,
      ]);
    }
    lines.push(
      ...table(rows)
        .split('\n')
        .map((l) => `    ${l}`),
    );
  }
  return lines.join('\n');
}

/** What a `--json` command prints: `value` as indented JSON, or else as `format` writes it. */
export function printResult<T>(json: boolean | undefined, value: T, format: (v: T) => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${format(value)}\n`);
}
