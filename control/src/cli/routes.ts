import type { Command } from 'commander';
import type { Store } from '../db/store.js';
import { policyNode, policyTailnet } from '../netmap/policy-visibility.js';
import { compilePolicy, parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import {
  adminApprovedRoutes,
  canonicalRoute,
  isExitRoute,
  normalizeRoutes,
  withApproved,
  withoutApproved,
} from '../tailnet/routes.js';
import { CliError } from './admin.js';

// `weft-control routes list|approve|unapprove`: the routes nodes advertise (subnets, and 0.0.0.0/0 +
// ::/0 for an exit node) and which are in use. Approving writes the database; a running server
// picks the change up through its change feed and sends the new routes to the nodes that may use
// them.

/** One node's routes as `routes list` shows them. */
export interface NodeRoutes {
  node: string;
  /** What the node offers. */
  advertised: string[];
  /** What an admin approved (kept even when the node stops advertising it). */
  approved: string[];
  /** In use: advertised, and approved by an admin or by the policy's autoApprovers. */
  enabled: string[];
  /** Offers an approved exit node. */
  exitNode: boolean;
}

/** The routes of every node that advertises or has approved routes, as the policy in force decides. */
export async function listRoutes(store: Store): Promise<NodeRoutes[]> {
  const [users, nodes, current] = await Promise.all([
    store.listUsers(),
    store.listNodes(),
    store.currentPolicy(),
  ]);
  const engine = current ? compilePolicy(parsePolicy(current.text), policyTailnet(users, nodes)) : null;
  const enabledOf = (n: NodeRecord) =>
    normalizeRoutes(engine ? engine.approvedRoutesOf(policyNode(n)) : adminApprovedRoutes(n));
  return nodes
    .filter((n) => n.advertisedRoutes.length > 0 || n.approvedRoutes.length > 0)
    .map((n) => {
      const enabled = enabledOf(n);
      return {
        node: n.name,
        advertised: normalizeRoutes(n.advertisedRoutes),
        approved: normalizeRoutes(n.approvedRoutes),
        enabled,
        exitNode: enabled.some(isExitRoute),
      };
    });
}

export function formatRoutes(rows: NodeRoutes[], json: boolean): string {
  if (json) return `${JSON.stringify(rows, null, 2)}\n`;
  if (rows.length === 0) return 'no node advertises routes\n';
  const list = (rs: string[]) => (rs.length > 0 ? rs.join(',') : '-');
  const table = [
    ['NODE', 'ADVERTISED', 'ENABLED', 'PENDING APPROVAL'],
    ...rows.map((r) => [
      r.node,
      list(r.advertised),
      list(r.enabled),
      list(r.advertised.filter((a) => !r.enabled.includes(a))),
    ]),
  ];
  const widths = table[0]?.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length))) ?? [];
  return `${table
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/** Routes from the command line: CIDRs (host bits zero); `exit` stands for 0.0.0.0/0 and ::/0. */
export function parseRouteArgs(args: readonly string[]): string[] {
  const out: string[] = [];
  for (const arg of args.flatMap((a) => a.split(','))) {
    if (arg.trim() === '') continue;
    if (arg.trim() === 'exit') {
      out.push('0.0.0.0/0', '::/0');
      continue;
    }
    const route = canonicalRoute(arg);
    if (route === null) throw new CliError(`invalid route ${arg}: give a CIDR prefix with no host bits set`);
    out.push(route);
  }
  if (out.length === 0) throw new CliError('give at least one route');
  return normalizeRoutes(out);
}

async function nodeNamed(store: Store, name: string): Promise<NodeRecord> {
  const node = await store.nodeByName(name);
  if (node === undefined) throw new CliError(`no node named ${name}`, 'not-found');
  return node;
}

/** Approves routes for a node; returns its approved list and the routes it does not advertise (yet). */
export async function approveRoutes(
  store: Store,
  name: string,
  routes: string[],
): Promise<{ approved: string[]; notAdvertised: string[] }> {
  const node = await nodeNamed(store, name);
  const approved = withApproved(node.approvedRoutes, routes);
  await store.updateNode(node.id, { approvedRoutes: approved });
  const advertised = new Set(normalizeRoutes(node.advertisedRoutes));
  return { approved, notAdvertised: routes.filter((r) => !advertised.has(r)) };
}

export async function unapproveRoutes(store: Store, name: string, routes: string[]): Promise<string[]> {
  const node = await nodeNamed(store, name);
  const approved = withoutApproved(node.approvedRoutes, routes);
  await store.updateNode(node.id, { approvedRoutes: approved });
  return approved;
}

export function registerRoutesCommands(
  program: Command,
  io: { out(text: string): void; err(text: string): void },
  withStore: (cmd: Command, fn: (store: Store) => Promise<void>) => Promise<void>,
): void {
  const routes = program
    .command('routes')
    .description('subnet routes and exit nodes: what nodes advertise, and approving them');
  routes
    .command('list')
    .description('list advertised routes, which are enabled (approved) and which wait for approval')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) => io.out(formatRoutes(await listRoutes(store), opts.json ?? false))),
    );
  routes
    .command('approve <node> <routes...>')
    .description('approve routes (CIDRs; `exit` or 0.0.0.0/0 or ::/0 for the exit node) for a node')
    .action((name: string, args: string[], _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const { approved, notAdvertised } = await approveRoutes(store, name, parseRouteArgs(args));
        io.err(`${name}: approved ${approved.join(', ')}\n`);
        if (notAdvertised.length > 0) {
          io.err(`note: ${name} does not advertise ${notAdvertised.join(', ')}; approved for when it does\n`);
        }
      }),
    );
  routes
    .command('unapprove <node> <routes...>')
    .description('withdraw the approval of routes; peers stop using them at once')
    .action((name: string, args: string[], _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const approved = await unapproveRoutes(store, name, parseRouteArgs(args));
        io.err(`${name}: approved ${approved.length > 0 ? approved.join(', ') : 'nothing'}\n`);
      }),
    );
}
