import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { ALLOW_ALL, BatchQueue, MACHINE_AUTH_HEADER, STREAM_PATH, streamPath } from '@weft/protocol';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Store } from '../db/store.js';
import { NetmapHub } from '../netmap/hub.js';
import { NetmapSync } from '../netmap/sync.js';
import {
  cleanupAll,
  holdFirstCall,
  onCleanup,
  StreamClient,
  StreamRefused,
  startTestControl,
  TestMachine,
  twoOnline,
} from '../testing/harness.js';

afterEach(cleanupAll);

describe('the netmap stream', () => {
  it('reads the nodes of upgrades arriving while a read is on its way in one statement, not one each', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const machines = Array.from({ length: 12 }, () => new TestMachine(t));
    for (const [i, m] of machines.entries()) await m.join(`m${i}`, key);
    const read = holdFirstCall(Store.prototype, 'nodesByMachineKeys');
    const sizes = () => read.calls.map(([keys]) => keys.length);
    const adds = vi.spyOn(BatchQueue.prototype, 'add');
    onCleanup(() => adds.mockRestore());
    const [first, ...rest] = machines as [TestMachine, ...TestMachine[]];
    const streams = [first.stream()];
    await vi.waitFor(() => expect(sizes()).toHaveLength(1));
    // The first read is slow: the other upgrades arrive meanwhile and wait for it.
    streams.push(...rest.map((m) => m.stream()));
    await vi.waitFor(() => expect(adds.mock.calls.length).toBeGreaterThanOrEqual(machines.length), 10_000);
    read.release();
    for (const s of await Promise.all(streams)) await s.until('its map', (c) => c.netmap !== null);
    expect(sizes()).toEqual([1, machines.length - 1]);
  });

  it('sends the full map first, then deltas as peers join, come online and report endpoints', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    const aNode = await a.join('a', key);
    const sa = await a.stream();
    await sa.until('full map', (c) => c.messages.length >= 1);
    const full = sa.messages[0];
    if (full?.type !== 'full') throw new Error('first message is not a full map');
    expect(full.netmap.self).toMatchObject({ id: aNode.id, name: 'a', online: true });
    expect(full.netmap.peers).toEqual([]);
    expect(full.netmap.packetFilter).toEqual(ALLOW_ALL);
    expect(full.netmap.tailnetRanges[0]).toBe('100.64.0.0/10');
    expect(full.netmap.tailnetRanges[1]).toMatch(/^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/48$/);

    const b = new TestMachine(t);
    const bNode = await b.join('b', key);
    await sa.until('b to join', (c) => c.peerNames().includes('b'));
    const joined = sa.messages.find(
      (m) => m.type === 'delta' && m.peersUpserted?.some((p) => p.id === bNode.id),
    );
    expect(joined).toMatchObject({ type: 'delta', peersUpserted: [{ name: 'b', online: false }] });

    const sb = await b.stream();
    await sb.until('b full map with a', (c) => c.peerNames().includes('a'));
    await sa.until('b online', (c) => c.netmap?.peers.find((p) => p.name === 'b')?.online === true);

    sb.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641', '[fd00::12]:41641'] });
    await sa.until(
      'b endpoints',
      (c) => c.netmap?.peers.find((p) => p.name === 'b')?.endpoints.includes('198.18.0.12:41641') === true,
    );
    await sb.until('b own endpoints', (c) => c.netmap?.self.endpoints.length === 2);
    // Deltas carry only what changed: no message after the full one repeats the whole peer list.
    for (const m of sa.messages.slice(1)) {
      expect(m.type).toBe('delta');
      if (m.type === 'delta') expect(m.peersUpserted?.every((p) => p.id === bNode.id) ?? true).toBe(true);
    }

    sb.ws.close();
    await sa.until('b offline with last seen', (c) => {
      const peer = c.netmap?.peers.find((p) => p.name === 'b');
      return peer?.online === false && peer.lastSeen !== null;
    });
  });

  it('a node deleted with the CLI leaves its peers’ maps within 2 s and is logged out', async () => {
    const t = await startTestControl({ pollIntervalMs: 200 });
    const { b, sa, sb } = await twoOnline(t);

    // In-process CLI on its own database connection: the server learns of it only through the
    // database (PRAGMA data_version), exactly as with a separate `weft-control nodes delete` process.
    const r = await t.cli('nodes', 'delete', 'b');
    expect(r.code).toBe(0);
    const ms = await sa.until('b removed from a', (c) => !c.peerNames().includes('b'), 2000);
    expect(ms).toBeLessThan(2000);
    await sb.until('b logged out and closed', (c) => c.closed !== null, 2000);
    expect(sb.messages.at(-1)).toEqual({ type: 'logout', reason: 'this node was deleted from the tailnet' });

    await expect(b.stream()).rejects.toMatchObject({ status: 401 });
    expect((await t.cli('nodes', 'delete', 'b')).code).toBe(1);
  });

  it('refuses unsigned, tampered and unknown machines before the upgrade', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    await m.join('known', await t.key());

    const unsigned = await m.stream('').catch((e: unknown) => e);
    expect(unsigned).toBeInstanceOf(StreamRefused);
    expect((unsigned as StreamRefused).status).toBe(401);
    expect(JSON.parse((unsigned as StreamRefused).body).error.code).toBe('bad-signature');

    const wrongMethod = await m.stream(m.sign('POST', STREAM_PATH, '')).catch((e: unknown) => e);
    expect((wrongMethod as StreamRefused).status).toBe(401);

    const stranger = await new TestMachine(t).stream().catch((e: unknown) => e);
    expect((stranger as StreamRefused).status).toBe(401);
    expect(JSON.parse((stranger as StreamRefused).body).error.code).toBe('unknown-node');
  });

  it('refuses a malformed map token with a 400, and a query the signature does not cover with a 401', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    await m.join('known', await t.key());
    for (const query of [
      'mapToken=',
      'mapToken=a%20b',
      `mapToken=${'a'.repeat(65)}`,
      'mapToken=a&mapToken=b',
      'other=1',
    ]) {
      const path = `${STREAM_PATH}?${query}`;
      const refused = await StreamClient.open(t.control.url, m.sign('GET', path, ''), path).catch(
        (e: unknown) => e,
      );
      expect((refused as StreamRefused).status, query).toBe(400);
      expect(JSON.parse((refused as StreamRefused).body).error.code).toBe('malformed-request');
    }
    const unsigned = await StreamClient.open(
      t.control.url,
      m.sign('GET', STREAM_PATH, ''),
      streamPath('1.0.0'),
    ).catch((e: unknown) => e);
    expect((unsigned as StreamRefused).status).toBe(401);
    // A well-formed token that names no map it would send: a whole map.
    const s = await StreamClient.open(
      t.control.url,
      m.sign('GET', streamPath('9.9.9'), ''),
      streamPath('9.9.9'),
    );
    await s.until('a whole map', (c) => c.messages.length > 0);
    expect(s.messages[0]?.type).toBe('full');
  });

  it('a node that gave up before its turn gets no map, and its peers are told nothing of it', async () => {
    const t = await startTestControl({ config: { metricsListen: { host: '127.0.0.1', port: 0 } } });
    const key = await t.key('--reusable');
    const [a, b, c] = [new TestMachine(t), new TestMachine(t), new TestMachine(t)];
    for (const [m, name] of [
      [a, 'a'],
      [b, 'b'],
      [c, 'c'],
    ] as const)
      await m.join(name, key);
    const sb = await b.stream();
    await sb.until('b full map', (x) => x.netmap !== null);

    // a asks for its stream and leaves at once, as a node does whose patience ran out: its request
    // and the end of its connection reach control together.
    const url = new URL(t.control.url);
    const gone = connect(Number(url.port), url.hostname);
    await once(gone, 'connect');
    gone.write(
      [
        `GET ${STREAM_PATH} HTTP/1.1`,
        `Host: ${url.host}`,
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        `${MACHINE_AUTH_HEADER}: ${a.sign('GET', STREAM_PATH, '')}`,
        '',
        '',
      ].join('\r\n'),
    );
    gone.destroy();

    // c connects after a: streams are served in order, so b hears of c after anything about a.
    const sc = await c.stream();
    await sb.until('c online', (x) => x.netmap?.peers.find((p) => p.name === 'c')?.online === true);
    await sc.until('c full map', (x) => x.netmap !== null);
    const aNode = sb.netmap?.peers.find((p) => p.name === 'a');
    const aboutA = sb.messages.filter(
      (m) => m.type === 'delta' && m.peersUpserted?.some((p) => p.id === aNode?.id),
    );
    expect(aboutA).toEqual([]);
    const metrics = await (await fetch(t.control.metricsUrl as string)).text();
    expect(metrics).toMatch(/^weft_control_streams_abandoned_total 1$/m);
  });

  it('closes the stream on an invalid client message', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    await m.join('bad', await t.key());
    const s = await m.stream();
    await s.until('full', (c) => c.netmap !== null);
    s.send({ type: 'endpoints', endpoints: ['1.2.3.4'] });
    await s.until('closed', (c) => c.closed !== null);
    expect(s.closed?.code).toBe(1008);
    expect(s.closed?.reason).toMatch(/endpoints/);
  });

  it('tells the peers of a closed stream once: offline and its last seen in one change', async () => {
    const t = await startTestControl();
    const { sa, sb } = await twoOnline(t);
    // Each propagation walks every watcher of the node (every stream, under allow-all).
    const propagate = vi.spyOn(NetmapHub.prototype as unknown as { propagate: () => void }, 'propagate');
    const before = sa.messages.length;
    sb.ws.close();
    await sa.until('b offline with last seen', (c) => {
      const peer = c.netmap?.peers.find((p) => p.name === 'b');
      return peer?.online === false && peer.lastSeen !== null;
    });
    expect(propagate).toHaveBeenCalledTimes(1);
    expect(sa.messages.slice(before)).toEqual([
      {
        type: 'delta',
        mapToken: expect.any(String),
        peersUpserted: [expect.objectContaining({ name: 'b', online: false })],
      },
    ]);
  });

  it('drops a stream that stops answering pings', async () => {
    const t = await startTestControl({ pingIntervalMs: 100 });
    const { sa, sb } = await twoOnline(t);
    // Stop reading b's socket: its pongs stop, as with a machine that vanished from the network.
    (sb.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    await sa.until('b offline', (c) => c.netmap?.peers.find((p) => p.name === 'b')?.online === false, 2000);
  });

  it('a newer stream of the same node replaces the older one', async () => {
    const t = await startTestControl();
    const { b, sa, sb: first } = await twoOnline(t);
    const second = await b.stream();
    await first.until('first closed', (c) => c.closed !== null);
    expect(first.closed?.reason).toMatch(/replaced/);
    await second.until('second has a', (c) => c.peerNames().includes('a'));
    // b stays online throughout: the old stream closing does not mark it offline.
    await new Promise((r) => setTimeout(r, 200));
    expect(sa.netmap?.peers.find((p) => p.name === 'b')?.online).toBe(true);
  });

  it('an older stream that waited for its node to be read does not replace a newer one', async () => {
    // Two processes on one database: a node registered through the other is not in this one's hub
    // (its change feed is slowed), so each of its streams reads the node before connecting.
    const here = await startTestControl({ pollIntervalMs: 3_600_000 });
    const other = await startTestControl({ config: { db: here.db } });
    const m = new TestMachine(other);
    await m.join('late', await other.key());
    // The first stream's read is slow; the second's is not.
    const read = holdFirstCall(NetmapSync.prototype, 'refreshNodes');
    const older = await StreamClient.open(here.control.url, m.sign('GET', STREAM_PATH, ''));
    const newer = await StreamClient.open(here.control.url, m.sign('GET', STREAM_PATH, ''));
    await newer.until('newer full map', (c) => c.netmap !== null);
    read.release();
    await Promise.race([
      older.until('older closed', (c) => c.closed !== null),
      newer.until('newer closed', (c) => c.closed !== null),
    ]);
    expect(older.closed?.reason).toMatch(/replaced/);
    expect(older.messages).toEqual([]);
    expect(newer.closed).toBeNull();
  });

  it('deletes an ephemeral node once it has been offline for the grace period', async () => {
    const t = await startTestControl({ ephemeralGraceMs: 500 });
    const a = new TestMachine(t);
    await a.join('a', await t.key());
    const e = new TestMachine(t);
    await e.join('job', await t.key('--ephemeral'));
    const sa = await a.stream();
    const se = await e.stream();
    await sa.until('job online', (c) => c.netmap?.peers.find((p) => p.name === 'job')?.online === true);
    se.ws.close();
    await sa.until('job deleted', (c) => !c.peerNames().includes('job'), 4000);
    const list = JSON.parse((await t.cli('nodes', 'list', '--json')).out) as { name: string }[];
    expect(list.map((n) => n.name)).toEqual(['a']);
  });

  it('on shutdown closes streams and records last seen before closing the database', async () => {
    const errors: string[] = [];
    const t = await startTestControl({ log: { info() {}, warn() {}, error: (m) => errors.push(m) } });
    const m = new TestMachine(t);
    const node = await m.join('a', await t.key());
    const s = await m.stream();
    await s.until('full', (c) => c.netmap !== null);
    const { default: Database } = await import('better-sqlite3');
    const lastSeen = () => {
      const conn = new Database(t.db);
      const row = conn.prepare('select last_seen from nodes where id = ?').get(node.id) as {
        last_seen: string;
      };
      conn.close();
      return row.last_seen;
    };
    // Last seen is written when the stream ends (while online, peers are told "online").
    expect(lastSeen()).toBeNull();
    const before = new Date().toISOString();
    await t.control.close();
    await s.until('closed', (c) => c.closed !== null);
    expect(s.closed).toMatchObject({ code: 1000, reason: 'control is shutting down' });
    expect(errors).toEqual([]);
    expect(Date.parse(lastSeen())).toBeGreaterThanOrEqual(Date.parse(before));
  });

  it('on shutdown closes a stream whose upgrade is answered after the shutdown began', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    await m.join('late', await t.key());
    // The node's read, before the upgrade is answered, waits until control is stopping.
    const read = holdFirstCall(Store.prototype, 'nodesByMachineKeys');
    const opening = StreamClient.open(t.control.url, m.sign('GET', STREAM_PATH, ''));
    await vi.waitUntil(() => read.calls.length > 0);
    const closed = t.control.close();
    read.release();
    const s = await opening;
    await s.until('closed', (c) => c.closed !== null);
    await closed;
    // Closed by control as it stops, not cut when the shutdown's grace ran out (1006).
    expect(s.closed).toMatchObject({ code: 1000, reason: 'control is shutting down' });
    expect(s.messages).toEqual([]);
  });

  it('rejects a stream for an expired node key', async () => {
    const t = await startTestControl();
    const m = new TestMachine(t);
    const node = await m.join('old', await t.key());
    const { default: Database } = await import('better-sqlite3');
    const conn = new Database(t.db);
    conn.prepare('update nodes set key_expiry = ? where id = ?').run('2000-01-01T00:00:00.000Z', node.id);
    conn.close();
    const refused = await m.stream().catch((e: unknown) => e);
    expect((refused as StreamRefused).status).toBe(401);
    expect(JSON.parse((refused as StreamRefused).body).error.code).toBe('node-key-expired');
  });

  it('coalesces a burst of endpoint reports: the latest wins, with one fan-out', async () => {
    const t = await startTestControl({ limits: { streamCoalesceMs: 300 } });
    const { sa, sb } = await twoOnline(t);
    const before = sa.messages.length;
    for (let i = 1; i <= 20; i++) sb.send({ type: 'endpoints', endpoints: [`198.18.0.12:${41600 + i}`] });
    await sa.until(
      'b latest endpoint',
      (c) => c.netmap?.peers.find((p) => p.name === 'b')?.endpoints.includes('198.18.0.12:41620') === true,
    );
    const withEndpoints = sa.messages
      .slice(before)
      .filter((m) => m.type === 'delta' && m.peersUpserted?.some((p) => p.endpoints.length > 0));
    expect(withEndpoints).toHaveLength(1);
  });

  it('drops loopback, link-local, unspecified, multicast and tailnet endpoints', async () => {
    const t = await startTestControl({ limits: { streamCoalesceMs: 10 } });
    const { sa, sb } = await twoOnline(t);
    sb.send({
      type: 'endpoints',
      endpoints: [
        '127.0.0.1:41641',
        '0.0.0.0:41641',
        '169.254.1.1:41641',
        '224.0.0.1:41641',
        '100.64.0.9:41641',
        '[::1]:41641',
        '[fe80::1]:41641',
        '[ff02::1]:41641',
        '198.18.0.12:41641',
        '[fd00::12]:41641',
      ],
    });
    await sa.until(
      'b endpoints',
      (c) => (c.netmap?.peers.find((p) => p.name === 'b')?.endpoints.length ?? 0) > 0,
    );
    expect(sa.netmap?.peers.find((p) => p.name === 'b')?.endpoints).toEqual([
      '198.18.0.12:41641',
      '[fd00::12]:41641',
    ]);
  });

  it('closes a node that floods its stream with 1008 and says why', async () => {
    const t = await startTestControl({ limits: { streamMaxMessages: 5 } });
    const m = new TestMachine(t);
    await m.join('noisy', await t.key());
    const s = await m.stream();
    await s.until('full', (c) => c.netmap !== null);
    for (let i = 0; i < 8; i++) s.send({ type: 'endpoints', endpoints: ['198.18.0.12:41641'] });
    await s.until('closed', (c) => c.closed !== null);
    expect(s.closed).toEqual({ code: 1008, reason: 'too many messages: at most 5 per 10 s' });
  });

  it('closes with 1011 a stream whose node control fails to read, so the node retries', async () => {
    // Two processes on one database: a node registered through the other is not in this one's hub
    // (its change feed is slowed so it cannot learn of it first), so its stream reads the node.
    const here = await startTestControl({ pollIntervalMs: 3_600_000 });
    const other = await startTestControl({ config: { db: here.db } });
    const m = new TestMachine(other);
    const node = await m.join('late', await other.key());
    const read = vi
      .spyOn(NetmapSync.prototype, 'refreshNodes')
      .mockRejectedValueOnce(new Error('SQLITE_BUSY'));
    onCleanup(() => read.mockRestore());
    const s = await StreamClient.open(here.control.url, m.sign('GET', STREAM_PATH, ''));
    await s.until('closed', (c) => c.closed !== null);
    expect(read).toHaveBeenCalledWith([node.id]);
    expect(s.closed?.code).toBe(1011);
    expect(s.messages).toEqual([]);
  });
});
