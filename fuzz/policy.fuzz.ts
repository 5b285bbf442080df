import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FilterRule } from '@weft/protocol';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import {
  compilePolicy,
  PolicyError,
  parsePolicy,
  parseTailnet,
  type Tailnet,
} from '../control/src/policy/index.js';
import { accepted, crash, fuzzEntry, mutatedJson, refused, type Verdict } from './run.js';

// The policy parser: HuJSON text → Policy → compiled per-node filters. Seeds are the recorded
// Tailscale conformance policies (accepted and refused ones) with their tailnets; each input is one
// of them mutated field by field with policy words, as text, or with HuJSON comments and commas.
// Oracle: a refusal is a PolicyError (anything else thrown is a crash); an accepted policy compiles
// over its tailnet and every node's filter re-validates against the wire schema, with peers and
// peer routes naming only other nodes of the tailnet.

const CASES = fileURLToPath(new URL('../../shared/conformance/tailscale-policy/', import.meta.url));

interface Seed {
  policy: unknown;
  tailnet: Tailnet;
}

const FALLBACK: Seed = {
  policy: {
    groups: { 'group:dev': ['alice@example.com'] },
    tagOwners: { 'tag:web': ['group:dev'] },
    hosts: { db: '100.64.9.9' },
    acls: [{ action: 'accept', src: ['group:dev'], dst: ['tag:web:443', 'db:*'] }],
  },
  tailnet: parseTailnet({
    users: [{ name: 'alice', email: 'alice@example.com' }],
    nodes: { laptop: { user: 'alice', ipv4: '100.64.0.1' }, web: { tags: ['tag:web'], ipv4: '100.64.0.2' } },
  }),
};

function seeds(): Seed[] {
  if (!existsSync(CASES)) return [FALLBACK];
  return [
    FALLBACK,
    ...readdirSync(CASES)
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => JSON.parse(readFileSync(join(CASES, f), 'utf8')))
      .map((c) => ({
        policy: JSON.parse(c.policy),
        tailnet: parseTailnet({ users: c.users, nodes: c.nodes }),
      })),
  ];
}

const WORDS = [
  '*',
  '*:*',
  'autogroup:member',
  'autogroup:tagged',
  'autogroup:internet',
  'autogroup:self',
  'autogroup:self:*',
  'autogroup:internet:*',
  'group:dev',
  'group:nope',
  'tag:web',
  'tag:web:443',
  'tag:web:0-65535',
  'tag:web:65536',
  'tag:web:90-80',
  'alice@example.com',
  'alice@example.com:22',
  'db:*',
  '100.64.0.0/10:*',
  '0.0.0.0/0:*',
  '::/0:*',
  '198.18.0.0/33:*',
  'fd7a:115c:a1e0::1:22',
  '[fd7a:115c:a1e0::1]:22',
  '100.64.0.1-100.64.0.9:80',
  'accept',
  'deny',
  'tcp',
  'udp',
  '6',
  '256',
  -1,
  65536,
  [],
  {},
  null,
];

/** Comments and trailing commas where HuJSON allows them (and a few where it does not). */
function huJson(text: string, at: number, kind: number): string {
  const i = text.length === 0 ? 0 : at % text.length;
  const insert = ['// c\n', '/* c */', ',', ',]', '/*', '\n', ' ,}'][kind % 7] as string;
  return text.slice(0, i) + insert + text.slice(i);
}

const inputs = fc.constantFrom(...seeds()).chain((seed) =>
  fc.record({
    tailnet: fc.constant(seed.tailnet),
    text: fc.oneof(
      { weight: 4, arbitrary: mutatedJson(fc.constant(seed.policy), WORDS) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.nat(), fc.nat())
          .map(([at, kind]) => huJson(JSON.stringify(seed.policy, null, 2), at, kind)),
      },
    ),
  }),
);

function check({ text, tailnet }: { text: string; tailnet: Tailnet }): Verdict {
  let policy: ReturnType<typeof parsePolicy>;
  try {
    policy = parsePolicy(text);
  } catch (e) {
    return e instanceof PolicyError ? refused : crash(`parsePolicy threw ${describe(e)}`);
  }
  let all: ReturnType<ReturnType<typeof compilePolicy>['all']>;
  try {
    all = compilePolicy(policy, tailnet).all();
  } catch (e) {
    return accepted(`accepted policy does not compile: ${describe(e)}`);
  }
  const names = new Set(Object.keys(tailnet.nodes));
  for (const [name, node] of Object.entries(all)) {
    const filter = FilterRule.array().safeParse(node.packetFilter);
    if (!filter.success) return accepted(`${name}'s packet filter is invalid: ${filter.error.message}`);
    const stranger = node.peers.find((p) => p === name || !names.has(p));
    if (stranger !== undefined) return accepted(`${name}'s peers list ${stranger}`);
    const routed = Object.keys(node.peerRoutes).find((p) => !node.peers.includes(p));
    if (routed !== undefined) return accepted(`${name} has routes for ${routed}, which it does not see`);
  }
  return accepted();
}

const describe = (e: unknown) => (e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e));

it('policy parser: accepted ⇒ compiles and re-validates; refused ⇒ PolicyError', async () => {
  const stats = await fuzzEntry('policy parser', inputs, async (input) => check(input));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
