import { describe, it } from 'vitest';
import { compilePolicy, type PolicyEngine } from './engine.js';
import { parsePolicy } from './parse.js';
import { parseTailnet, type Tailnet } from './tailnet.js';

// A benchmark, not a test: `WEFT_BENCH=1 npx vitest run control/src/policy/engine-scale.test.ts`
// prints compile and change costs for simulated tailnets of 1,000 and 10,000 nodes (users with
// three devices each, web and db servers, subnet routers). Skipped unless WEFT_BENCH is set.

const members = (n: number, odd: number) =>
  Array.from({ length: n }, (_, i) => `"u${i * 2 + odd}@example.com"`).join(',');

const policy = parsePolicy(`{
  "groups": { "group:dev": [${members(2000, 0)}], "group:ops": [${members(50, 1)}] },
  "tagOwners": { "tag:web": ["group:ops"], "tag:db": ["group:ops"], "tag:router": ["group:ops"] },
  "autoApprovers": { "routes": { "10.0.0.0/8": ["tag:router"] } },
  "acls": [
    { "action": "accept", "src": ["group:dev"], "dst": ["tag:web:443", "10.0.0.0/8:22"] },
    { "action": "accept", "src": ["group:ops"], "dst": ["*:*"] },
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
    { "action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"] },
  ],
  "grants": [{ "src": ["*"], "dst": ["tag:web"], "ip": ["tcp:80"] }],
}`);

function tailnet(n: number): Tailnet {
  const users = Array.from({ length: Math.ceil(n / 3) }, (_, i) => ({
    name: `u${i}`,
    email: `u${i}@example.com`,
  }));
  const nodes: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    const base = {
      ipv4: `100.${64 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`,
      ipv6: `fd7a:115c:a1e0::${i.toString(16)}`,
    };
    const kind = i % 50;
    if (kind === 0) nodes[`web${i}`] = { ...base, tags: ['tag:web'] };
    else if (kind === 1) nodes[`db${i}`] = { ...base, tags: ['tag:db'] };
    else if (kind === 2)
      nodes[`router${i}`] = { ...base, tags: ['tag:router'], advertisedRoutes: [`10.${i % 250}.0.0/16`] };
    else nodes[`n${i}`] = { ...base, user: `u${Math.floor(i / 3)}` };
  }
  return parseTailnet({ users, nodes });
}

/** Applies a change the way control would: recompute only the announced filters and routes. */
function settle(engine: PolicyEngine, change: ReturnType<PolicyEngine['upsertNode']>): void {
  for (const name of change.filters) engine.packetFilter(name);
  for (const name of change.routes) engine.peerRoutes(name);
}

/** Median wall time of `runs` calls, in milliseconds. */
function time(runs: number, fn: () => void): string {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    samples.push(performance.now() - t0);
  }
  return `${(samples.sort((a, b) => a - b)[Math.floor(runs / 2)] as number).toFixed(1)} ms`;
}

describe.skipIf(!process.env.WEFT_BENCH)('policy engine scale', () => {
  it.each([1000, 10000])(
    '%i nodes',
    (size) => {
      const t = tailnet(size);
      const engine = compilePolicy(policy, t);
      const router = (routes: string[]) => ({
        tags: ['tag:router'],
        ipv4: '100.64.0.2',
        advertisedRoutes: routes,
      });
      const lines = [
        `compile the tailnet: ${time(3, () => void compilePolicy(policy, t))}`,
        `every netmap (filters, peers, routes): ${time(3, () => void engine.all())}`,
        `a laptop joins, then leaves: ${time(5, () => {
          settle(engine, engine.upsertNode('newcomer', { user: 'u2', ipv4: '100.127.255.1' }));
          settle(engine, engine.removeNode('newcomer'));
        })}`,
        `a subnet router adds a route, then drops it: ${time(3, () => {
          settle(engine, engine.upsertNode('router2', router(['10.2.0.0/16', '10.200.0.0/16'])));
          settle(engine, engine.upsertNode('router2', router(['10.2.0.0/16'])));
        })}`,
      ];
      console.log(`${size} nodes\n  ${lines.join('\n  ')}`);
    },
    600_000,
  );
});
