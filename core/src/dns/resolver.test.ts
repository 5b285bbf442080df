import { createSocket } from 'node:dgram';
import { type AddressInfo, connect, createServer } from 'node:net';
import { DNS_DEFAULTS, type DnsSettings, type NetMap, type NodeView } from '@weft/protocol';
import dnsPacket from 'dns-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { BIG_NAME, startTestUpstream, type TestUpstream } from '../bench/dns-upstream.js';
import { AnswerCache } from './cache.js';
import { TailnetNames } from './names.js';
import { describeAnswer, queryDns } from './query.js';
import { Resolver } from './resolver.js';
import { DnsServer } from './server.js';
import { exchangeUdp } from './upstream.js';

// The engine's resolver on loopback, answering through real UDP and TCP sockets: tailnet names from
// the netmap, forwarding to real (test) upstream servers, and bad packets that must not hurt it.

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const KEY = Buffer.alloc(32, 1).toString('base64');
function node(name: string, i: number): NodeView {
  return {
    id: `n${i}`,
    name,
    user: 'alice',
    tags: [],
    nodeKey: KEY,
    addresses: [`100.64.0.${i}/32`, `fd00:64::${i}/128`],
    allowedIPs: [],
    endpoints: [],
    online: true,
    lastSeen: null,
    keyExpiry: null,
    os: 'linux',
  };
}

function netmap(dns: Partial<DnsSettings> = {}, peers = [node('build-box', 2)]): NetMap {
  return {
    self: node('laptop', 1),
    peers,
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10', 'fd00:64::/48'],
    dns: { ...DNS_DEFAULTS, ...dns },
  };
}

async function upstream(records: Record<string, string>): Promise<TestUpstream> {
  const u = await startTestUpstream(records);
  cleanups.push(() => u.close());
  return u;
}

async function serve(map: NetMap | null, osResolvers: string[] = [], timeoutMs = 500, maxInFlight?: number) {
  const resolver = new Resolver({ osResolvers: () => osResolvers, timeoutMs });
  resolver.setNames(map && TailnetNames.of(map));
  const server = new DnsServer(resolver, maxInFlight);
  const at = await server.listen('127.0.0.1', 0);
  cleanups.push(() => server.close());
  const ask = async (
    name: string,
    type: dnsPacket.RecordType = 'A',
    opts: { tcp?: boolean; ednsSize?: number } = {},
  ) => {
    const r = await queryDns(at, name, type, opts);
    return { ...describeAnswer(r.answer), transport: r.transport, tc: r.answer.flag_tc };
  };
  return { resolver, server, at, ask };
}

/** Sends raw bytes over UDP; the answer's bytes, or null when none comes within `ms`. */
function rawUdp(port: number, bytes: Buffer, ms = 300): Promise<Buffer | null> {
  const socket = createSocket('udp4');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.close();
      resolve(null);
    }, ms);
    socket.on('message', (msg) => {
      clearTimeout(timer);
      socket.close();
      resolve(msg);
    });
    socket.send(bytes, port, '127.0.0.1');
  });
}

/** Sends one framed message over TCP; the answer's bytes. */
function rawTcp(port: number, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('connect', () => {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(bytes.length);
      socket.write(Buffer.concat([prefix, bytes]));
    });
    socket.on('data', (chunk) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
        socket.destroy();
        resolve(got.subarray(2));
      }
    });
  });
}

describe('the engine resolver', () => {
  it('answers tailnet names: FQDN, short name, any case, AAAA, PTR; NXDOMAIN for names it may not see', async () => {
    const { ask } = await serve(netmap());
    expect(await ask('build-box.weft.internal')).toMatchObject({
      rcode: 'NOERROR',
      records: ['A 100.64.0.2'],
    });
    expect(await ask('Build-Box.WEFT.internal.')).toMatchObject({ records: ['A 100.64.0.2'] });
    expect(await ask('build-box')).toMatchObject({ records: ['A 100.64.0.2'] });
    expect(await ask('laptop.weft.internal', 'AAAA')).toMatchObject({ records: ['AAAA fd00:64::1'] });
    expect(await ask('build-box.weft.internal', 'MX')).toMatchObject({ rcode: 'NOERROR', records: [] });
    expect(await ask('2.0.64.100.in-addr.arpa', 'PTR')).toMatchObject({
      records: ['PTR build-box.weft.internal'],
    });
    const v6ptr = `${[...'fd000064000000000000000000000002'].reverse().join('.')}.ip6.arpa`;
    expect(await ask(v6ptr, 'PTR')).toMatchObject({ records: ['PTR build-box.weft.internal'] });
    // Not in this node's netmap (hidden by policy, or no such node): no answer from anyone.
    expect(await ask('hidden.weft.internal')).toMatchObject({ rcode: 'NXDOMAIN', records: [] });
    expect(await ask('9.0.64.100.in-addr.arpa', 'PTR')).toMatchObject({ rcode: 'NXDOMAIN' });
  });

  it('answers extra records, follows a new netmap at once, and forwards tailnet names with MagicDNS off', async () => {
    const up = await upstream({ 'build-box.weft.internal': '198.51.100.99' });
    const { ask, resolver } = await serve(
      netmap({ extraRecords: [{ name: 'grafana.corp.example', type: 'A', value: '198.51.100.7' }] }),
      [`127.0.0.1:${up.port}`],
    );
    expect(await ask('grafana.corp.example')).toMatchObject({ records: ['A 198.51.100.7'] });
    resolver.setNames(TailnetNames.of(netmap({}, [node('renamed', 2)])));
    expect(await ask('renamed.weft.internal')).toMatchObject({ records: ['A 100.64.0.2'] });
    expect(await ask('build-box.weft.internal')).toMatchObject({ rcode: 'NXDOMAIN' });
    resolver.setNames(TailnetNames.of(netmap({ magicDns: false })));
    expect(await ask('build-box.weft.internal')).toMatchObject({ records: ['A 198.51.100.99'] });
    expect(up.queries).toEqual([{ name: 'build-box.weft.internal', transport: 'udp', from: '127.0.0.1' }]);
  });

  it('forwards split domains to their resolvers, the rest to the nameservers, else the OS resolvers; caches', async () => {
    const corp = await upstream({ 'wiki.corp.example': '198.51.100.10' });
    const general = await upstream({ 'www.example.com': '203.0.113.80' });
    const os = await upstream({ 'www.example.com': '203.0.113.81' });
    const settings = {
      nameservers: [`127.0.0.1:${general.port}`],
      splitDns: { 'corp.example': [`127.0.0.1:${corp.port}`] },
    };
    const { ask, resolver } = await serve(netmap(settings), [`127.0.0.1:${os.port}`]);
    expect(await ask('wiki.corp.example')).toMatchObject({ records: ['A 198.51.100.10'] });
    expect(await ask('www.example.com')).toMatchObject({ records: ['A 203.0.113.80'] });
    expect(await ask('www.example.com')).toMatchObject({ records: ['A 203.0.113.80'] });
    expect(await ask('nope.corp.example')).toMatchObject({ rcode: 'NXDOMAIN' });
    expect(corp.queries.map((q) => q.name)).toEqual(['wiki.corp.example', 'nope.corp.example']);
    expect(general.queries.map((q) => q.name)).toEqual(['www.example.com']); // the second was cached
    expect(resolver.stats.cacheHits).toBe(1);

    resolver.setNames(TailnetNames.of(netmap()));
    expect(await ask('www.example.com')).toMatchObject({ records: ['A 203.0.113.81'] });
    expect(os.queries).toHaveLength(1);
  });

  it('skips OS resolvers it cannot parse and forwards to the others', async () => {
    const os = await upstream({ 'www.example.com': '203.0.113.82' });
    const { ask } = await serve(netmap(), [
      '198.51.100.53#dns.example',
      'not-a-server',
      `127.0.0.1:${os.port}`,
    ]);
    expect(await ask('www.example.com')).toMatchObject({ records: ['A 203.0.113.82'] });
  });

  it('does not cache an upstream answer to another question', async () => {
    // An upstream that answers every query with a record for another name.
    const odd = createSocket('udp4');
    await new Promise<void>((resolve) => odd.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => void odd.close());
    let asked = 0;
    odd.on('message', (msg, rinfo) => {
      asked++;
      const q = dnsPacket.decode(msg);
      const other = { type: 'A' as const, name: 'other.example' };
      const answers = [{ ...other, ttl: 60, data: '203.0.113.90' }];
      odd.send(
        dnsPacket.encode({ type: 'response', id: q.id, questions: [other], answers }),
        rinfo.port,
        rinfo.address,
      );
    });
    const { ask } = await serve(netmap({ nameservers: [`127.0.0.1:${odd.address().port}`] }));
    await ask('www.example.com');
    await ask('www.example.com');
    expect(asked).toBe(2);
  });

  it('tries the next resolver when one does not answer, and says SERVFAIL when none does', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => void silent.close());
    const silentAt = `127.0.0.1:${silent.address().port}`;
    const good = await upstream({ 'www.example.com': '203.0.113.80' });
    const { ask, resolver } = await serve(
      netmap({ nameservers: [silentAt, `127.0.0.1:${good.port}`] }),
      [],
      200,
    );
    expect(await ask('www.example.com')).toMatchObject({ records: ['A 203.0.113.80'] });
    resolver.setNames(TailnetNames.of(netmap({ nameservers: [silentAt] })));
    expect(await ask('www.example.com')).toMatchObject({ rcode: 'SERVFAIL' });
    // No resolver at all (none set, none recorded from the OS): SERVFAIL, not a hang.
    resolver.setNames(TailnetNames.of(netmap()));
    expect(await ask('www.example.com')).toMatchObject({ rcode: 'SERVFAIL' });
  });

  it('falls back to TCP for a truncated upstream answer and truncates for a small UDP client', async () => {
    const up = await upstream({});
    const { ask } = await serve(netmap({ nameservers: [`127.0.0.1:${up.port}`] }));
    // The client asks over UDP without EDNS: the answer is too big, it gets TC and asks over TCP.
    const r = await ask(BIG_NAME, 'TXT');
    expect(r).toMatchObject({ transport: 'tcp', rcode: 'NOERROR' });
    expect(r.records).toHaveLength(60);
    expect(up.queries.map((q) => q.transport)).toEqual(['udp', 'tcp']);
    // With EDNS 4096 the limit is still 1232 bytes over UDP: truncated, then whole over TCP (cached).
    expect(await ask(BIG_NAME, 'TXT', { ednsSize: 4096 })).toMatchObject({ transport: 'tcp' });
    expect(up.queries).toHaveLength(2);
  });

  it('refuses malformed, truncated, pointer-loop and oversized packets and keeps answering', async () => {
    const { at, ask, resolver } = await serve(netmap());
    const good = dnsPacket.encode({
      type: 'query',
      id: 77,
      questions: [{ type: 'A', name: 'laptop.weft.internal' }],
    });
    const rcodeOf = (b: Buffer | null) => (b === null ? null : describeAnswer(dnsPacket.decode(b)).rcode);

    expect(await rawUdp(at.port, Buffer.from([1, 2, 3]))).toBeNull(); // no header: nothing to answer
    expect(rcodeOf(await rawUdp(at.port, good.subarray(0, good.length - 3)))).toBe('FORMERR');
    // A name whose compression pointer points at itself (offset 12): a loop.
    const loop = Buffer.concat([good.subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect(rcodeOf(await rawUdp(at.port, loop))).toBe('FORMERR');
    // Two questions, and a header claiming 65535 of them.
    const two = dnsPacket.encode({
      type: 'query',
      id: 5,
      questions: [
        { type: 'A', name: 'a.example' },
        { type: 'A', name: 'b.example' },
      ],
    });
    expect(rcodeOf(await rawUdp(at.port, two))).toBe('FORMERR');
    const many = Buffer.from(good);
    many.writeUInt16BE(0xffff, 4);
    expect(rcodeOf(await rawUdp(at.port, many))).toBe('FORMERR');
    // An answer sent to the resolver is never answered (no reflection loops).
    expect(await rawUdp(at.port, dnsPacket.encode({ type: 'response', id: 1, questions: [] }))).toBeNull();
    // Oversized: a 60 KB datagram of garbage after a valid header.
    const big = Buffer.concat([good.subarray(0, 12), Buffer.alloc(60_000, 0x3f)]);
    expect(rcodeOf(await rawUdp(at.port, big))).toBe('FORMERR');
    // Over TCP, the largest frame there is (65535 bytes) of the same garbage.
    const huge = Buffer.concat([good.subarray(0, 12), Buffer.alloc(65535 - 12, 0x3f)]);
    expect(rcodeOf(await rawTcp(at.port, huge))).toBe('FORMERR');
    expect(resolver.stats.malformed).toBeGreaterThanOrEqual(4);
    expect(await ask('laptop.weft.internal')).toMatchObject({ records: ['A 100.64.0.1'] });
    const answer = await exchangeUdp(good, at, 1000);
    expect(dnsPacket.decode(answer).answers).toHaveLength(1);
  });

  it('stays up under a bounded query flood: queries beyond the in-flight bound are dropped', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => void silent.close());
    const maxInFlight = 64;
    const { at, ask, server, resolver } = await serve(
      netmap({ nameservers: [`127.0.0.1:${silent.address().port}`] }),
      [],
      1000,
      maxInFlight,
    );
    const flood = createSocket('udp4');
    cleanups.push(() => void flood.close());
    // 400 queries in batches of 50, each batch read by the server before the next (so the kernel's
    // socket buffer, not the resolver, is never what drops them).
    let sent = 0;
    for (let batch = 0; batch < 8; batch++) {
      for (let i = 0; i < 50; i++, sent++) {
        const q = dnsPacket.encode({
          type: 'query',
          id: sent,
          questions: [{ type: 'A', name: `n${sent}.flood.example` }],
        });
        flood.send(q, at.port, '127.0.0.1');
      }
      await expect.poll(() => resolver.stats.queries + server.dropped, { timeout: 5000 }).toBe(sent);
    }
    // Every forwarded query waits on the silent upstream: at most maxInFlight are held, the rest dropped.
    expect(server.peakInFlight).toBe(maxInFlight);
    expect(server.dropped).toBe(sent - maxInFlight);
    // Once the held ones time out, tailnet names answer again.
    await expect
      .poll(async () => (await ask('laptop.weft.internal').catch(() => null))?.records, {
        timeout: 8000,
        interval: 200,
      })
      .toEqual(['A 100.64.0.1']);
  });

  it('bounds pipelined TCP queries per connection and in flight, and close() ends open connections', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => void silent.close());
    const { at, server, resolver } = await serve(
      netmap({ nameservers: [`127.0.0.1:${silent.address().port}`] }),
      [],
      300,
    );
    // 2,000 queries pipelined on one connection, every one waiting on a silent upstream.
    const frames = Array.from({ length: 2000 }, (_, i) => {
      const q = dnsPacket.encode({
        type: 'query',
        id: i,
        questions: [{ type: 'A', name: `n${i}.pipe.example` }],
      });
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(q.length);
      return Buffer.concat([prefix, q]);
    });
    const flood = connect({ host: '127.0.0.1', port: at.port });
    const closed = new Promise<void>((resolve) => flood.on('close', () => resolve()));
    flood.on('error', () => {});
    flood.write(Buffer.concat(frames));
    // The server closes the connection once more than its per-connection share waits ...
    await closed;
    expect(server.peakInFlight).toBeLessThanOrEqual(16);
    // ... and works on none of the waiting ones after the client is gone: at most the first reached
    // the resolver.
    await expect.poll(() => server.inFlight, { timeout: 5000 }).toBe(0);
    expect(resolver.stats.queries).toBeLessThanOrEqual(1);

    // An idle connected client does not hold close() (it used to wait for the client to leave).
    const idle = connect({ host: '127.0.0.1', port: at.port });
    idle.on('error', () => {});
    await new Promise<void>((resolve) => idle.on('connect', () => resolve()));
    const idleClosed = new Promise<void>((resolve) => idle.on('close', () => resolve()));
    await server.close();
    await idleClosed;
  });
});

describe('DnsServer.listen', () => {
  it('leaves no UDP socket open when TCP on the same port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const port = (taken.address() as AddressInfo).port;
    const server = new DnsServer(new Resolver({ osResolvers: () => [], timeoutMs: 500 }));
    await expect(server.listen('127.0.0.1', port)).rejects.toThrow(/EADDRINUSE/);
    // The UDP port it bound first is free again.
    const udp = createSocket('udp4');
    cleanups.push(() => void udp.close());
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, '127.0.0.1', resolve);
    });
  });
});

describe('AnswerCache', () => {
  it('keeps at most its capacity, the most recently used, until their TTL runs out', () => {
    let now = 0;
    const cache = new AnswerCache(3, () => now);
    const answer = (ttl: number) =>
      dnsPacket.encode({
        type: 'response',
        questions: [{ type: 'A', name: 'x.example' }],
        answers: [{ type: 'A', name: 'x.example', ttl, data: '198.51.100.1' }],
      });
    for (let i = 0; i < 10; i++) cache.put(`k${i}`, answer(30));
    expect(cache.size).toBe(3);
    expect(cache.get('k0')).toBeUndefined();
    expect(cache.get('k9')).toBeDefined();
    cache.put('zero', answer(0));
    expect(cache.get('zero')).toBeUndefined();
    now = 31_000;
    expect(cache.get('k9')).toBeUndefined();
  });
});
