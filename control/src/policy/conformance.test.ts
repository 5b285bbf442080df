import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FilterRule } from '@weft/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { readPolicyCases } from '../testing/conformance-cases.js';
import { runCompileCommand } from './compile-command.js';
import { compareFilters } from './filter-meaning.js';

// Every case recorded from Tailscale's control plane (../shared/conformance/tailscale-policy),
// run through the compile command and compared by meaning: filters as sets of
// (source × destination × port × protocol), peers as sets, routes as prefix sets.

interface NodeExpectation {
  packetFilter?: FilterRule[] | null;
  peers?: string[] | null;
  peerRoutes?: Record<string, string[]> | null;
}

interface Case {
  id: string;
  policy: string;
  users: unknown;
  nodes: Record<string, unknown>;
  expect?: Record<string, NodeExpectation>;
  expectError?: { status: number; body: { message: string } };
}

/**
 * Captures we deliberately do not match exactly. acl-k03: the route 10.33.0.0/16 was approved by
 * autoApprovers moments before capture and reached only some of the nodes that the same rule
 * covers (tagged nodes weedle, kakuna and charmander never got it, tagged beedrill did): a
 * propagation race at Tailscale, not policy semantics. Filters and peers are still compared.
 */
const CAPTURE_ANOMALIES: Record<string, string[]> = {
  'acl-k03': [
    'charmander routes of squirtle: want [] got [10.33.0.0/16]',
    'kakuna routes of squirtle: want [] got [10.33.0.0/16]',
    'weedle routes of squirtle: want [] got [10.33.0.0/16]',
  ],
};

/**
 * Where several routers carry the same prefix, Tailscale makes the first to advertise it the
 * primary. The case files do not record that order (their nodes are sorted by name), so routes
 * are compared with the router named only as "one of the prefix's routers", and the cases where
 * our election (first in `nodes` order) picked another router are collected and checked below.
 */
const haElections = new Map<string, Set<string>>();

const cases = readPolicyCases<Case>();
const work = mkdtempSync(join(tmpdir(), 'weft-conformance-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function compile(c: Case) {
  const policyFile = join(work, `${c.id}.policy.hujson`);
  const tailnetFile = join(work, `${c.id}.tailnet.json`);
  writeFileSync(policyFile, c.policy);
  writeFileSync(tailnetFile, JSON.stringify({ users: c.users, nodes: c.nodes }));
  return runCompileCommand({ policyFile, tailnetFile });
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

type NodeResult = { packetFilter: FilterRule[]; peers: string[]; peerRoutes: Record<string, string[]> };

/** Prefixes that several nodes advertise: who carries them is an election. */
function sharedPrefixes(c: Case): Set<string> {
  const count = new Map<string, number>();
  for (const node of Object.values(c.nodes) as { advertisedRoutes?: string[] }[]) {
    for (const r of node.advertisedRoutes ?? []) count.set(r, (count.get(r) ?? 0) + 1);
  }
  return new Set([...count].filter(([, n]) => n > 1).map(([r]) => r));
}

/**
 * Routes per peer, with shared prefixes moved to a pseudo-peer standing for any of their routers;
 * a router of a shared prefix gets it from the primary only when it is not the primary itself.
 */
function routeLines(
  routes: Record<string, string[]> | null | undefined,
  shared: Set<string>,
  own: string[],
): string[] {
  return Object.entries(routes ?? {}).flatMap(([peer, prefixes]) =>
    prefixes.flatMap((p) => {
      if (!shared.has(p)) return [`${peer} ${p}`];
      return own.includes(p) ? [] : [`(a router of ${p}) ${p}`];
    }),
  );
}

/** Differences for one node, as readable lines; empty when it matches. */
function nodeDifferences(name: string, want: NodeExpectation, got: NodeResult, c: Case): string[] {
  const out: string[] = [];
  const { onlyA, onlyB } = compareFilters(want.packetFilter ?? [], got.packetFilter);
  for (const l of onlyA) out.push(`${name} filter missing: ${l}`);
  for (const l of onlyB) out.push(`${name} filter extra:   ${l}`);
  const wantPeers = sorted(want.peers ?? []);
  const gotPeers = sorted(got.peers);
  if (wantPeers.join() !== gotPeers.join()) out.push(`${name} peers: want [${wantPeers}] got [${gotPeers}]`);
  const routes = (r: Record<string, string[]> | null | undefined) =>
    Object.fromEntries(
      Object.entries(r ?? {})
        .filter(([, v]) => v.length > 0)
        .map(([k, v]) => [k, sorted(v).join(',')]),
    );
  const wantRoutes = routes(want.peerRoutes);
  const gotRoutes = routes(got.peerRoutes);
  const exact = [...new Set([...Object.keys(wantRoutes), ...Object.keys(gotRoutes)])].flatMap((peer) =>
    wantRoutes[peer] === gotRoutes[peer]
      ? []
      : [`${name} routes of ${peer}: want [${wantRoutes[peer] ?? ''}] got [${gotRoutes[peer] ?? ''}]`],
  );
  const shared = sharedPrefixes(c);
  const own = (c.nodes[name] as { advertisedRoutes?: string[] }).advertisedRoutes ?? [];
  const electionOnly =
    sorted(routeLines(want.peerRoutes, shared, own)).join() ===
    sorted(routeLines(got.peerRoutes, shared, own)).join();
  if (exact.length > 0 && electionOnly) {
    const elections = haElections.get(c.id) ?? new Set<string>();
    for (const line of exact) elections.add(line.replace(/^\S+ /, ''));
    haElections.set(c.id, elections);
    return out;
  }
  return [...out, ...exact];
}

describe(`Tailscale policy conformance (${cases.length} cases)`, () => {
  it.each(cases.map((c) => [c.id, c] as const))('%s', (_id, c) => {
    const result = compile(c);
    if (c.expectError) {
      expect(result.exitCode, `Tailscale refused it: ${c.expectError.body.message}`).toBe(1);
      expect(result.stderr).toMatch(/line \d+, column \d+/);
      return;
    }
    expect(result.exitCode, `the policy was refused: ${result.stderr}`).toBe(0);
    const got = JSON.parse(result.stdout).nodes as Record<string, NodeResult>;
    expect(sorted(Object.keys(got))).toEqual(sorted(Object.keys(c.nodes)));
    const differences = Object.entries(c.expect ?? {}).flatMap(([name, want]) =>
      nodeDifferences(name, want, got[name] as NodeResult, c),
    );
    expect(differences, differences.join('\n')).toEqual(CAPTURE_ANOMALIES[c.id] ?? []);
  });

  it('differs in HA elections only where the first advertiser is not recorded', () => {
    // Every difference is the single pair butterfree/metapod sharing 192.168.1.0/24 in the
    // routes-* captures, where Tailscale's primary (metapod) advertised first.
    const lines = new Set([...haElections.values()].flatMap((s) => [...s]));
    expect([...lines].sort()).toEqual([
      'routes of butterfree: want [] got [192.168.1.0/24]',
      'routes of metapod: want [192.168.1.0/24] got []',
    ]);
    expect([...haElections.keys()].every((id) => id.startsWith('routes-'))).toBe(true);
  });
});
