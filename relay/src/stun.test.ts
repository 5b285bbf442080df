import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { bindingResponse, parseBindingRequest, StunServer } from './stun.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const TX = Buffer.from('b7e7a701bc34d686fa87dfae', 'hex');

/** A Binding request as Tailscale's net/stun builds it: SOFTWARE "tailnode", then FINGERPRINT. */
function tailscaleRequest(tx = TX): Buffer {
  const head = Buffer.alloc(20 + 12);
  head.writeUInt16BE(0x0001, 0);
  head.writeUInt16BE(12 + 8, 2);
  head.writeUInt32BE(0x2112a442, 4);
  tx.copy(head, 8);
  head.writeUInt16BE(0x8022, 20);
  head.writeUInt16BE(8, 22);
  head.write('tailnode', 24);
  const fp = Buffer.alloc(8);
  fp.writeUInt16BE(0x8028, 0);
  fp.writeUInt16BE(4, 2);
  fp.writeUInt32BE((crc32(head) ^ 0x5354554e) >>> 0, 4);
  return Buffer.concat([head, fp]);
}

describe('STUN messages', () => {
  it('builds XOR-MAPPED-ADDRESS exactly as the RFC 5769 sample responses (IPv4 and IPv6)', () => {
    const v4 = bindingResponse(TX, '192.0.2.1', 32853);
    expect(v4.subarray(20).toString('hex')).toBe('002000080001a147e112a643');
    expect(v4.subarray(0, 2).toString('hex')).toBe('0101');
    expect(v4.readUInt16BE(2)).toBe(12);
    const v6 = bindingResponse(TX, '2001:db8:1234:5678:11:2233:4455:6677', 32853);
    expect(v6.subarray(20).toString('hex')).toBe('002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9');
    // An IPv4-mapped source (a dual-stack socket) is told as IPv4.
    expect(bindingResponse(TX, '::ffff:192.0.2.1', 32853).equals(v4)).toBe(true);
  });

  it('accepts a well-formed Binding request (with or without attributes) and gives its transaction id', () => {
    const hex = (b: Uint8Array | null) => (b === null ? null : Buffer.from(b).toString('hex'));
    expect(hex(parseBindingRequest(tailscaleRequest()))).toBe(TX.toString('hex'));
    expect(hex(parseBindingRequest(tailscaleRequest().subarray(0, 20).fill(0, 2, 4)))).toBe(
      TX.toString('hex'),
    );
  });

  it('ignores anything else: wrong type, cookie, length, fingerprint, truncated or trailing attributes', () => {
    const good = tailscaleRequest();
    const mutate = (f: (b: Buffer) => void, from = good) => {
      const b = Buffer.from(from);
      f(b);
      return b;
    };
    const bad = [
      Buffer.alloc(0),
      good.subarray(0, 19),
      mutate((b) => b.writeUInt16BE(0x0101, 0)), // a response, not a request
      mutate((b) => b.writeUInt16BE(0x0011, 0)), // another method
      mutate((b) => b.writeUInt32BE(0x2112a443, 4)),
      mutate((b) => b.writeUInt16BE(24, 2)), // length does not match
      mutate((b) => {
        b[b.length - 1] = (b[b.length - 1] as number) ^ 1; // fingerprint wrong
      }),
      mutate((b) => b.writeUInt16BE(200, 22)), // attribute runs past the end
      Buffer.concat([good, Buffer.alloc(4)]), // fingerprint not last (and length off)
      Buffer.alloc(2000),
    ];
    for (const b of bad) expect(parseBindingRequest(b)).toBeNull();
  });
});

describe('STUN server', () => {
  async function server(opts: { perSource?: number; total?: number } = {}) {
    const clock = { t: 1_000_000 };
    const s = await StunServer.start({
      host: '127.0.0.1',
      port: 0,
      answersPerSecondPerSource: opts.perSource,
      answersPerSecond: opts.total,
      now: () => clock.t,
    });
    cleanups.push(() => s.close());
    return { s, clock };
  }

  async function udp(address = '127.0.0.1'): Promise<{ sock: Socket; got: Buffer[] }> {
    const sock = createSocket('udp4');
    cleanups.push(() => sock.close());
    await new Promise<void>((r) => sock.bind(0, address, r));
    const got: Buffer[] = [];
    sock.on('message', (m) => got.push(m));
    return { sock, got };
  }

  async function settle(s: StunServer, handled: number) {
    for (let i = 0; i < 500 && s.stats().answered + s.stats().ignored + s.stats().limited < handled; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  it("answers a request with the requester's own address and port, and ignores junk", async () => {
    const { s } = await server();
    const { sock, got } = await udp();
    sock.send(Buffer.from('junk that is not STUN at all'), s.port, '127.0.0.1');
    sock.send(tailscaleRequest(), s.port, '127.0.0.1');
    await once(sock, 'message');
    await settle(s, 2);
    expect(got).toHaveLength(1);
    expect(got[0]?.equals(bindingResponse(TX, '127.0.0.1', sock.address().port))).toBe(true);
    expect(s.stats()).toEqual({ answered: 1, ignored: 1, limited: 0 });
  });

  it('answers one source at most its burst while the clock stands still; another source still gets answers', async () => {
    const { s, clock } = await server({ perSource: 5 });
    const a = await udp('127.0.0.1');
    for (let i = 0; i < 30; i++) a.sock.send(tailscaleRequest(), s.port, '127.0.0.1');
    await settle(s, 30);
    expect(s.stats()).toMatchObject({ answered: 10, limited: 20 });
    const b = await udp('127.0.0.2');
    b.sock.send(tailscaleRequest(), s.port, '127.0.0.1');
    await settle(s, 31);
    expect(s.stats().answered).toBe(11);
    clock.t += 1_000;
    a.sock.send(tailscaleRequest(), s.port, '127.0.0.1');
    await settle(s, 32);
    expect(s.stats().answered).toBe(12);
  });

  it('caps answers across all sources', async () => {
    const { s } = await server({ perSource: 100, total: 2 });
    const sources = await Promise.all(['127.0.0.3', '127.0.0.4', '127.0.0.5'].map((a) => udp(a)));
    for (const { sock } of sources)
      for (let i = 0; i < 3; i++) sock.send(tailscaleRequest(), s.port, '127.0.0.1');
    await settle(s, 9);
    expect(s.stats()).toMatchObject({ answered: 4, limited: 5 });
  });
});
