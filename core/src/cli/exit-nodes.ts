import { type ExitNodeList, type PrefsPatch, parsePrefix, type Status } from '@weft/protocol';
import { type Command, Option } from 'commander';
import { type LocalApiClient, LocalApiError } from '../localapi/client.js';
import { printResult } from './format.js';

// `weft set`, `weft exit-node list|suggest`, and the route flags of `weft up`: exit nodes and
// subnet routes over the LocalAPI's /prefs and /exit-nodes.

export interface RouteFlags {
  advertiseRoutes?: string;
  advertiseExitNode?: boolean;
  acceptRoutes?: boolean;
  acceptDns?: boolean;
}

/** Adds --advertise-routes, --advertise-exit-node and --[no-]accept-routes to a command. */
export function addRouteFlags(cmd: Command): Command {
  return cmd
    .option(
      '--advertise-routes <cidrs>',
      'offer to route these subnets for the tailnet, comma-separated (empty: none); used once approved',
    )
    .addOption(
      new Option(
        '--advertise-exit-node [bool]',
        'offer this node as an exit node (used once approved)',
      ).argParser(parseBool),
    )
    .addOption(
      new Option(
        '--accept-routes [bool]',
        'use the subnet routes other nodes offer (default true)',
      ).argParser(parseBool),
    )
    .addOption(
      new Option(
        '--accept-dns [bool]',
        "use the tailnet's DNS: MagicDNS names and split DNS (default true); false leaves the OS's DNS alone",
      ).argParser(parseBool),
    );
}

function parseBool(v: string | undefined): boolean {
  if (v === undefined || v === 'true') return true;
  if (v === 'false') return false;
  throw new LocalApiError('invalid-request', `expected true or false, not '${v}'`);
}

/** Checks and canonicalises a comma-separated list of subnets for --advertise-routes. */
export function parseRoutes(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split(',')) {
    const t = part.trim();
    if (t === '') continue;
    const p = parsePrefix(t, { strict: true });
    if (p === null) {
      throw new LocalApiError(
        'invalid-request',
        `invalid route '${t}': give a CIDR prefix with no host bits set`,
      );
    }
    if (p.bits === 0) {
      throw new LocalApiError(
        'invalid-request',
        `'${t}' is an exit route: use --advertise-exit-node instead`,
      );
    }
    out.push(t);
  }
  return out;
}

/** The prefs patch the route flags ask for; null when none was given. */
export function prefsFromFlags(o: RouteFlags): PrefsPatch | null {
  const patch: PrefsPatch = {};
  if (o.advertiseRoutes !== undefined) patch.advertiseRoutes = parseRoutes(o.advertiseRoutes);
  if (o.advertiseExitNode !== undefined) patch.advertiseExitNode = o.advertiseExitNode;
  if (o.acceptRoutes !== undefined) patch.acceptRoutes = o.acceptRoutes;
  if (o.acceptDns !== undefined) patch.useTailnetDns = o.acceptDns;
  return Object.keys(patch).length > 0 ? patch : null;
}

/**
 * The peer `nameOrIp` names: by machine name, by one of its addresses, or by id. Only peers that
 * offer an exit node qualify; the error lists those that do.
 */
export function findExitNode(st: Status, nameOrIp: string): string {
  const want = nameOrIp.trim().toLowerCase();
  const peer = st.peers.find(
    (p) => p.name.toLowerCase() === want || p.id === nameOrIp || p.addresses.includes(nameOrIp.trim()),
  );
  const offered = st.peers.filter((p) => p.exitNodeOption).map((p) => p.name);
  const choices = offered.length > 0 ? `exit nodes: ${offered.join(', ')}` : 'no peer offers an exit node';
  if (!peer) throw new LocalApiError('invalid-request', `no peer named '${nameOrIp}' (${choices})`);
  if (!peer.exitNodeOption) {
    throw new LocalApiError('invalid-request', `${peer.name} does not offer an exit node (${choices})`);
  }
  return peer.id;
}

export function formatExitNodes(list: ExitNodeList): string {
  if (list.exitNodes.length === 0) return 'No exit nodes are offered to this node.';
  const rows = [['', 'NAME', 'ADDRESS', 'TAGS', 'ONLINE', 'LATENCY']];
  for (const n of list.exitNodes) {
    rows.push([
      n.selected ? '*' : n.id === list.recommended ? '+' : '',
      n.name,
      n.addresses.find((a) => !a.includes(':')) ?? n.addresses[0] ?? '-',
      n.tags.length > 0 ? n.tags.join(',') : '-',
      n.online ? 'yes' : 'no',
      n.latencyMs === null ? '-' : `${n.latencyMs.toFixed(1)} ms`,
    ]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  const text = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd(),
  );
  return [...text, '', '* in use, + recommended (online, lowest latency)'].join('\n');
}

export function addExitNodeCommands(program: Command, client: () => LocalApiClient): void {
  addRouteFlags(
    program
      .command('set')
      .description('change settings: the exit node, allow-LAN, and what this node offers')
      .option('--exit-node <name|ip>', 'send internet traffic through this peer; --exit-node= stops')
      .addOption(
        new Option(
          '--exit-node-allow-lan-access [bool]',
          'with an exit node, keep the local LAN reachable (default false)',
        ).argParser(parseBool),
      ),
  ).action(async (o: RouteFlags & { exitNode?: string; exitNodeAllowLanAccess?: boolean }) => {
    const api = client();
    const patch: PrefsPatch = prefsFromFlags(o) ?? {};
    if (o.exitNode !== undefined) {
      patch.exitNodeId = o.exitNode.trim() === '' ? null : findExitNode(await api.status(), o.exitNode);
    }
    if (o.exitNodeAllowLanAccess !== undefined) patch.exitNodeAllowLan = o.exitNodeAllowLanAccess;
    if (Object.keys(patch).length === 0)
      throw new LocalApiError('invalid-request', 'nothing to set: see weft set --help');
    const st = await api.setPrefs(patch);
    for (const h of st.health) process.stderr.write(`weft: ${h}\n`);
  });

  const exit = program.command('exit-node').description('exit nodes: list them, and suggest the best');
  exit
    .command('list')
    .description('the exit nodes offered to this node: name, tags, online, latency (measured now)')
    .option('--json', 'print the LocalAPI ExitNodeList object')
    .action(async (o: { json?: boolean }) => {
      const list = await client().exitNodes();
      printResult(o.json, list, formatExitNodes);
    });
  exit
    .command('suggest')
    .description('the online exit node with the lowest latency; use it with weft set --exit-node NAME')
    .option('--json', 'print {"id","name","latencyMs"}')
    .action(async (o: { json?: boolean }) => {
      const list = await client().exitNodes();
      const best = list.exitNodes.find((n) => n.id === list.recommended);
      if (!best) throw new LocalApiError('no-exit-node', 'no exit node is online and answering');
      process.stdout.write(
        o.json
          ? `${JSON.stringify({ id: best.id, name: best.name, latencyMs: best.latencyMs })}\n`
          : `${best.name}\n`,
      );
      if (!o.json) process.stderr.write(`Use it with: weft set --exit-node ${best.name}\n`);
    });
}
