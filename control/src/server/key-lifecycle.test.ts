import { generateKeyPair, LOGOUT_PATH, nodeKeyRotationProof, RegisterResponse } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, TestMachine, twoOnline } from '../testing/harness.js';

// Node keys: they expire (peers drop the node at its deadline, the node is logged out), rotate
// with a proof of the old key (same node, name and addresses; peers get the new key), and can be
// expired by an admin or by the node's own logout.

afterEach(cleanupAll);

describe('node key lifecycle', () => {
  it('an expired node leaves its peers’ maps within 2 s of its deadline and is logged out', async () => {
    const t = await startTestControl({ config: { nodeKeyExpiryMs: 3_000 } });
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    await a.join('a', key);
    const sa = await a.stream();
    await sa.until('a connected', (c) => c.netmap !== null);
    // b registers a little later, so its deadline is the one that comes second.
    await new Promise((r) => setTimeout(r, 500));
    const b = new TestMachine(t);
    const bNode = await b.join('b', key);
    const sb = await b.stream();
    await sa.until('a sees b', (c) => c.peerNames().includes('b'));
    // a's own deadline comes first: it is logged out, and b loses it.
    await sa.until('a logged out', (c) => c.closed !== null, 4_000);
    expect(sa.messages.at(-1)).toEqual({ type: 'logout', reason: 'key expired' });

    const deadline = Date.parse(bNode.keyExpiry as string);
    await sb.until('b logged out', (c) => c.closed !== null, 5_000);
    const late = Date.now() - deadline;
    console.log(`b's stream logged out ${late} ms after its key's deadline`);
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThan(2_000);
    expect(sb.messages.at(-1)).toEqual({ type: 'logout', reason: 'key expired' });

    // It cannot stream again; without a key or sign-in it cannot come back either.
    await expect(b.stream()).rejects.toMatchObject({ status: 401 });
    expect((await b.register({ hostname: 'b' })).status).toBe(403);
  });

  it('peers drop a node expired by the admin within 2 s; a tagged node’s expiry can be disabled', async () => {
    const t = await startTestControl({ pollIntervalMs: 200 });
    const { sa, sb } = await twoOnline(t);
    const started = Date.now();
    expect((await t.cli('nodes', 'expire', 'b')).code).toBe(0);
    await sa.until('b gone from a', (c) => !c.peerNames().includes('b'), 2_000);
    await sb.until('b logged out', (c) => c.closed !== null, 2_000);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(sb.messages.at(-1)).toEqual({ type: 'logout', reason: 'key expired' });

    expect((await t.cli('nodes', 'expiry', 'a', '--disable')).err).toMatch(
      /only be disabled on tagged nodes/,
    );
    const server = new TestMachine(t);
    await server.join('server', await t.key('--tags', 'tag:server'));
    expect((await t.cli('nodes', 'expiry', 'server', '--disable')).code).toBe(0);
    const listed = JSON.parse((await t.cli('nodes', 'list', '--json')).out) as {
      name: string;
      keyExpiry: string | null;
    }[];
    expect(listed.find((n) => n.name === 'server')?.keyExpiry).toBeNull();
    expect((await t.cli('nodes', 'expiry', 'server', '--enable')).code).toBe(0);
  });

  it('rotation with a proof of the old key keeps name, addresses and expiry; peers get the new key', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    await a.join('a', key);
    const b = new TestMachine(t);
    const oldNode = generateKeyPair();
    b.node = oldNode;
    const before = await b.join('b', key);
    const sa = await a.stream();
    await sa.until('a sees b', (c) => c.peerNames().includes('b'));

    const next = generateKeyPair();
    const proof = (newNodeKey: string, oldPrivate = oldNode.privateKey) =>
      nodeKeyRotationProof({
        oldNodePrivateKey: oldPrivate,
        controlPublicKey: t.controlPublicKey,
        machineKey: b.machine.publicKey,
        newNodeKey,
      });
    b.node = next;
    // A proof made with a key that is not the old node key, or for another new key, is refused.
    const forged = await b.register({
      hostname: 'b',
      oldNodeKey: oldNode.publicKey,
      oldNodeKeyProof: proof(next.publicKey, generateKeyPair().privateKey),
    });
    expect(forged.status).toBe(403);
    expect(forged.json.error.code).toBe('bad-node-key-proof');
    const elsewhere = await b.register({
      hostname: 'b',
      oldNodeKey: oldNode.publicKey,
      oldNodeKeyProof: proof(generateKeyPair().publicKey),
    });
    expect(elsewhere.status).toBe(403);
    const wrongOld = await b.register({
      hostname: 'b',
      oldNodeKey: generateKeyPair().publicKey,
      oldNodeKeyProof: proof(next.publicKey),
    });
    expect(wrongOld.json.error.code).toBe('old-node-key-mismatch');

    const rotated = await b.register({
      hostname: 'b',
      oldNodeKey: oldNode.publicKey,
      oldNodeKeyProof: proof(next.publicKey),
    });
    expect(rotated.status).toBe(200);
    const after = RegisterResponse.parse(rotated.json);
    if (after.status !== 'authorized') throw new Error('not authorized');
    expect(after.node).toMatchObject({
      id: before.id,
      name: 'b',
      addresses: before.addresses,
      keyExpiry: before.keyExpiry,
      nodeKey: next.publicKey,
    });
    await sa.until(
      'a has b’s new key',
      (c) => c.netmap?.peers.find((p) => p.name === 'b')?.nodeKey === next.publicKey,
    );
    const delta = sa.messages.at(-1);
    expect(delta).toMatchObject({ type: 'delta', peersUpserted: [{ name: 'b', nodeKey: next.publicKey }] });
    // The same request again (a lost reply) is fine; the old key no longer is.
    expect(
      (
        await b.register({
          hostname: 'b',
          oldNodeKey: oldNode.publicKey,
          oldNodeKeyProof: proof(next.publicKey),
        })
      ).status,
    ).toBe(200);
    b.node = oldNode;
    expect((await b.register({ hostname: 'b' })).status).toBe(403);
  });

  it('re-authorizing an expired node with a pre-auth key keeps its name and addresses', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const m = new TestMachine(t);
    const first = await m.join('box', key);
    expect((await t.cli('nodes', 'expire', 'box')).code).toBe(0);
    m.node = generateKeyPair();
    const again = await m.join('box', key);
    expect(again).toMatchObject({
      id: first.id,
      name: 'box',
      addresses: first.addresses,
      nodeKey: m.nodeKey,
    });
    expect(Date.parse(again.keyExpiry as string)).toBeGreaterThan(Date.now());
  });

  it('a node’s own logout expires its key on control', async () => {
    const t = await startTestControl();
    const { a, sb } = await twoOnline(t);
    expect(await a.post(LOGOUT_PATH)).toEqual({ status: 200, json: { loggedOut: true } });
    await sb.until('a gone from b', (c) => !c.peerNames().includes('a'), 2_000);
    expect(await a.post(LOGOUT_PATH)).toEqual({ status: 200, json: { loggedOut: false } });
    await expect(a.stream()).rejects.toMatchObject({ status: 401 });
  });
});
