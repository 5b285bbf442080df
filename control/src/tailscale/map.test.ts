import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decompress } from 'fzstd';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, type TestControl, TestMachine, tempDir } from '../testing/harness.js';
import { TsTestClient } from '../testing/tailscale-client.js';

afterEach(cleanupAll);

const RELAY_KEY = Buffer.alloc(32, 9).toString('base64');

async function joined(t: TestControl, name: string, key: string): Promise<TsTestClient> {
  const c = new TsTestClient(t.control.url);
  const r = await c.register({ Auth: { AuthKey: key } }, name);
  if (r.MachineAuthorized !== true) throw new Error(`not authorized: ${JSON.stringify(r)}`);
  return c;
}

function policyFile(text: string): string {
  const file = join(tempDir(), 'policy.hujson');
  writeFileSync(file, text);
  return file;
}

describe('/machine/map for Tailscale clients', () => {
  it('sends a full map: self, peers with disco key, home DERP and endpoints, DERP map, filter, users', async () => {
    const t = await startTestControl({
      config: {
        relays: [
          {
            regionId: 7,
            name: 'lab',
            url: 'wss://198.51.100.7:8443/relay',
            publicKey: RELAY_KEY,
            stunPort: 3478,
          },
        ],
      },
    });
    const key = await t.key('--reusable');
    const a = await joined(t, 'ts-a', key);
    const b = await joined(t, 'ts-b', key);
    const bm = await b.map({ Endpoints: ['198.51.100.20:41641'] });
    await bm.until('b map', (m) => m.self !== null);

    const am = await a.map({});
    await am.until('a sees b', (m) => m.peerNamed('ts-b') !== undefined);
    const first = am.messages[0] as Record<string, unknown>;
    expect(first.Node).toMatchObject({
      Name: 'ts-a.weft.internal.',
      Key: a.nodeKey,
      Addresses: ['100.64.0.1/32', expect.stringMatching(/^fd.*:6440:1\/128$/)],
      MachineAuthorized: true,
    });
    expect(am.peerNamed('ts-b')).toMatchObject({
      Key: b.nodeKey,
      DiscoKey: b.discoKey,
      HomeDERP: 1,
      Endpoints: ['198.51.100.20:41641'],
      Online: true,
      Hostinfo: { OS: 'linux', IPNVersion: '1.102.5-test' },
    });
    expect(am.peerNamed('ts-b')?.IsWireGuardOnly).toBeUndefined();
    expect(first.DERPMap).toEqual({
      OmitDefaultRegions: true,
      Regions: {
        '7': {
          RegionID: 7,
          RegionCode: 'lab',
          RegionName: 'lab',
          Nodes: [
            {
              Name: '7a',
              RegionID: 7,
              HostName: '198.51.100.7',
              IPv4: '198.51.100.7',
              DERPPort: 8443,
              STUNPort: 3478,
            },
          ],
        },
      },
    });
    expect(first.PacketFilter).toEqual([
      { SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] },
    ]);
    expect(first.UserProfiles).toEqual([
      { ID: expect.any(Number), LoginName: 'alice', DisplayName: 'alice' },
    ]);
    a.close();
    b.close();
  });

  it('follows with patches for endpoints and online, whole nodes for new peers, and removals', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = await joined(t, 'ts-a', key);
    const am = await a.map({});
    await am.until('a map', (m) => m.self !== null);

    const b = await joined(t, 'ts-b', key);
    await am.until('b appears', (m) => m.peerNamed('ts-b') !== undefined);
    expect(am.messages.some((m) => (m.PeersChanged as unknown[] | undefined)?.length === 1)).toBe(true);
    const bId = am.peerNamed('ts-b')?.ID as number;
    expect(bId).toBe(0x64400002);

    const bm = await b.map({ Endpoints: ['198.51.100.20:41641'] });
    await am.until('b online at its endpoint', (m) => {
      const p = m.peerNamed('ts-b');
      return p?.Online === true && JSON.stringify(p.Endpoints) === '["198.51.100.20:41641"]';
    });
    const patches = am.messages.flatMap(
      (m) => (m.PeersChangedPatch as Record<string, unknown>[] | undefined) ?? [],
    );
    // Its map request's report changed more than a patch carries (a whole node); coming online in
    // the same event-loop turn is merged into that node, otherwise it is a patch of its own.
    const wholeOnline = am.messages.some((m) =>
      (m.PeersChanged as Record<string, unknown>[] | undefined)?.some(
        (p) => p.ID === bId && p.Online === true,
      ),
    );
    expect(wholeOnline || patches.some((p) => p.NodeID === bId && p.Online === true)).toBe(true);

    // A "lite" update (not streamed, OmitPeers) reports new endpoints: a patch, nothing else.
    const lite = await (await b.connection()).post('/machine/map', {
      Version: 130,
      NodeKey: b.nodeKey,
      OmitPeers: true,
      Stream: false,
      Endpoints: ['198.51.100.21:41641'],
    });
    expect(lite.status).toBe(200);
    await am.until(
      'the new endpoint',
      (m) => JSON.stringify(m.peerNamed('ts-b')?.Endpoints) === '["198.51.100.21:41641"]',
    );

    bm.stream.close();
    await am.until('b offline', (m) => m.peerNamed('ts-b')?.Online === false);

    expect((await t.cli('nodes', 'delete', 'ts-b')).code).toBe(0);
    await am.until('b removed', (m) => m.peers.size === 0);
    expect(am.messages.some((m) => JSON.stringify(m.PeersRemoved) === JSON.stringify([bId]))).toBe(true);
    a.close();
    b.close();
  });

  it('keeps an idle stream alive with KeepAlive messages', async () => {
    const t = await startTestControl({ pingIntervalMs: 50 });
    const a = await joined(t, 'ts-a', await t.key());
    const am = await a.map({ Compress: 'zstd' }, decompress);
    await am.until('two keep-alives', (m) => m.keepAlives >= 2);
    expect(am.messages).toHaveLength(1);
    a.close();
  });

  it('answers a one-shot request (Stream false) with one whole map, and ReadOnly stores nothing', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = await joined(t, 'ts-a', key);
    await joined(t, 'ts-b', key);
    const conn = await a.connection();
    const r = await conn.post('/machine/map', {
      Version: 130,
      NodeKey: a.nodeKey,
      ReadOnly: true,
      Endpoints: ['198.51.100.9:1'],
    });
    expect(r.status).toBe(200);
    const length = r.body.readUInt32LE(0);
    expect(length).toBe(r.body.length - 4);
    const map = JSON.parse(r.body.subarray(4).toString()) as { Node: unknown; Peers: { Name: string }[] };
    expect(map.Peers.map((p) => p.Name)).toEqual(['ts-b.weft.internal.']);
    const nodes = JSON.parse((await t.cli('nodes', 'list', '--json')).out) as {
      name: string;
      endpoints: string[];
    }[];
    expect(nodes.find((n) => n.name === 'ts-a')?.endpoints).toEqual([]);
    a.close();
  });

  it('stores no endpoint that points peers at their own machine, network or the tailnet', async () => {
    const t = await startTestControl();
    const a = await joined(t, 'ts-a', await t.key());
    const conn = await a.connection();
    const r = await conn.post('/machine/map', {
      Version: 130,
      NodeKey: a.nodeKey,
      OmitPeers: true,
      Endpoints: [
        '127.0.0.1:41641',
        '169.254.1.1:41641',
        '255.255.255.255:41641',
        '[::ffff:198.51.100.1]:41641',
        '100.64.0.9:41641',
        '198.51.100.9:41641',
      ],
    });
    expect(r.status).toBe(200);
    const nodes = JSON.parse((await t.cli('nodes', 'list', '--json')).out) as {
      name: string;
      endpoints: string[];
    }[];
    expect(nodes.find((n) => n.name === 'ts-a')?.endpoints).toEqual(['198.51.100.9:41641']);
    a.close();
  });

  it('sends the policy’s filter and peers, and a new policy as a delta', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = await joined(t, 'ts-a', key);
    const b = await joined(t, 'ts-b', key);
    const am = await a.map({});
    await am.until('a sees b', (m) => m.peerNamed('ts-b') !== undefined);
    const policy = policyFile(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}`);
    const set = await t.cli('policy', 'set', policy);
    expect(set.code, set.err).toBe(0);
    await am.until('the new filter', (m) => JSON.stringify(m.packetFilter).includes('"First":22'));
    // Only port 22 is let in now: the same compiled rules a Weft node gets.
    expect(JSON.stringify(am.packetFilter)).not.toMatch(/"Last":65535/);
    expect(am.peerNamed('ts-b')).toBeDefined();

    // A policy under which a and b may not talk: each leaves the other's map.
    const apart = policyFile(
      `{"tagOwners": {"tag:web": []}, "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:443"]}]}`,
    );
    expect((await t.cli('policy', 'set', apart)).code).toBe(0);
    await am.until('b hidden', (m) => m.peers.size === 0);
    expect(am.packetFilter).toEqual([]);
    a.close();
    b.close();
  });

  it('takes RoutableIPs as advertised routes, used by peers only once approved', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = await joined(t, 'ts-a', key);
    const router = await joined(t, 'ts-router', key);
    const am = await a.map({});
    await am.until('a sees the router', (m) => m.peerNamed('ts-router') !== undefined);
    const rm = await router.map({
      Hostinfo: { Hostname: 'ts-router', OS: 'linux', RoutableIPs: ['198.51.100.0/24', '0.0.0.0/0', '::/0'] },
    });
    await rm.until('router map', (m) => m.self !== null);
    const listed = await t.cli('routes', 'list');
    expect(listed.out).toMatch(/198\.51\.100\.0\/24/);
    expect(am.peerNamed('ts-router')?.AllowedIPs).toHaveLength(2);

    expect((await t.cli('routes', 'approve', 'ts-router', '198.51.100.0/24', 'exit')).code).toBe(0);
    await am.until(
      'routes in use',
      (m) => (m.peerNamed('ts-router')?.AllowedIPs as string[] | undefined)?.length === 5,
    );
    expect(am.peerNamed('ts-router')).toMatchObject({
      AllowedIPs: expect.arrayContaining(['198.51.100.0/24', '0.0.0.0/0', '::/0']),
      PrimaryRoutes: ['198.51.100.0/24'],
    });
    a.close();
    router.close();
  });

  it('shows Weft nodes as WireGuard-only peers and Tailscale clients to Weft nodes with their kind', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const weft = new TestMachine(t);
    await weft.join('weft-node', key);
    const ws = await weft.stream();
    ws.send({ type: 'endpoints', endpoints: ['198.51.100.30:51820'] });
    const ts = await joined(t, 'ts-a', key);
    const tm = await ts.map({ Endpoints: ['198.51.100.40:41641'] });
    await tm.until(
      'the weft node',
      (m) => JSON.stringify(m.peerNamed('weft-node')?.Endpoints) === '["198.51.100.30:51820"]',
    );
    const peer = tm.peerNamed('weft-node');
    expect(peer).toMatchObject({ IsWireGuardOnly: true, Key: expect.stringMatching(/^nodekey:/) });
    expect(peer?.DiscoKey).toBeUndefined();
    expect(peer?.HomeDERP).toBeUndefined();

    await ws.until('the tailscale peer', (c) => c.netmap?.peers.some((p) => p.endpoints.length > 0) === true);
    expect(ws.netmap?.peers[0]).toMatchObject({
      name: 'ts-a',
      kind: 'tailscale',
      clientVersion: '1.102.5-test',
      nodeKey: ts.nodeKeyBase64,
      endpoints: ['198.51.100.40:41641'],
    });
    const list = await t.cli('nodes', 'list');
    expect(list.out).toMatch(/ts-a .* tailscale +1\.102\.5-test/);
    expect(list.out).toMatch(/weft-node .* weft +-/);
    ts.close();
  });

  it('logs the client out when its key is expired, and refuses its next map request', async () => {
    const t = await startTestControl();
    const a = await joined(t, 'ts-a', await t.key());
    const am = await a.map({});
    await am.until('a map', (m) => m.self !== null);
    expect((await t.cli('nodes', 'expire', 'ts-a')).code).toBe(0);
    await am.until('logged out', (m) => m.self?.Expired === true && m.ended);
    expect(Date.parse(am.self?.KeyExpiry as string)).toBeLessThan(Date.now());
    const again = await (await a.connection()).post('/machine/map', {
      Version: 130,
      NodeKey: a.nodeKey,
      Stream: true,
    });
    expect(again.status).toBe(403);
    expect(again.body.toString()).toMatch(/expired/);
    a.close();
  });
});
