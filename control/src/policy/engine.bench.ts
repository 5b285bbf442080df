import { bench, describe } from 'vitest';
import { compilePolicy, type PolicyEngine } from './engine.js';
import { parsePolicy } from './parse.js';
import { parseTailnet, type Tailnet } from './tailnet.js';

// `npx vitest bench control/src/policy`: compile and change costs for simulated tailnets of
// 1,000 and 10,000 nodes (users with three devices each, web/db servers, subnet routers).

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

for (const size of [1000, 10000]) {
  describe(`${size} nodes`, () => {
    const t = tailnet(size);
    const engine = compilePolicy(policy, t);
    const options = { iterations: 3, warmupIterations: 1, time: 0 };
    bench('compile the tailnet', () => void compilePolicy(policy, t), options);
    bench('every netmap (filters, peers, routes)', () => void engine.all(), options);
    bench(
      'a laptop joins and leaves',
      () => {
        settle(engine, engine.upsertNode('newcomer', { user: 'u2', ipv4: '100.127.255.1' }));
        settle(engine, engine.removeNode('newcomer'));
      },
      options,
    );
    bench(
      'a subnet router changes its routes',
      () => {
        settle(
          engine,
          engine.upsertNode('router2', {
            tags: ['tag:router'],
            ipv4: '100.64.0.2',
            advertisedRoutes: ['10.2.0.0/16', '10.200.0.0/16'],
          }),
        );
        settle(
          engine,
          engine.upsertNode('router2', {
            tags: ['tag:router'],
            ipv4: '100.64.0.2',
            advertisedRoutes: ['10.2.0.0/16'],
          }),
        );
      },
      options,
    );
  });
}
