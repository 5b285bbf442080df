#!/usr/bin/env node
// `npm run bench -- NAME [ARGS…]`: runs one benchmark from its built file (`npm run build` first).
// Add a benchmark by adding its name and built entry point here.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BENCHMARKS = {
  'exit-node': {
    file: 'e2e/dist/bench/exit-node.js',
    about: 'exit node lab (root): iperf3 through an exit node vs a direct peer, same run [--seconds S]',
  },
  tunnel: {
    file: 'e2e/dist/bench/tunnel.js',
    about:
      "tunnel lab (root): iperf3 bare veth, plain wireguard-go (1280, 1420, Weft's MTU, with a host firewall), Weft direct allow-all, 1,000 rules, no nft table; rounds alternate order; ratios per round and their median, the goal's verdict, CPU per lab process per row [--seconds S] [--rounds N]",
  },
  nat: {
    file: 'e2e/dist/bench/nat.js',
    about:
      'NAT lab (root): weft up to first ping / direct path per row, share direct; direct again after a renumber; iperf3 relay vs direct [connect|change|throughput]',
  },
  'connect-vs-tailscale': {
    file: 'e2e/dist/bench/connect-vs-tailscale.js',
    about: 'NAT lab (root): up to first ping / direct path, Weft pair vs Tailscale-client pair per row',
  },
  relay: {
    file: 'relay/dist/bench/forwarding.js',
    about: 'relay forwarding capacity per CPU core, loopback',
  },
  'helper-filter': {
    file: 'native-helpers/dist/bench/helper-filter.js',
    about: 'helper: a ~48 KB filter refused by the element bound vs the unbounded rendering (time, memory)',
  },
  'helper-reapply': {
    file: 'native-helpers/dist/bench/helper-reapply.js',
    about:
      "helper (root): CPU of one unchanged apply of a filtered state, its commands' included, with the flow set full [FLOWS] [APPLIES]",
  },
  'relay-vs-derper': {
    file: 'relay/dist/bench/vs-derper.js',
    about:
      "weft-relay vs Tailscale's derper, same DERP load (one TypeScript DERP client drives both): Gbit/s per core, p99, RSS/conn [--pairs N]",
  },
  'tailscale-map': {
    file: 'control/dist/bench/tailscale-map.js',
    about:
      'full maps and endpoint patches for N=200 nodes: Tailscale MapResponses vs Weft netmap messages [N]',
  },
  'control-load': {
    file: 'control/dist/bench/control-load.js',
    about:
      'N real nodes (registration + signed streams) vs weft-control: connect, RSS, join/endpoint/delete/policy fan-out p50/p99/max, restart [--nodes N] [--policy allow-all|per-person] [--replicas R --db postgres://…]',
  },
  'hub-memory': {
    file: 'control/dist/bench/hub-memory.js',
    about:
      "control's netmap hub in-process, N nodes connected, allow-all and per-person: RSS, heap, sent records' bytes, connect and policy-change time, records shared per class vs per stream [N…] [--shared-only]",
  },
  'control-vs-headscale': {
    file: 'control/dist/bench/vs-headscale.js',
    about:
      'the same Tailscale-protocol load (N nodes) vs weft-control and headscale v0.27.1: register, connect, join/endpoint/delete fan-out p50/p99/max, RSS, headscale/weft per row [--nodes N] [--workers W] [--only weft|headscale]',
  },
  dns: {
    file: 'core/dist/bench/dns.js',
    about:
      "the engine's resolver on loopback: qps and p99 for tailnet names and forwarded names vs the same upstream asked directly [QUERIES]",
  },
  policy: {
    file: 'control/dist/bench/policy-scale.js',
    about: 'policy change to pushed netmaps on 1,000 and 10,000 simulated nodes [SIZES…]',
  },
};

const [name, ...args] = process.argv.slice(2);
const bench = BENCHMARKS[name];
if (bench === undefined) {
  console.error(
    `usage: npm run bench -- NAME [ARGS…]\n${Object.entries(BENCHMARKS)
      .map(([n, b]) => `  ${n.padEnd(10)} ${b.about}`)
      .join('\n')}`,
  );
  process.exit(2);
}
const file = fileURLToPath(new URL(`../${bench.file}`, import.meta.url));
if (!existsSync(file)) {
  console.error(`${bench.file} is not built: run npm run build`);
  process.exit(2);
}
const result = spawnSync(process.execPath, [file, ...args], { stdio: 'inherit' });
process.exit(result.status ?? 1);
