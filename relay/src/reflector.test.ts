import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { generateKeyPair } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Membership } from './membership.js';
import { ObservationStore } from './observations.js';
import { canonicalEndpoint, Reflector } from './reflector.js';
import { sourceKey } from './source-key.js';
import { Initiator } from './testing/wireguard-initiator.js';

// The reflector over real UDP with an initiator written from the WireGuard whitepaper
// (testing/wireguard-initiator.ts), so the tests can forge, replay and corrupt messages.
// reflector.real.test.ts checks it against wireguard-go itself.

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function setup(
  opts: {
    handshakesPerSecond?: number;
    handshakesPerSecondPerSource?: number;
    maxNodes?: number;
    membership?: Membership;
  } = {},
) {
  const keys = generateKeyPair();
  const observations = new ObservationStore();
  const reflector = await Reflector.start({
    privateKey: keys.privateKey,
    host: '127.0.0.1',
    port: 0,
    observations,
    ...opts,
  });
  open.push(reflector);
  return { keys, observations, reflector };
}

async function udp(address = '127.0.0.1'): Promise<Socket & { replies: Buffer[] }> {
  const s = Object.assign(createSocket('udp4'), { replies: [] as Buffer[] });
  s.on('message', (m) => s.replies.push(m));
  s.bind(0, address);
  await once(s, 'listening');
  open.push(s);
  return s;
}

const settle = () => new Promise((r) => setTimeout(r, 100));

/** Waits (bounded: the machine may be busy) until `done()`. */
async function until(done: () => boolean): Promise<void> {
  for (let waited = 0; !done(); waited += 5) {
    if (waited > 10_000) throw new Error('timed out waiting for the reflector');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Sends `msg`, waits until the reflector has handled it and, if it answered, for the answer. */
async function exchange(
  s: Socket & { replies: Buffer[] },
  reflector: Reflector,
  msg: Uint8Array,
): Promise<Buffer | undefined> {
  const before = s.replies.length;
  const handled = () => {
    const st = reflector.stats();
    return st.handshakes + st.keepalives + st.dropped;
  };
  const [count, { handshakes }] = [handled(), reflector.stats()];
  s.send(msg, reflector.port, '127.0.0.1');
  await until(() => handled() > count);
  if (reflector.stats().handshakes > handshakes) await until(() => s.replies.length > before);
  return s.replies[before];
}

describe('WireGuard reflector', () => {
  it('answers a valid initiation, records the source, and accepts keepalives once each', async () => {
    const { keys, observations, reflector } = await setup();
    const node = new Initiator(generateKeyPair(), keys.publicKey);
    const s = await udp();
    const reply = await exchange(s, reflector, node.initiation());
    expect(reply).toBeDefined();
    const index = node.response(reply as Buffer);
    const endpoint = `127.0.0.1:${s.address().port}`;
    expect(observations.get(node.keys.publicKey)?.endpoint).toBe(endpoint);

    const keepalive = node.transport(index);
    await exchange(s, reflector, keepalive);
    expect(reflector.stats().keepalives).toBe(1);
    await exchange(s, reflector, keepalive); // a replay
    await exchange(s, reflector, node.transport(index, Uint8Array.of(1, 2, 3))); // not a keepalive
    expect(reflector.stats().keepalives).toBe(1);
    await exchange(s, reflector, node.transport(index));
    expect(reflector.stats().keepalives).toBe(2);
    expect(s.replies.length).toBe(1);
  });

  it('follows the node to a new source address through authenticated keepalives only', async () => {
    const { keys, observations, reflector } = await setup();
    const node = new Initiator(generateKeyPair(), keys.publicKey);
    const s1 = await udp();
    const index = node.response((await exchange(s1, reflector, node.initiation())) as Buffer);
    const s2 = await udp();
    const forged = node.transport(index);
    forged[20] = (forged[20] as number) ^ 1;
    await exchange(s2, reflector, forged);
    expect(observations.get(node.keys.publicKey)?.endpoint).toBe(`127.0.0.1:${s1.address().port}`);
    await exchange(s2, reflector, node.transport(index));
    expect(observations.get(node.keys.publicKey)?.endpoint).toBe(`127.0.0.1:${s2.address().port}`);
  });

  it('drops bad mac1, initiations meant for another key, replays and garbage', async () => {
    const { keys, observations, reflector } = await setup();
    const node = new Initiator(generateKeyPair(), keys.publicKey);
    const s = await udp();
    const badMac = node.initiation();
    badMac[120] = (badMac[120] as number) ^ 1;
    expect(await exchange(s, reflector, badMac)).toBeUndefined();
    const other = new Initiator(node.keys, generateKeyPair().publicKey);
    expect(await exchange(s, reflector, other.initiation())).toBeUndefined();
    expect(observations.get(node.keys.publicKey)).toBeUndefined();

    const init = node.initiation();
    expect(await exchange(s, reflector, init)).toBeDefined();
    // The same initiation replayed from elsewhere must not move the observation.
    const attacker = await udp();
    expect(await exchange(attacker, reflector, init)).toBeUndefined();
    expect(observations.get(node.keys.publicKey)?.endpoint).toBe(`127.0.0.1:${s.address().port}`);

    for (const junk of [
      new Uint8Array(1),
      new Uint8Array(148),
      Uint8Array.of(4, 0, 0, 0),
      new Uint8Array(2000),
    ]) {
      expect(await exchange(s, reflector, junk)).toBeUndefined();
    }
    expect(reflector.stats()).toMatchObject({ handshakes: 1, keepalives: 0, dropped: 7 });
  });

  it('spends at most its handshake budget on Diffie-Hellman', async () => {
    const { keys, reflector } = await setup({ handshakesPerSecond: 1 });
    const s = await udp();
    for (let i = 0; i < 4; i++)
      s.send(new Initiator(generateKeyPair(), keys.publicKey).initiation(), reflector.port, '127.0.0.1');
    // Over-budget initiations are dropped, not queued: wait (bounded, the machine may be busy) for
    // the burst's replies, then check nothing more came.
    for (let waited = 0; s.replies.length < 2 && waited < 3000; waited += 100) await settle();
    await settle();
    // Burst of two, then one per second.
    expect(s.replies.length).toBe(2);
    expect(reflector.stats().handshakes).toBe(2);
  });

  it('gives each source its own handshake budget, so a flooding source cannot starve the others', async () => {
    // Shared budget: burst 8. Per source: burst 2. Two sources on loopback: 127.0.0.1 and .2.
    const { keys, reflector } = await setup({ handshakesPerSecond: 4, handshakesPerSecondPerSource: 1 });
    const flooder = await udp('127.0.0.1');
    for (let i = 0; i < 20; i++) {
      flooder.send(
        new Initiator(generateKeyPair(), keys.publicKey).initiation(),
        reflector.port,
        '127.0.0.1',
      );
    }
    for (let waited = 0; flooder.replies.length < 2 && waited < 3000; waited += 100) await settle();
    await settle();
    expect(flooder.replies.length).toBe(2);
    // What the flooder was refused did not drain the shared budget: three other sources still
    // get their whole bursts.
    for (const address of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) {
      const other = await udp(address);
      for (let i = 0; i < 2; i++) {
        other.send(
          new Initiator(generateKeyPair(), keys.publicKey).initiation(),
          reflector.port,
          '127.0.0.1',
        );
      }
      for (let waited = 0; other.replies.length < 2 && waited < 3000; waited += 100) await settle();
      expect(other.replies.length, `answers to ${address}`).toBe(2);
    }
    expect(reflector.stats().handshakes).toBe(8);
  });

  it("answers only the tailnet's node keys, and stops refreshing one removed from it", async () => {
    const membership = Membership.tailnet();
    const { keys, observations, reflector } = await setup({ membership });
    const member = new Initiator(generateKeyPair(), keys.publicKey);
    const stranger = new Initiator(generateKeyPair(), keys.publicKey);
    membership.replace([member.keys.publicKey]);
    const s = await udp();
    expect(await exchange(s, reflector, stranger.initiation())).toBeUndefined();
    expect(observations.get(stranger.keys.publicKey)).toBeUndefined();
    const index = member.response((await exchange(s, reflector, member.initiation())) as Buffer);
    expect(reflector.stats()).toMatchObject({ handshakes: 1, nodes: 1 });
    await exchange(s, reflector, member.transport(index));
    expect(reflector.stats().keepalives).toBe(1);
    membership.replace([]);
    await exchange(s, reflector, member.transport(index));
    expect(reflector.stats().keepalives).toBe(1);
  });

  it('forgets the least recently seen node beyond its limit, with its sessions', async () => {
    const { keys, reflector } = await setup({ maxNodes: 1 });
    const s = await udp();
    const a = new Initiator(generateKeyPair(), keys.publicKey);
    const ia = a.response((await exchange(s, reflector, a.initiation())) as Buffer);
    const c = new Initiator(generateKeyPair(), keys.publicKey);
    c.response((await exchange(s, reflector, c.initiation())) as Buffer);
    await exchange(s, reflector, a.transport(ia));
    expect(reflector.stats()).toMatchObject({ nodes: 1, sessions: 1, keepalives: 0 });
  });
});

describe('sourceKey', () => {
  it('is the IPv4 address (unmapped) or the IPv6 /64', () => {
    expect(sourceKey('198.51.100.7')).toBe(sourceKey('::ffff:198.51.100.7'));
    expect(sourceKey('198.51.100.7')).not.toBe(sourceKey('198.51.100.8'));
    expect(sourceKey('fd00:1:2:3::1')).toBe(sourceKey('fd00:1:2:3:ffff::9'));
    expect(sourceKey('fd00:1:2:3::1')).not.toBe(sourceKey('fd00:1:2:4::1'));
  });
});

describe('canonicalEndpoint', () => {
  it('unmaps IPv4-mapped IPv6 and brackets IPv6', () => {
    expect(canonicalEndpoint('::ffff:198.51.100.7', 41641)).toBe('198.51.100.7:41641');
    expect(canonicalEndpoint('fd00::1', 41641)).toBe('[fd00::1]:41641');
    expect(canonicalEndpoint('fe80::1%eth0', 41641)).toBeNull();
  });
});
