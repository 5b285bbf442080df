import type { DesiredState, FilterRuleSpec } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Host } from '../lab/index.js';
import {
  Helper,
  helperLab,
  installLeakCounter,
  keyPair,
  leakCount,
  ruleset,
  startTcpServer,
  startUdpEcho,
  tcpProbe,
  udpProbe,
} from './helper-harness.js';

// The packet filter for real: the built helper in lab namespaces installs it as nftables rules on a
// wireguard-go interface, and TCP and ping across the tunnel are let through or dropped as it says.

const env = helperLab();

const tcp = (src: string[], dst: string[], first: number, last = first): FilterRuleSpec => ({
  src,
  dst: dst.map((prefix) => ({ prefix, ports: { first, last } })),
  protos: [6],
});

describe('packet filter on the WireGuard interface (real nft, wireguard-go)', () => {
  let a: Host;
  let b: Host;
  /** A host on the same LAN with no tunnel at all. */
  let c: Host;
  let helperA: Helper;
  let helperB: Helper;
  let rulesetBefore: string;
  const keys = [keyPair(), keyPair()] as const;
  const names: string[] = [];
  const v4 = ['100.64.2.1', '100.64.2.2'];
  const v6 = ['fd00:66::1', 'fd00:66::2'];
  const A = [`${v4[0]}/32`, `${v6[0]}/128`];
  const B = [`${v4[1]}/32`, `${v6[1]}/128`];

  const state = (i: 0 | 1, filter?: FilterRuleSpec[]): DesiredState => {
    const j = 1 - i;
    return {
      interface: {
        name: names[i] as string,
        privateKey: keys[i].privateKey,
        listenPort: 51820,
        addresses: [`${v4[i]}/32`, `${v6[i]}/128`],
        mtu: 1420,
      },
      peers: [
        {
          publicKey: keys[j as 0 | 1].publicKey,
          allowedIPs: [`${v4[j]}/32`, `${v6[j]}/128`],
          endpoint: `${[a, b][j]?.ip}:51820`,
        },
      ],
      routes: [`${v4[j]}/32`, `${v6[j]}/128`],
      ...(filter === undefined ? {} : { filter }),
    };
  };
  /** B accepts TCP 443 from A, and nothing else. */
  const only443 = () => [tcp(A, B, 443)];
  /** `s` with `prefixes` routed to the peer too (a route the peer serves, or an exit node's). */
  const routing = (s: DesiredState, prefixes: string[]): DesiredState => {
    const peer = s.peers[0] as DesiredState['peers'][number];
    return {
      ...s,
      peers: [{ ...peer, allowedIPs: [...peer.allowedIPs, ...prefixes] }],
      routes: [...s.routes, ...prefixes],
    };
  };

  beforeAll(async () => {
    const segment = await env.lab.addSegment();
    a = await env.lab.addHost('fa', { segment, address: '198.18.3.1/24' });
    b = await env.lab.addHost('fb', { segment, address: '198.18.3.2/24' });
    c = await env.lab.addHost('fc', { segment, address: '198.18.3.3/24' });
    names.push(env.lab.name('fa'), env.lab.name('fb'));
    rulesetBefore = await ruleset(b);
    [helperA, helperB] = await Promise.all([Helper.startIn(a, env.scratch), Helper.startIn(b, env.scratch)]);
    await startTcpServer(b, [22, 80, 443]);
    await startTcpServer(a, [8080]);
    await startUdpEcho(a, [7001]);
    await startUdpEcho(b, [7100]);
  });

  afterAll(async () => {
    await helperA?.terminate();
    await helperB?.terminate();
  });

  it('without a filter everything reaches B (the probes below do detect a drop)', async () => {
    await helperA.apply(state(0));
    await helperB.apply(state(1));
    expect(await a.ping(v4[1] as string, { deadlineS: 5 })).toBe(true);
    expect(await tcpProbe(a, v4[1] as string, 80)).toMatch(/^hello 80 from /);
  });

  it('with TCP 443 from A only, A reaches 443 but not 22 or 80, and ping fails (both families)', async () => {
    await helperB.apply(state(1, only443()));
    expect((await b.must(['nft', 'list', 'tables'])).split('\n')).toContain(`table inet weft-${names[1]}`);
    for (const dst of [v4[1], v6[1]] as string[]) {
      expect(await tcpProbe(a, dst, 443)).toMatch(/^hello 443 from /);
      expect(await tcpProbe(a, dst, 22)).toBeNull();
      expect(await tcpProbe(a, dst, 80)).toBeNull();
      expect(await a.ping(dst, { count: 2, deadlineS: 2 })).toBe(false);
    }
    // The drops happened at B's filter, not somewhere on the way: its drop rule counted them.
    const counters = await b.must(['nft', 'list', 'chain', 'inet', `weft-${names[1]}`, 'tunnel_in']);
    expect(counters).toMatch(/^\t\tcounter packets [1-9]\d* bytes \d+ drop$/m);
  });

  it("B's tunnel address is reached only through the tunnel: a LAN host sending straight to it is dropped", async () => {
    // c routes B's tunnel address to B's LAN address, as an attacker next to B could.
    await c.must(['ip', 'route', 'add', `${v4[1]}/32`, 'via', b.ip]);
    // The probe does reach B's server over the LAN, at B's LAN address…
    expect(await tcpProbe(c, b.ip, 443)).toMatch(/^hello 443 from /);
    // …but not at the tunnel address, even on the port the filter opens, and the guard counted it.
    expect(await tcpProbe(c, v4[1] as string, 443)).toBeNull();
    const input = await b.must(['nft', 'list', 'chain', 'inet', `weft-${names[1]}`, 'input']);
    expect(input).toMatch(
      new RegExp(`ip daddr ${v4[1]} iifname != "lo" fib saddr type != local counter packets [1-9]\\d* bytes`),
    );
  });

  it("B's own connections out to A still get their replies", async () => {
    expect(await tcpProbe(b, v4[0] as string, 8080)).toMatch(/^hello 8080 from /);
    expect(await tcpProbe(b, v6[0] as string, 8080)).toMatch(/^hello 8080 from /);
    expect(await b.ping(v4[0] as string, { deadlineS: 3 })).toBe(true);
  });

  it('the same filter again runs nothing', async () => {
    const mark = helperB.log.length;
    await helperB.apply(state(1, only443()));
    expect(helperB.changesSince(mark)).toEqual([]);
  });

  it('a new filter opening 22 takes effect at once; 80 stays closed', async () => {
    const mark = helperB.log.length;
    await helperB.apply(state(1, [tcp(A, B, 443), tcp(A, B, 22)]));
    expect(helperB.changesSince(mark)).toEqual([expect.stringMatching(/^weft-helper: ran nft -f /)]);
    expect(await tcpProbe(a, v4[1] as string, 22)).toMatch(/^hello 22 from /);
    expect(await tcpProbe(a, v6[1] as string, 22)).toMatch(/^hello 22 from /);
    expect(await tcpProbe(a, v4[1] as string, 443)).toMatch(/^hello 443 from /);
    expect(await tcpProbe(a, v4[1] as string, 80)).toBeNull();
  });

  it('a source the rule does not name is dropped even on an open port', async () => {
    await helperB.apply(state(1, [tcp(['100.64.9.9/32'], B, 22)]));
    expect(await tcpProbe(a, v4[1] as string, 22)).toBeNull();
  });

  /** Packets B's filter has dropped from the tunnel so far (its final drop rule's counter). */
  const dropped = async (): Promise<number> => {
    const chain = await b.must(['nft', 'list', 'chain', 'inet', `weft-${names[1]}`, 'tunnel_in']);
    const m = /^\t\tcounter packets (\d+) bytes \d+ drop$/m.exec(chain);
    return Number(m?.[1]);
  };

  it("with a filter that lets A open nothing, B's own TCP, UDP and ping to A still get their replies", async () => {
    // No connection tracking: replies are told apart by TCP flags, the UDP flows B sent out, and
    // the ICMP type.
    await helperB.apply(state(1, []));
    for (const dst of [v4[0], v6[0]] as string[]) {
      expect(await tcpProbe(b, dst, 8080)).toMatch(/^hello 8080 from /);
      expect(await udpProbe(b, dst, 7001)).toMatch(/^echo 7001 from /);
      expect(await b.ping(dst, { count: 1, deadlineS: 3 })).toBe(true);
    }
  });

  it('and A opens nothing on B: no bare SYN (open or closed port), no new UDP flow, no echo request', async () => {
    for (const dst of [v4[1], v6[1]] as string[]) {
      // Each must be dropped by B's filter, not refused: a closed port would otherwise answer RST.
      for (const probe of [
        () => tcpProbe(a, dst, 80, 1),
        () => tcpProbe(a, dst, 81, 1),
        () => udpProbe(a, dst, 7100, { timeoutS: 1 }),
        async () => ((await a.ping(dst, { count: 1, deadlineS: 1 })) ? 'answered' : null),
      ]) {
        const before = await dropped();
        expect(await probe()).toBeNull();
        expect(await dropped()).toBeGreaterThan(before);
      }
    }
  });

  it('a UDP reply too big for one packet gets in, over IPv6 too (its later fragments carry no ports)', async () => {
    await helperB.apply(state(1, []));
    for (const dst of [v4[0], v6[0]] as string[]) {
      const answer = await udpProbe(b, dst, 7001, { message: 'big 3000' });
      expect(answer?.length).toBe(3000);
      expect(answer).toMatch(/^echo 7001 from /);
    }
  });

  it("a UDP reply gets in only from the address and port B's flow went to", async () => {
    // B's UDP server on 7100 sends to A:7003 (asked from B itself): that flow, and only it, is open.
    expect(await udpProbe(b, '127.0.0.1', 7100, { message: `send ${v4[0]} 7003`, timeoutS: 1 })).toBeNull();
    expect(await udpProbe(a, v4[1] as string, 7100, { sourcePort: 7003 })).toBe(`echo 7100 from ${v4[0]}`);
    const before = await dropped();
    expect(await udpProbe(a, v4[1] as string, 7100, { sourcePort: 7004, timeoutS: 1 })).toBeNull();
    expect(await dropped()).toBeGreaterThan(before);
  });

  it("a UDP reply gets in only to the address B's flow left from, not to another of B's addresses", async () => {
    // B has a second address of each family, which A routes into the tunnel (as when B serves a route
    // holding one of its own addresses, its LAN's).
    const second = { 4: '203.0.113.2', 6: 'fd00:67::2' } as const;
    await b.must(['ip', 'addr', 'add', `${second[4]}/32`, 'dev', 'lo']);
    await b.must(['ip', 'addr', 'add', `${second[6]}/128`, 'dev', 'lo']);
    await helperA.apply(routing(state(0), [`${second[4]}/32`, `${second[6]}/128`]));
    await helperB.apply(state(1, []));
    for (const [family, to, own, port] of [
      [4, v4[0], v4[1], 7010],
      [6, v6[0], v6[1], 7011],
    ] as const) {
      // B's flow, from its tunnel address and port 7100 to A's port: the reply to that address gets in…
      expect(await udpProbe(b, '127.0.0.1', 7100, { message: `send ${to} ${port}`, timeoutS: 1 })).toBeNull();
      expect(await udpProbe(a, own as string, 7100, { sourcePort: port })).toBe(`echo 7100 from ${to}`);
      // …and the same "reply" to B's other address is dropped by the filter.
      const before = await dropped();
      expect(await udpProbe(a, second[family], 7100, { sourcePort: port, timeoutS: 1 })).toBeNull();
      expect(await dropped()).toBeGreaterThan(before);
    }
    await helperA.apply(state(0));
  });

  it("B's UDP flows stay open when its table is replaced (the flows are carried over, both families)", async () => {
    await helperB.apply(state(1, []));
    const flows = [
      [v4[0], v4[1], 7005],
      [v6[0], v6[1], 7006],
    ] as const;
    for (const [to, , port] of flows)
      expect(await udpProbe(b, '127.0.0.1', 7100, { message: `send ${to} ${port}`, timeoutS: 1 })).toBeNull();
    // Another filter: the table is replaced, in one transaction, flow sets and all.
    await helperB.apply(state(1, only443()));
    for (const [to, own, port] of flows)
      expect(await udpProbe(a, own as string, 7100, { sourcePort: port })).toBe(`echo 7100 from ${to}`);
  });

  it('"fragmentation needed" and "packet too big" from a router on the tunnel path reach B, whose filter lets A open nothing', async () => {
    // A routes 198.51.100.0/24 and fd00:68::/64 into a 1280-byte link; B sends 1400-byte
    // don't-fragment pings there (IPv6 never fragments on the way: its path MTU rests on this error).
    await a.must(['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    await a.must(['ip', 'link', 'add', 'narrow', 'mtu', '1280', 'type', 'veth', 'peer', 'name', 'narrow1']);
    await a.must(['ip', 'link', 'set', 'narrow1', 'up']);
    await a.must(['ip', 'link', 'set', 'narrow', 'up']);
    await a.must(['ip', 'route', 'add', '198.51.100.0/24', 'dev', 'narrow']);
    await a.must(['ip', '-6', 'route', 'add', 'fd00:68::/64', 'dev', 'narrow']);
    await helperB.apply(routing(state(1, []), ['198.51.100.0/24', 'fd00:68::/64']));
    const ping = await b.exec(['ping', '-n', '-c', '1', '-W', '2', '-M', 'do', '-s', '1372', '198.51.100.7']);
    expect(ping.stdout).toMatch(/Frag needed and DF set \(mtu = 1280\)/);
    expect(await b.must(['ip', 'route', 'get', '198.51.100.7'])).toMatch(/\bmtu 1280\b/);
    const ping6 = await b.exec([
      'ping',
      '-6',
      '-n',
      '-c',
      '1',
      '-W',
      '2',
      '-M',
      'do',
      '-s',
      '1352',
      'fd00:68::7',
    ]);
    expect(ping6.stdout).toMatch(/Packet too big: mtu=1280/);
    expect(await b.must(['ip', '-6', 'route', 'get', 'fd00:68::7'])).toMatch(/\bmtu 1280\b/);
  });

  describe('the tailnet resolver 100.100.100.100 (and fd7a:115c:a1e0::53), with A routing it as an exit node would', () => {
    const resolver = { 4: '100.100.100.100', 6: 'fd7a:115c:a1e0::53' } as const;
    /** B lets in any UDP at all: the guard, not the filter, must keep the resolver's address out. */
    const anyUdp: FilterRuleSpec = {
      src: ['0.0.0.0/0', '::/0'],
      dst: ['0.0.0.0/0', '::/0'].map((prefix) => ({ prefix, ports: { first: 0, last: 65535 } })),
      protos: [17],
    };
    const withResolver = (): DesiredState => ({
      ...routing(state(1, [anyUdp]), [`${resolver[4]}/32`, `${resolver[6]}/128`]),
      dns: { resolver: { ipv4: v4[1] as string, ipv6: v6[1] as string, port: 40053 }, searchDomains: [] },
    });

    beforeAll(async () => {
      // A answers as the resolver's addresses (it could: a peer chooses its packets' sources).
      await a.must(['ip', 'addr', 'add', `${resolver[4]}/32`, 'dev', 'lo']);
      await a.must(['ip', 'addr', 'add', `${resolver[6]}/128`, 'dev', 'lo']);
      await helperB.apply(withResolver());
    });

    /** From A, ten datagrams from the resolver's address and port 53 to `to:port`, 200 ms apart. */
    const forge = (family: 4 | 6, to: string, port: number) =>
      a.exec(
        [
          'timeout',
          '5',
          'node',
          '-e',
          `const s = require('node:dgram').createSocket('udp${family}');
          s.bind(53, ${JSON.stringify(resolver[family])}, () => {
            let n = 0;
            const t = setInterval(() => {
              s.send('forged', ${port}, ${JSON.stringify(to)});
              if (++n === 10) { clearInterval(t); s.close(); }
            }, 200);
          });`,
        ],
        { timeoutMs: 7000 },
      );

    it("a peer sending as the resolver cannot inject answers to B's queries", async () => {
      for (const [family, own, port] of [
        [4, v4[1], 7020],
        [6, v6[1], 7021],
      ] as const) {
        // B asks the resolver from `port` (no resolver runs here, so no real answer comes) while A
        // sends "answers" to that port from the resolver's address: none gets in.
        const [answer] = await Promise.all([
          udpProbe(b, resolver[family], 53, { sourcePort: port, timeoutS: 3 }),
          forge(family, own as string, port),
        ]);
        expect(answer).toBeNull();
        const chain = await b.must(['nft', 'list', 'chain', 'inet', `weft-${names[1]}`, 'tunnel_in']);
        const ip = family === 4 ? 'ip' : 'ip6';
        expect(chain).toMatch(new RegExp(`${ip} saddr ${resolver[family]} counter packets [1-9]\\d* bytes`));
      }
    });

    it('nothing but the rewritten queries leaves B for the resolver: no ping, no other port', async () => {
      await installLeakCounter(a, v4[1] as string, resolver[4]);
      await installLeakCounter(a, v6[1] as string, resolver[6]);
      expect(await leakCount(a)).toBe(0);
      for (const family of [4, 6] as const) {
        expect(await b.ping(resolver[family], { count: 1, deadlineS: 1 })).toBe(false);
        expect(await udpProbe(b, resolver[family], 54, { timeoutS: 1 })).toBeNull();
      }
      expect(await leakCount(a)).toBe(0);
    });
  });

  it('a ~47 KB filter whose rendering grows as its square is refused, and the rules in force stay', async () => {
    await helperB.apply(state(1, only443()));
    const inForce = await ruleset(b);
    // 400 destinations over the whole tailnet range, each with its own port, cut by 400 /32s.
    const dst = [
      ...Array.from({ length: 400 }, (_, i) => ({
        prefix: '100.64.0.0/10',
        ports: { first: 2 * i + 1, last: 2 * i + 1 },
      })),
      ...Array.from({ length: 400 }, (_, i) => ({
        prefix: `100.64.${(2 * i) >> 8}.${(2 * i) & 255}/32`,
        ports: { first: 0, last: 0 },
      })),
    ];
    const bomb = { ...state(1), filter: [{ src: A, dst, protos: [6, 17] }] };
    const request = { id: 9, op: 'apply', state: bomb };
    expect(JSON.stringify(request).length).toBeLessThan(48 * 1024);
    const mark = helperB.log.length;
    const answer = await helperB.request(request);
    expect(answer).toMatchObject({ id: 9, ok: false, error: { code: 'invalid-request' } });
    expect(answer.ok === false && answer.error.message).toMatch(
      /^state\.filter\[0\] could take the nftables table to \d+ set elements, over the limit of 65536/,
    );
    expect(helperB.changesSince(mark)).toEqual([]);
    expect(await ruleset(b)).toBe(inForce);
    expect(await tcpProbe(a, v4[1] as string, 443)).toMatch(/^hello 443 from /);
  });

  it('down removes the table: nft list ruleset is exactly as before', async () => {
    await helperB.down(names[1] as string);
    expect(await ruleset(b)).toBe(rulesetBefore);
  });

  it('SIGINT removes the table too', async () => {
    await helperB.apply(state(1, only443()));
    expect(await ruleset(b)).not.toBe(rulesetBefore);
    expect(await helperB.terminate()).toBe(0);
    expect(await ruleset(b)).toBe(rulesetBefore);
  });
});
