import { applyStreamMessage, mapTokenAfter, type NetMap, type StreamServerMessage } from '@weft/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../policy/index.js';
import type { NodeRecord } from '../tailnet/records.js';
import { TEST_RANGES, testNode } from '../testing/nodes.js';
import { wireText } from '../testing/wire.js';
import { NetmapHub, type StreamSession } from './hub.js';
import { PolicyVisibility, wildcardSourcesOf } from './policy-visibility.js';
import type { Visibility, VisibilityPolicy } from './visibility.js';

// The hub applies one node's rows at a time (a join, a delete, a report) instead of reloading the
// tailnet. After any sequence of such changes, what every connected node holds must be exactly what
// a hub given the whole table after each change (the full reload) says: this is the test that fails
// if the incremental path drifts. The reference hub is fed the same history, not built once at the
// end: the policy engine elects a subnet's primary router by the order nodes reached it, so a router
// that expired and came back ranks after one that joined meanwhile, reload or not.
// The hub keeps a compact record of what it sent each node (SentRecord): a record that said "sent"
// wrongly leaves a node stale (the comparison fails), one that forgot resends views the node already
// has (counted below: an unbatched hub must send none). Nodes also fall behind (backlogged) and are
// resynced, which replaces their record with a whole map's.
// Nodes also reconnect with the token of the map they hold (a stream replaced, or control restarted:
// a new hub on the same rows), and are sent `resume` when control would send the peers they hold: a
// token that named peers the node did not hold would leave it stale, and the comparison fails.

const REPLICA = 'r1';
const PEOPLE = ['alice', 'bob', 'carol'];
const SUBNET = '198.51.100.0/24';
const PERSON_POLICY = `{
  "tagOwners": { "tag:server": ["alice@example.com"] },
  "autoApprovers": { "routes": { "${SUBNET}": ["tag:server"] } },
  "acls": [
    { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] },
    { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22,443"] },
  ],
}`;

/** Policies a PolicyVisibility hub is given in turn: per person, then all nodes seeing all on two ports. */
const POLICIES = [PERSON_POLICY, '{ "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:22,443"] }] }'];

/** The role a node has under RolePolicy: `tag:rK` is role K, `tag:server` role 0, untagged UNTAGGED. */
const UNTAGGED = 3;
const ROLES = UNTAGGED + 1;
function roleOf(node: NodeRecord): number {
  if (node.tags.includes('tag:server')) return 0;
  const tag = node.tags.find((t) => t.startsWith('tag:r'));
  return tag === undefined ? UNTAGGED : Number(tag.slice('tag:r'.length));
}

/**
 * A policy of roles, to move the hub's groups (Visibility.shared) about: roles are put in two
 * classes, and each role sees the roles of the classes its class sees. A node's packet filter names
 * the roles it sees. Tagged nodes share a key, the policy's generation and the roles they see, so
 * roles of one class share a record, new rows split and merge groups, and a new generation re-keys
 * every group. Untagged nodes also see their owner's other untagged nodes, and have no key (as
 * autogroup:self). Rows are kept in each visibility as decided: a hub that fails to decide again
 * sends stale peers.
 */
class RolePolicy implements VisibilityPolicy {
  /** Per role, the roles it sees, as bits; all of them to start with. */
  rows: number[] = Array.from({ length: ROLES }, () => (1 << ROLES) - 1);
  generation = 0;
  /** Each node's role as last told (affectedBy), to name who saw it before. */
  private readonly roles = new Map<string, number>();

  visibilityOf(node: NodeRecord): Visibility {
    const role = roleOf(node);
    const row = this.rows[role] as number;
    const classSees = (peer: NodeRecord) => ((row >> roleOf(peer)) & 1) === 1;
    const own = (peer: NodeRecord) =>
      role === UNTAGGED && roleOf(peer) === UNTAGGED && node.userId !== null && peer.userId === node.userId;
    return {
      canSee: (peer) => peer.id !== node.id && (classSees(peer) || own(peer)),
      packetFilter: [
        { SrcIPs: [`100.64.0.${row}/32`], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] },
      ],
      ...(role === UNTAGGED ? {} : { shared: { key: `${this.generation} ${row}`, canSee: classSees } }),
    };
  }

  affectedBy(
    changed: readonly NodeRecord[],
    nodes: ReadonlyMap<string, NodeRecord>,
  ): ReadonlySet<string> | 'all' {
    if (changed.length > 1) {
      for (const n of changed) this.told(n, nodes);
      return 'all';
    }
    const affected = new Set<string>();
    for (const n of changed) {
      const roles = [this.roles.get(n.id), this.told(n, nodes)].filter((r) => r !== undefined);
      for (const other of nodes.values()) {
        const row = this.rows[roleOf(other)] as number;
        if (
          roles.some((r) => ((row >> r) & 1) === 1) ||
          (other.userId !== null && other.userId === n.userId)
        ) {
          affected.add(other.id);
        }
      }
    }
    return affected;
  }

  /** Remembers `n`'s role now (undefined: gone). */
  private told(n: NodeRecord, nodes: ReadonlyMap<string, NodeRecord>): number | undefined {
    const current = nodes.get(n.id);
    if (current === undefined) {
      this.roles.delete(n.id);
      return undefined;
    }
    this.roles.set(n.id, roleOf(current));
    return roleOf(current);
  }

  /**
   * Puts role r in class `classOf[r]` (0 or 1), class a seeing class b as `sees` says ([0-0, 0-1,
   * 1-1]), in a new generation when `bump`; the nodes whose peers moved (as a policy engine says,
   * so a node alone in its role whose row only gained or lost its own role is not among them).
   */
  setRows(classOf: readonly number[], sees: readonly boolean[], bump: boolean, nodes: Iterable<NodeRecord>) {
    const see = (a: number, b: number) => sees[a + b] === true;
    const rows = Array.from({ length: ROLES }, (_, r) => {
      let row = 0;
      for (let s = 0; s < ROLES; s++) if (see(classOf[r] as number, classOf[s] as number)) row |= 1 << s;
      return row;
    });
    const before = this.rows;
    this.rows = rows;
    if (bump) this.generation++;
    const all = [...nodes];
    const inRole = new Map<number, number>();
    for (const n of all) inRole.set(roleOf(n), (inRole.get(roleOf(n)) ?? 0) + 1);
    const peersMoved = (n: NodeRecord) => {
      const flipped = (before[roleOf(n)] as number) ^ (rows[roleOf(n)] as number);
      for (let s = 0; s < ROLES; s++) {
        const others = (inRole.get(s) ?? 0) - (s === roleOf(n) ? 1 : 0);
        if ((flipped & (1 << s)) !== 0 && others > 0) return true;
      }
      return false;
    };
    return new Set(all.filter(peersMoved).map((n) => n.id));
  }
}

/** Resumes sent in the current property's runs: the property must see some. */
let resumes = 0;

/** A session that keeps the netmap as the node would, from the messages it was sent. */
class Session implements StreamSession {
  netmap: NetMap | null = null;
  /** The token of the map it holds (the latest message's). */
  token: string | null = null;
  closed = false;
  /** Its transport holds too much: the hub must hold deltas back until resync. */
  backlog = false;
  /** Peer views it was sent that it held already. */
  resent = 0;
  constructor(readonly nodeId: string) {}
  send(m: StreamServerMessage) {
    if (this.backlog && m.type === 'delta') throw new Error(`a delta to backlogged ${this.nodeId}`);
    // The bytes the hub put together for it are JSON.stringify's (key order too).
    if (m.type === 'delta') expect(wireText(m)).toBe(JSON.stringify(m));
    for (const view of m.type === 'delta' ? (m.peersUpserted ?? []) : []) {
      const held = this.netmap?.peers.find((p) => p.id === view.id);
      if (JSON.stringify(held) === JSON.stringify(view)) this.resent++;
    }
    // What the node reads is the bytes (a whole map's may be its class's, put together earlier).
    const read = JSON.parse(wireText(m)) as StreamServerMessage;
    if (read.type === 'resume') expect(this.netmap, `${this.nodeId} resumed holding no map`).not.toBeNull();
    if (read.type === 'resume') resumes++;
    this.netmap = applyStreamMessage(this.netmap, read);
    this.token = mapTokenAfter(read);
  }
  close() {
    this.closed = true;
  }
  backlogged() {
    return this.backlog;
  }
}

type Op =
  | { kind: 'join'; i: number; person: number; server: boolean }
  | { kind: 'delete'; i: number }
  | { kind: 'endpoints'; i: number; port: number }
  | { kind: 'routes'; i: number; advertise: boolean; approve: boolean }
  | { kind: 'expire'; i: number }
  | { kind: 'connect'; i: number }
  | { kind: 'disconnect'; i: number }
  /** The node's stream again, with the map and token it holds (control sees it before the close). */
  | { kind: 'reconnect'; i: number }
  /** Control restarts: a new hub on the same rows, every node reconnecting with its map and token. */
  | { kind: 'restart' }
  /** The node's transport backs up, or (when it had) drains and is resynced. */
  | { kind: 'backlog'; i: number }
  /** A batched hub sends what it holds (the next event-loop turn in control). */
  | { kind: 'flush' }
  /** A hub holding presence releases it for the next flush (PRESENCE_HOLD_MS in control). */
  | { kind: 'presence' }
  /** PolicyVisibility only: the policy is replaced by POLICIES[p] (allow-all: a first policy). */
  | { kind: 'policy'; p: number }
  /** RolePolicy only: the node takes another role. */
  | { kind: 'role'; i: number; role: number }
  /** RolePolicy only: new rows (see setRows), in a new generation when `bump`. */
  | { kind: 'rows'; classOf: number[]; sees: boolean[]; bump: boolean };

const index = fc.integer({ min: 1, max: 6 });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('join' as const),
    i: index,
    person: fc.integer({ min: 0, max: PEOPLE.length - 1 }),
    server: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('delete' as const), i: index }),
  fc.record({ kind: fc.constant('endpoints' as const), i: index, port: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    kind: fc.constant('routes' as const),
    i: index,
    advertise: fc.boolean(),
    approve: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('expire' as const), i: index }),
  // Often: a class's whole map is put together once and given to each member that connects after.
  fc.record({ kind: fc.constant('connect' as const), i: index }),
  fc.record({ kind: fc.constant('connect' as const), i: index }),
  fc.record({ kind: fc.constant('connect' as const), i: index }),
  fc.record({ kind: fc.constant('connect' as const), i: index }),
  fc.record({ kind: fc.constant('disconnect' as const), i: index }),
  fc.record({ kind: fc.constant('reconnect' as const), i: index }),
  fc.record({ kind: fc.constant('reconnect' as const), i: index }),
  fc.record({ kind: fc.constant('restart' as const) }),
  fc.record({ kind: fc.constant('backlog' as const), i: index }),
  fc.record({ kind: fc.constant('flush' as const) }),
  fc.record({ kind: fc.constant('presence' as const) }),
  fc.record({ kind: fc.constant('policy' as const), p: fc.integer({ min: 0, max: 1 }) }),
);

/** Under RolePolicy, nodes also change roles and the rows change; more streams, to share records. */
const roleOp: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: op, weight: 3 },
  {
    arbitrary: fc.record({
      kind: fc.constant('join' as const),
      i: index,
      person: fc.integer({ min: 0, max: PEOPLE.length - 1 }),
      server: fc.constant(true),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ kind: fc.constant('connect' as const), i: index }), weight: 3 },
  {
    arbitrary: fc.record({
      kind: fc.constant('role' as const),
      i: index,
      role: fc.integer({ min: 0, max: ROLES - 1 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('rows' as const),
      classOf: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: ROLES, maxLength: ROLES }),
      sees: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
      bump: fc.boolean(),
    }),
    weight: 2,
  },
);

const ROLES_POLICY = 'roles';
type PolicyUnderTest = string | null | typeof ROLES_POLICY;

function makeHub(
  policy: PolicyUnderTest,
  replica: string | null,
  schedule?: (flush: () => void) => void,
  holdPresence?: (release: () => void) => void,
  /** The policy a restarted hub keeps deciding with (its rows, its policy). */
  keep?: VisibilityPolicy,
) {
  let visibility: VisibilityPolicy;
  if (keep !== undefined) visibility = keep;
  else if (policy === ROLES_POLICY) visibility = new RolePolicy();
  else {
    const compiled = new PolicyVisibility(wildcardSourcesOf(TEST_RANGES));
    if (policy !== null) compiled.setPolicy(parsePolicy(policy));
    visibility = compiled;
  }
  const hub = new NetmapHub(
    visibility,
    TEST_RANGES,
    () => new Date('2026-06-01T00:00:00Z'),
    schedule,
    holdPresence,
  );
  hub.replica = replica;
  return { hub, visibility };
}

/** A netmap with its peers in a fixed order (the order of upserts is not part of the state). */
function normal(map: NetMap | null | undefined) {
  if (!map) return map;
  return { ...map, peers: [...map.peers].sort((a, b) => a.id.localeCompare(b.id)) };
}

/** Runs `ops` against the database model and the incremental hub, then compares with a full load. */
function check(policy: PolicyUnderTest, mode: Mode, ops: readonly Op[]): void {
  const batched = mode !== 'at once';
  const db = new Map<string, NodeRecord>();
  const flushes: (() => void)[] = [];
  const flush = () => {
    for (let f = flushes.shift(); f !== undefined; f = flushes.shift()) f();
  };
  const releases: (() => void)[] = [];
  const release = () => {
    for (let r = releases.shift(); r !== undefined; r = releases.shift()) r();
  };
  const hubOf = (replica: string, keep?: VisibilityPolicy) =>
    makeHub(
      policy,
      replica,
      batched ? (f) => flushes.push(f) : undefined,
      mode === 'presence held' ? (r) => releases.push(r) : undefined,
      keep,
    );
  let { hub, visibility } = hubOf(REPLICA);
  /** The replica the hub is: each restart is a new one, the rows of the last still online. */
  let replica = REPLICA;
  // The full reload after each change; online is what the rows say.
  const { hub: reference, visibility: referenceVisibility } = makeHub(policy, null);
  const sessions = new Map<string, Session>();
  let clock = 0;
  const write = (id: string, change: Partial<NodeRecord>) => {
    const row = db.get(id);
    if (row) db.set(id, { ...row, ...change });
  };
  const drain = (session: Session, backlog = false) => {
    session.backlog = backlog;
    if (!backlog) hub.resync(session);
  };
  const applyRow = (id: string) => {
    const row = db.get(id);
    hub.apply([id], row ? [row] : []);
    reference.update([...db.values()]);
  };

  for (const o of ops) {
    clock++;
    if (o.kind === 'flush') {
      flush();
      continue;
    }
    if (o.kind === 'presence') {
      release();
      continue;
    }
    if (o.kind === 'restart') {
      // What the old hub had not flushed is lost with it; its streams end (rows stay: online).
      flushes.length = 0;
      releases.length = 0;
      replica = `${REPLICA}-${clock}`;
      ({ hub } = hubOf(replica, visibility));
      hub.update([...db.values()]);
      for (const [sid, old] of sessions) {
        const session = new Session(sid);
        session.netmap = old.netmap;
        sessions.set(sid, session);
        if (!hub.has(sid)) {
          sessions.delete(sid);
          continue;
        }
        hub.connect(session, old.token ?? undefined);
        write(sid, { streamedBy: replica });
      }
      reference.update([...db.values()]);
      continue;
    }
    if (o.kind === 'rows') {
      if (!(visibility instanceof RolePolicy && referenceVisibility instanceof RolePolicy)) continue;
      const moved = visibility.setRows(o.classOf, o.sees, o.bump, hub.records());
      referenceVisibility.setRows(o.classOf, o.sees, o.bump, []);
      hub.policyChanged(moved);
      reference.policyChanged('all');
      continue;
    }
    if (o.kind === 'policy') {
      if (!(visibility instanceof PolicyVisibility && referenceVisibility instanceof PolicyVisibility))
        continue;
      const text = POLICIES[o.p] as string;
      hub.policyChanged(visibility.setPolicy(parsePolicy(text)));
      referenceVisibility.setPolicy(parsePolicy(text));
      reference.policyChanged('all');
      continue;
    }
    const id = `n${o.i}`;
    if (o.kind === 'backlog') {
      const session = sessions.get(id);
      if (session) drain(session, !session.backlog);
      continue;
    }
    switch (o.kind) {
      case 'join': {
        const person = PEOPLE[o.person] as string;
        const owner = o.server ? null : { name: person, email: `${person}@example.com` };
        const createdAt = new Date(Date.UTC(2026, 0, 1, 0, 0, clock)).toISOString();
        // A join of a known id is its owner logging in again: a fresh key, nothing else moves.
        const old = db.get(id);
        db.set(
          id,
          old
            ? { ...old, keyExpiry: null }
            : testNode(o.i, owner, { createdAt, ...(o.server ? { tags: ['tag:server'] } : {}) }),
        );
        break;
      }
      case 'delete':
        db.delete(id);
        break;
      case 'endpoints':
        write(id, { endpoints: [`203.0.113.${o.i}:${40000 + o.port}`] });
        break;
      case 'routes':
        write(id, {
          advertisedRoutes: o.advertise ? [SUBNET] : [],
          approvedRoutes: o.advertise && o.approve ? [SUBNET] : [],
        });
        break;
      case 'role':
        write(id, { tags: o.role === UNTAGGED ? [] : [`tag:r${o.role}`] });
        break;
      case 'expire':
        write(id, { keyExpiry: '2026-01-01T00:00:00.000Z', streamedBy: null });
        break;
      case 'connect':
      case 'reconnect': {
        const old = sessions.get(id);
        if (!hub.has(id) || (o.kind === 'connect') !== (old === undefined)) continue;
        const session = new Session(id);
        session.netmap = old?.netmap ?? null;
        hub.connect(session, old?.token ?? undefined);
        sessions.set(id, session);
        // Presence writes the row without a reload (the hub already told the peers).
        write(id, { streamedBy: replica });
        reference.update([...db.values()]);
        continue;
      }
      case 'disconnect': {
        const session = sessions.get(id);
        if (!session) continue;
        sessions.delete(id);
        if (!hub.disconnect(session)) continue;
        write(id, { streamedBy: null, lastSeen: new Date(Date.UTC(2026, 0, 2, 0, 0, clock)).toISOString() });
        break;
      }
    }
    applyRow(id);
    for (const [sid, s] of sessions) if (s.closed) sessions.delete(sid);
  }

  for (const session of sessions.values()) drain(session);
  release();
  flush();
  for (const [id, session] of sessions) {
    expect(normal(session.netmap), `${id} after ${JSON.stringify(ops)}`).toEqual(
      normal(reference.snapshot(id)),
    );
    // Batched, a view that changed and changed back before the flush is sent (as the latest).
    if (!batched) expect(session.resent, `${id} resent after ${JSON.stringify(ops)}`).toBe(0);
  }
  for (const id of db.keys()) expect(hub.view(id)).toEqual(reference.view(id));
}

/** Deltas sent at once, batched until a flush, or batched with peers' presence-only changes held. */
type Mode = 'at once' | 'batched' | 'presence held';

describe('NetmapHub.apply', () => {
  for (const policy of [null, PERSON_POLICY, ROLES_POLICY]) {
    for (const mode of ['at once', 'batched', 'presence held'] as const) {
      const kind =
        policy === null ? 'allow-all' : policy === ROLES_POLICY ? 'roles sharing records' : 'per-person';
      const name = `${kind}${mode === 'at once' ? '' : `, ${mode}`}`;
      const ops = policy === ROLES_POLICY ? roleOp : op;
      it(`leaves every node the map a full load gives (${name})`, () => {
        resumes = 0;
        fc.assert(
          fc.property(fc.array(ops, { maxLength: 60, size: 'max' }), (list) => check(policy, mode, list)),
          { numRuns: 300 },
        );
        expect(resumes).toBeGreaterThan(0);
      });
    }
  }
});
