import { connect } from 'node:net';
import { generateKeyPair, nodeKeyPossessionProof, REGISTER_PATH, RegisterResponse } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, type TestControl, TestMachine } from '../testing/harness.js';

afterEach(cleanupAll);

async function nodeNames(t: TestControl): Promise<string[]> {
  const r = await t.cli('nodes', 'list', '--json');
  return (JSON.parse(r.out) as { name: string }[]).map((n) => n.name).sort();
}

describe('POST /machine/register', () => {
  it('authorizes a machine with a good pre-auth key and returns its node', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    const r = await m.register({ hostname: 'laptop', authKey: await t.key() });
    expect(r.status).toBe(200);
    const body = RegisterResponse.parse(r.json);
    if (body.status !== 'authorized') throw new Error('not authorized');
    expect(body.node).toMatchObject({
      name: 'laptop',
      user: 'alice',
      tags: [],
      nodeKey: m.nodeKey,
      os: 'linux',
    });
    expect(body.node.addresses[0]).toBe('100.64.0.1/32');
    expect(body.node.addresses[1]).toMatch(/^fd[0-9a-f]{2}:[0-9a-f:]+:6440:1\/128$/);
    expect(body.node.allowedIPs).toEqual(body.node.addresses);
    expect(await nodeNames(t)).toEqual(['laptop']);
  });

  it('refuses unknown, expired and used single-use keys with a clear error, creating nothing', async () => {
    const t = await startTestControl();
    const unknown = await new TestMachine(t).register({ hostname: 'a', authKey: 'weftkey-nonsense' });
    expect(unknown.status).toBe(401);
    expect(unknown.json).toEqual({ error: { code: 'invalid-auth-key', message: 'unknown pre-auth key' } });

    const expiring = await t.key('--expiration', '1s');
    await new Promise((r) => setTimeout(r, 1100));
    const expired = await new TestMachine(t).register({ hostname: 'b', authKey: expiring });
    expect(expired.status).toBe(403);
    expect(expired.json.error.code).toBe('auth-key-expired');
    expect(expired.json.error.message).toMatch(/expired/);

    const once = await t.key();
    await new TestMachine(t).join('c', once);
    const reused = await new TestMachine(t).register({ hostname: 'd', authKey: once });
    expect(reused.status).toBe(403);
    expect(reused.json.error).toEqual({
      code: 'auth-key-used',
      message: 'this single-use pre-auth key has already been used',
    });
    expect(await nodeNames(t)).toEqual(['c']);
  });

  it('accepts a reusable key for several machines', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    await new TestMachine(t).join('web', key);
    await new TestMachine(t).join('db', key);
    expect(await nodeNames(t)).toEqual(['db', 'web']);
  });

  it('makes tagged nodes from a tagged key, owned by the tags', async () => {
    const t = await startTestControl();
    const r = await new TestMachine(t).register({
      hostname: 'ci',
      authKey: await t.key('--tags', 'tag:ci,tag:server'),
    });
    expect(r.json.node).toMatchObject({ user: null, tags: ['tag:ci', 'tag:server'] });
  });

  it('refuses unsigned, tampered, replayed-elsewhere and forged requests', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const m = new TestMachine(t);
    const body = JSON.stringify({ nodeKey: m.nodeKey, hostname: 'x', os: 'linux', authKey: key });

    const unsigned = await m.register({}, { body, signature: null });
    expect(unsigned.status).toBe(401);
    expect(unsigned.json.error.code).toBe('bad-signature');

    const tampered = await m.register(
      {},
      { body: body.replace('"x"', '"y"'), signature: m.sign('POST', REGISTER_PATH, body) },
    );
    expect(tampered.status).toBe(401);

    const otherPath = await m.register({}, { body, signature: m.sign('POST', '/machine/other', body) });
    expect(otherPath.status).toBe(401);

    // A machine claiming another machine's public key cannot produce its MAC.
    const victim = generateKeyPair().publicKey;
    const forged = m.sign('POST', REGISTER_PATH, body).replace(m.machine.publicKey, victim);
    expect((await m.register({}, { body, signature: forged })).status).toBe(401);

    expect(await nodeNames(t)).toEqual([]);
  });

  it('refuses a replayed signed request, even one that was accepted', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const m = new TestMachine(t);
    const proof = nodeKeyPossessionProof({
      nodePrivateKey: m.node.privateKey,
      controlPublicKey: t.controlPublicKey,
      machineKey: m.machine.publicKey,
    });
    const body = JSON.stringify({
      nodeKey: m.nodeKey,
      hostname: 'x',
      os: 'linux',
      authKey: key,
      nodeKeyProof: proof,
    });
    const signature = m.sign('POST', REGISTER_PATH, body);
    expect((await m.register({}, { body, signature })).status).toBe(200);
    const replayed = await m.register({}, { body, signature });
    expect(replayed.status).toBe(401);
    expect(replayed.json.error).toEqual({
      code: 'replayed-signature',
      message: 'this signed request was sent before: sign each request anew',
    });
    // A fresh signature over the same body is fine.
    expect((await m.register({}, { body })).status).toBe(200);
  });

  it('refuses a registration without a valid proof of the node key, storing nothing', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const m = new TestMachine(t);
    const missing = await m.register({ hostname: 'x', authKey: key, nodeKeyProof: undefined });
    expect(missing.status).toBe(400);
    expect(missing.json.error.message).toMatch(/nodeKeyProof/);
    // Someone else's WireGuard public key, with a proof made by a key that is not its own.
    const victim = generateKeyPair();
    const forged = nodeKeyPossessionProof({
      nodePrivateKey: generateKeyPair().privateKey,
      controlPublicKey: t.controlPublicKey,
      machineKey: m.machine.publicKey,
    });
    const r = await m.register({
      hostname: 'x',
      authKey: key,
      nodeKey: victim.publicKey,
      nodeKeyProof: forged,
    });
    expect(r.status).toBe(403);
    expect(r.json.error.code).toBe('bad-node-key-proof');
    // A true proof made for another machine does not count for this one.
    const otherMachine = nodeKeyPossessionProof({
      nodePrivateKey: m.node.privateKey,
      controlPublicKey: t.controlPublicKey,
      machineKey: generateKeyPair().publicKey,
    });
    expect((await m.register({ hostname: 'x', authKey: key, nodeKeyProof: otherMachine })).status).toBe(403);
    expect(await nodeNames(t)).toEqual([]);
    const single = await t.key();
    expect((await m.register({ hostname: 'x', authKey: single, nodeKeyProof: forged })).status).toBe(403);
    // The single-use key was not spent by the refused attempt.
    expect((await m.register({ hostname: 'x', authKey: single })).status).toBe(200);
  });

  it('answers malformed requests with 400 and says what is wrong', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    const notJson = await m.register({}, { body: '{nope' });
    expect(notJson.status).toBe(400);
    expect(notJson.json.error.code).toBe('malformed-request');

    const badHost = await m.register({ hostname: 'Bad Host!', authKey: await t.key() });
    expect(badHost.status).toBe(400);
    expect(badHost.json.error.message).toMatch(/hostname/);

    const extra = await m.register({ hostname: 'ok', authKey: 'weftkey-x', admin: true });
    expect(extra.status).toBe(400);
    expect(extra.json.error.message).toMatch(/admin/);

    const badKey = await m.register({ hostname: 'ok', nodeKey: 'short' });
    expect(badKey.status).toBe(400);
    expect(badKey.json.error.message).toMatch(/nodeKey/);
  });

  it('rate-limits registrations per address with 429 and a clear message', async () => {
    const t = await startTestControl({ limits: { registerPerWindow: 2 } });
    const key = await t.key('--reusable');
    expect((await new TestMachine(t).register({ hostname: 'a', authKey: key })).status).toBe(200);
    expect((await new TestMachine(t).register({ hostname: 'b', authKey: key })).status).toBe(200);
    const limited = await new TestMachine(t).register({ hostname: 'c', authKey: key });
    expect(limited.status).toBe(429);
    expect(limited.json.error).toEqual({
      code: 'rate-limited',
      message: expect.stringMatching(
        /^too many requests from this address: at most 2 per 1 minute; try again in \d+ s$/,
      ),
    });
    expect(JSON.parse((await t.cli('nodes', 'list', '--json')).out)).toHaveLength(2);
  });

  it('closes a connection that sends nothing once the connection time-out passes', async () => {
    const t = await startTestControl({ limits: { connectionTimeoutMs: 300 } });
    const { port } = new URL(t.control.url);
    const socket = connect(Number(port), '127.0.0.1');
    socket.write('POST /machine/register HTTP/1.1\r\nHost: x\r\n'); // … and never the rest
    const closed = await new Promise<boolean>((resolve) => {
      socket.on('close', () => resolve(true));
      // Bounded: far beyond the time-out, in case it is not enforced.
      setTimeout(() => resolve(false), 10_000).unref();
    });
    socket.destroy();
    expect(closed).toBe(true);
  });

  it('refuses bodies over the size limit', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    const big = JSON.stringify({ hostname: 'x', pad: 'a'.repeat(70 * 1024) });
    const r = await m.register({}, { body: big });
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('too-large');
  });

  it('without a key: refuses a new machine clearly, re-admits a registered one with its node key only', async () => {
    const t = await startTestControl();
    const stranger = await new TestMachine(t).register({ hostname: 'x' });
    expect(stranger.status).toBe(403);
    expect(stranger.json.error.code).toBe('interactive-login-unavailable');
    expect(stranger.json.error.message).toMatch(/pre-auth key/);

    const m = new TestMachine(t);
    const first = await m.join('box', await t.key());
    const again = await m.register({ hostname: 'box' });
    expect(again.status).toBe(200);
    expect(again.json.node).toMatchObject({ id: first.id, name: 'box', addresses: first.addresses });

    // A new node key needs the old key's proof (rotation) or a new authorization.
    m.node = generateKeyPair();
    const unproven = await m.register({ hostname: 'box' });
    expect(unproven.status).toBe(403);
    expect(unproven.json.error.message).toMatch(/another node key/);
  });

  it('dedups names: laptop, laptop-1, laptop-2', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const names = [];
    for (let i = 0; i < 3; i++) names.push((await new TestMachine(t).join('laptop', key)).name);
    expect(names).toEqual(['laptop', 'laptop-1', 'laptop-2']);
  });

  it('keeps name and addresses when the same machine registers again, and allocates unique ones', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    const b = new TestMachine(t);
    const a1 = await a.join('alpha', key);
    const b1 = await b.join('beta', key);
    expect(new Set([...a1.addresses, ...b1.addresses]).size).toBe(4);
    expect(b1.addresses[0]).toBe('100.64.0.2/32');

    // New node key and new hostname, same machine: same node, same name and addresses.
    a.node = generateKeyPair();
    const a2 = await a.join('renamed', key);
    expect(a2).toMatchObject({ id: a1.id, name: 'alpha', addresses: a1.addresses });
    expect(await nodeNames(t)).toEqual(['alpha', 'beta']);

    // A deleted node's address is free again for the next new machine: lowest first.
    expect((await t.cli('nodes', 'delete', 'alpha')).code).toBe(0);
    const c = await new TestMachine(t).join('gamma', key);
    expect(c.addresses[0]).toBe('100.64.0.1/32');
  });

  it('refuses a node key that another node already uses', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    await a.join('a', key);
    const copycat = new TestMachine(t);
    copycat.node = a.node;
    const r = await copycat.register({ hostname: 'b', authKey: key });
    expect(r.status).toBe(409);
    expect(r.json.error.code).toBe('node-key-in-use');
    expect(await nodeNames(t)).toEqual(['a']);
  });

  it('lets the same machine re-use its single-use key, but no other machine', async () => {
    const t = await startTestControl();
    const once = await t.key();
    const m = new TestMachine(t);
    const first = await m.join('solo', once);
    const retry = await m.register({ hostname: 'solo', authKey: once });
    expect(retry.status).toBe(200);
    expect(retry.json.node.id).toBe(first.id);
    const other = await new TestMachine(t).register({ hostname: 'other', authKey: once });
    expect(other.status).toBe(403);
  });

  it('answers GET /machine/key and /healthz, and unknown paths with an ErrorBody', async () => {
    const t = await startTestControl();
    expect(t.controlPublicKey).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect((await fetch(`${t.control.url}/healthz`)).status).toBe(200);
    const missing = await fetch(`${t.control.url}/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('not-found');
  });

  it('keeps control’s key and the tailnet’s IPv6 prefix across restarts', async () => {
    const t = await startTestControl();
    const node = await new TestMachine(t).join('keep', await t.key());
    await t.control.close();
    const again = await startTestControl({
      config: { listen: { host: '127.0.0.1', port: 0 }, publicUrl: null, db: t.db },
    });
    expect(again.controlPublicKey).toBe(t.controlPublicKey);
    const m = new TestMachine(again);
    const second = await m.join('next', await again.key());
    const prefix = (a: string) => a.split(':').slice(0, 3).join(':');
    expect(prefix(second.addresses[1] as string)).toBe(prefix(node.addresses[1] as string));
  });
});
