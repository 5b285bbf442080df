import { existsSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DesiredState } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, type Host, Lab, run, type Segment, sleep, waitFor } from '../lab/index.js';
import { Helper, keyPair, Scratch, withTimeout } from './helper-harness.js';

// weft-helper for real: the built binary in lab namespaces, driving wireguard-go, `wg` and `ip`
// (the kernel here has no WireGuard module). Every assertion reads the OS back with `wg` and `ip`.

let lab: Lab;
const scratch = new Scratch(() => lab);

beforeAll(async () => {
  lab = await Lab.create();
  if (!existsSync(BIN.helper)) throw new Error(`${BIN.helper} is missing: run npm run build`);
});

afterAll(async () => {
  await lab?.cleanup();
  scratch.removeAll();
});

// --- reading the OS back -------------------------------------------------------------------

interface DumpPeer {
  publicKey: string;
  endpoint: string;
  allowedIPs: string[];
  keepalive: string;
}

async function wgDump(host: Host, name: string) {
  const [iface, ...peers] = (await host.must(['wg', 'show', name, 'dump'])).trim().split('\n');
  const [privateKey, publicKey, listenPort] = (iface as string).split('\t');
  return {
    privateKey,
    publicKey,
    listenPort: Number(listenPort),
    // wireguard-go lists peers in map order, which changes from one read to the next.
    peers: peers
      .map((line): DumpPeer => {
        const [key, , endpoint, allowed, , , , keepalive] = line.split('\t');
        return {
          publicKey: key as string,
          endpoint: endpoint as string,
          allowedIPs: allowed === '(none)' ? [] : (allowed as string).split(',').sort(),
          keepalive: keepalive as string,
        };
      })
      .sort((a, b) => a.publicKey.localeCompare(b.publicKey)),
  };
}

/** Global addresses on the interface, sorted. */
async function addresses(host: Host, name: string): Promise<string[]> {
  const [link] = JSON.parse(await host.must(['ip', '-j', 'addr', 'show', 'dev', name])) as {
    addr_info: { local: string; prefixlen: number; scope: string }[];
  }[];
  return (link?.addr_info ?? [])
    .filter((a) => a.scope === 'global')
    .map((a) => `${a.local}/${a.prefixlen}`)
    .sort();
}

/** Routes through the interface that are not the kernel's own, both families, sorted. */
async function routes(host: Host, name: string): Promise<string[]> {
  const read = async (family: string[]) =>
    (
      JSON.parse(await host.must(['ip', '-j', ...family, 'route', 'show', 'dev', name])) as {
        dst: string;
        protocol?: string;
      }[]
    )
      .filter((r) => r.protocol !== 'kernel')
      .map((r) => r.dst);
  return [...(await read([])), ...(await read(['-6']))].sort();
}

async function linkExists(host: Host, name: string): Promise<boolean> {
  return (await host.exec(['ip', 'link', 'show', 'dev', name])).code === 0;
}

/** PIDs in the host's namespace other than the helper's: wireguard-go, when one runs. */
async function otherPids(host: Host, helper: Helper): Promise<number[]> {
  // From the root namespace: run inside it, `ip netns pids` would list itself.
  const out = (await run(['ip', 'netns', 'pids', host.ns])).stdout;
  return out
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((pid) => pid !== helper.child.pid);
}

/** Records netlink link/address/route events in the host while `during` runs. */
async function netlinkEvents(host: Host, during: () => Promise<unknown>): Promise<string> {
  const monitor = host.spawn(['ip', 'monitor', 'link', 'address', 'route']);
  let events = '';
  monitor.stdout?.setEncoding('utf8');
  monitor.stdout?.on('data', (t: string) => {
    events += t;
  });
  const exited = new Promise((r) => monitor.once('exit', r));
  await sleep(300); // let it subscribe before anything happens
  try {
    await during();
    await sleep(300);
  } finally {
    monitor.kill('SIGTERM');
    await withTimeout(exited, 5000, 'ip monitor to exit');
  }
  return events;
}

// --- one helper, one interface ---------------------------------------------------------------

describe('weft-helper on one host', () => {
  let segment: Segment;
  let host: Host;
  let helper: Helper;
  let iface: string;
  let before: string;
  const me = keyPair();
  const peerA = keyPair();
  const peerB = keyPair();

  const full = (): DesiredState => ({
    interface: {
      name: iface,
      privateKey: me.privateKey,
      listenPort: 51820,
      addresses: ['100.64.0.1/32', 'fd00:64::1/128'],
      mtu: 1380,
    },
    peers: [
      {
        publicKey: peerA.publicKey,
        allowedIPs: ['100.64.0.2/32', 'fd00:64::2/128'],
        endpoint: '198.18.0.2:51820',
        persistentKeepalive: 25,
      },
      {
        publicKey: peerB.publicKey,
        allowedIPs: ['100.64.0.3/32', '198.51.100.0/24'],
        endpoint: '[fd00:1::3]:4000',
      },
    ],
    routes: ['100.64.0.2/32', '100.64.0.3/32', '198.51.100.0/24', 'fd00:64::2/128'],
  });

  /** One address, one route, and peer A kept but with no allowed IPs (`wg` needs `wg set` for that). */
  const smaller = (): DesiredState => {
    const s = full();
    s.interface.addresses = ['100.64.0.1/32'];
    s.peers = [{ ...(s.peers[0] as DesiredState['peers'][number]), allowedIPs: [] }];
    s.routes = ['100.64.0.2/32'];
    return s;
  };

  beforeAll(async () => {
    segment = await lab.addSegment();
    host = await lab.addHost('h1', { segment, address: '198.18.0.1/24' });
    iface = lab.name('wg1');
    before = await host.osSnapshot();
    helper = await Helper.startIn(host, scratch);
  });

  afterAll(async () => {
    if (helper.child.exitCode === null) await helper.terminate();
  });

  it('listens on a socket only root can use', async () => {
    expect((await stat(helper.socket)).mode & 0o777).toBe(0o600);
  });

  it('apply creates the interface with the key, port, peers, addresses, MTU and routes asked for', async () => {
    const status = await helper.apply(full());
    expect(status).toMatchObject({
      name: iface,
      exists: true,
      backend: 'wireguard-go',
      publicKey: me.publicKey,
      listenPort: 51820,
    });
    const dump = await wgDump(host, iface);
    expect(dump).toMatchObject({ privateKey: me.privateKey, publicKey: me.publicKey, listenPort: 51820 });
    expect(dump.peers).toEqual(
      [
        {
          publicKey: peerA.publicKey,
          endpoint: '198.18.0.2:51820',
          allowedIPs: ['100.64.0.2/32', 'fd00:64::2/128'],
          keepalive: '25',
        },
        {
          publicKey: peerB.publicKey,
          endpoint: '[fd00:1::3]:4000',
          allowedIPs: ['100.64.0.3/32', '198.51.100.0/24'],
          keepalive: 'off',
        },
      ].sort((a, b) => a.publicKey.localeCompare(b.publicKey)),
    );
    expect(await addresses(host, iface)).toEqual(['100.64.0.1/32', 'fd00:64::1/128']);
    expect(await routes(host, iface)).toEqual(['100.64.0.2', '100.64.0.3', '198.51.100.0/24', 'fd00:64::2']);
    const [link] = JSON.parse(await host.must(['ip', '-j', 'link', 'show', 'dev', iface])) as {
      mtu: number;
      flags: string[];
    }[];
    expect(link?.mtu).toBe(1380);
    expect(link?.flags).toContain('UP');
    // wireguard-go is the helper's child, in the foreground, in this namespace.
    expect(await otherPids(host, helper)).toHaveLength(1);
    expect(existsSync(`/var/run/wireguard/${iface}.sock`)).toBe(true);
  });

  it('the same state again changes nothing', async () => {
    const dumpBefore = await wgDump(host, iface);
    const mark = helper.log.length;
    const events = await netlinkEvents(host, () => helper.apply(full()));
    expect(events).toBe('');
    expect(helper.changesSince(mark)).toEqual([]);
    expect(await wgDump(host, iface)).toEqual(dumpBefore);
  });

  it('an unchanged state with a filter runs no nft change, yet puts back its table deleted by hand', async () => {
    const filtered: DesiredState = {
      ...full(),
      filter: [
        {
          src: ['100.64.0.2/32'],
          dst: [{ prefix: '100.64.0.1/32', ports: { first: 443, last: 443 } }],
          protos: [6],
        },
      ],
    };
    const listTable = ['nft', 'list', 'table', 'inet', `weft-${iface}`];
    await helper.apply(filtered);
    const installed = await host.must(listTable);
    let mark = helper.log.length;
    await helper.apply(filtered);
    expect(helper.changesSince(mark)).toEqual([]);
    await host.must(['nft', 'delete', 'table', 'inet', `weft-${iface}`]);
    mark = helper.log.length;
    await helper.apply(filtered);
    expect(helper.changesSince(mark)).toEqual([expect.stringMatching(/^weft-helper: ran nft -f /)]);
    expect(await host.must(listTable)).toBe(installed);
    // A table without the set carrying the hash (an older helper's, or edited by hand) is replaced.
    await host.must(['nft', 'delete', 'set', 'inet', `weft-${iface}`, 'hash']);
    mark = helper.log.length;
    await helper.apply(filtered);
    expect(helper.changesSince(mark)).toEqual([expect.stringMatching(/^weft-helper: ran nft -f /)]);
    expect(await host.must(listTable)).toBe(installed);
    // Back to no filter, as the next tests expect.
    await helper.apply(full());
    expect((await host.exec(listTable)).code).not.toBe(0);
  });

  it('refuses an invalid state with a clear error and changes nothing', async () => {
    const bad = full();
    (bad.peers[0] as { allowedIPs: string[] }).allowedIPs = ['1.2.3.4/33'];
    const dumpBefore = await wgDump(host, iface);
    const answer = await helper.request({ id: 9, op: 'apply', state: bad });
    expect(answer).toEqual({
      id: 9,
      ok: false,
      error: {
        code: 'invalid-request',
        message: 'state.peers[0].allowedIPs[0]: must be a CIDR prefix with no host bits set',
      },
    });
    expect(await wgDump(host, iface)).toEqual(dumpBefore);
  });

  it('refuses to touch an interface that is not WireGuard', async () => {
    const answer = await helper.request({ id: 3, op: 'down', interface: 'eth0' });
    expect(answer).toMatchObject({ id: 3, ok: false, error: { code: 'invalid-request' } });
    expect(await linkExists(host, 'eth0')).toBe(true);
  });

  it('a smaller state removes the peer, allowed IPs, address and routes that are gone', async () => {
    const mark = helper.log.length;
    const events = await netlinkEvents(host, () => helper.apply(smaller()));
    // The same recorder that saw nothing above does see these changes.
    expect(events).toMatch(/Deleted/);
    expect(helper.changesSince(mark).length).toBeGreaterThan(0);
    const dump = await wgDump(host, iface);
    expect(dump.peers).toEqual([
      { publicKey: peerA.publicKey, endpoint: '198.18.0.2:51820', allowedIPs: [], keepalive: '25' },
    ]);
    expect(await addresses(host, iface)).toEqual(['100.64.0.1/32']);
    expect(await routes(host, iface)).toEqual(['100.64.0.2']);
  });

  it('status reports the interface as wg and ip see it', async () => {
    const answer = await helper.request({ id: 4, op: 'status', interface: iface });
    expect(answer).toMatchObject({
      id: 4,
      ok: true,
      status: {
        exists: true,
        backend: 'wireguard-go',
        publicKey: me.publicKey,
        addresses: ['100.64.0.1/32'],
        peers: [{ publicKey: peerA.publicKey, endpoint: '198.18.0.2:51820', latestHandshake: null }],
      },
    });
  });

  it('keeps a secondary IPv4 address when the primary of its subnet is removed', async () => {
    // The kernel deletes secondaries together with their primary (promote_secondaries is off).
    const two = smaller();
    two.interface.addresses = ['100.64.0.1/10', '100.64.0.9/10'];
    await helper.apply(two);
    expect(await addresses(host, iface)).toEqual(['100.64.0.1/10', '100.64.0.9/10']);
    two.interface.addresses = ['100.64.0.9/10'];
    expect((await helper.apply(two)).addresses).toEqual(['100.64.0.9/10']);
    expect(await addresses(host, iface)).toEqual(['100.64.0.9/10']);
  });

  it('down removes the interface, its addresses and routes, and stops wireguard-go; down again is fine', async () => {
    for (const id of [5, 6]) {
      expect(await helper.request({ id, op: 'down', interface: iface })).toMatchObject({
        id,
        ok: true,
        status: { exists: false },
      });
    }
    expect(await linkExists(host, iface)).toBe(false);
    expect(await otherPids(host, helper)).toEqual([]);
    expect(existsSync(`/var/run/wireguard/${iface}.sock`)).toBe(false);
    expect(await host.osSnapshot()).toBe(before);
    expect(await helper.request({ id: 7, op: 'status', interface: iface })).toMatchObject({
      ok: true,
      status: { exists: false, backend: null, peers: [] },
    });
  });

  it('recreates the interface on the next apply after wireguard-go dies', async () => {
    await helper.apply(full());
    const [wireguardGo] = await otherPids(host, helper);
    expect(wireguardGo).toBeDefined();
    process.kill(wireguardGo as number, 'SIGKILL');
    await waitFor('the interface to go with wireguard-go', async () => !(await linkExists(host, iface)));
    await waitFor('the helper to notice', async () =>
      helper.log.some((l) => l.includes('the next apply recreates')),
    );
    const status = await helper.apply(full());
    expect(status.exists).toBe(true);
    expect(await addresses(host, iface)).toEqual(['100.64.0.1/32', 'fd00:64::1/128']);
    expect(await routes(host, iface)).toEqual(['100.64.0.2', '100.64.0.3', '198.51.100.0/24', 'fd00:64::2']);
  });

  it('SIGINT takes down what it created, removes its socket and exits 0', async () => {
    expect(await linkExists(host, iface)).toBe(true);
    expect(await helper.terminate('SIGINT')).toBe(0);
    expect(await linkExists(host, iface)).toBe(false);
    expect(existsSync(helper.socket)).toBe(false);
    expect(await otherPids(host, helper)).toEqual([]);
    expect(await host.osSnapshot()).toBe(before);
  });
});

// --- the socket's guards ---------------------------------------------------------------------

describe('weft-helper socket', () => {
  let host: Host;

  beforeAll(async () => {
    host = await lab.addHost('h2', { segment: await lab.addSegment(), address: '198.18.1.1/24' });
  });

  it('a second helper refuses a socket another one answers on; a stale socket is replaced', async () => {
    const first = await Helper.startIn(host, scratch);
    const second = host.spawn(['node', BIN.helper, '--socket', first.socket, '--state-dir', scratch.dir()]);
    let stderr = '';
    second.stderr?.on('data', (t) => {
      stderr += t;
    });
    const code = await withTimeout(
      new Promise((r) => second.once('exit', r)),
      10_000,
      'second helper to exit',
    );
    expect(code).toBe(1);
    expect(stderr).toContain(`another weft-helper is already listening on ${first.socket}`);
    // Killed without a chance to clean up, the first leaves its socket file behind.
    await first.terminate('SIGKILL');
    expect(existsSync(first.socket)).toBe(true);
    const third = await Helper.start(host, first.socket);
    expect(await third.request({ id: 1, op: 'status', interface: 'wg0' })).toMatchObject({ id: 1, ok: true });
    expect(await third.terminate()).toBe(0);
  });

  it('--group makes the socket 0660 and owned by that group', async () => {
    const [name, , gid] = (
      readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => !l.startsWith('root:')) ?? ''
    ).split(':');
    const helper = await Helper.startIn(host, scratch, ['--group', name as string]);
    // The socket is created 0600 and opened to the group just after: never the other way round.
    const s = await waitFor('the socket to open to the group', async () => {
      const st = await stat(helper.socket);
      return (st.mode & 0o777) === 0o660 && st;
    });
    expect(s.gid).toBe(Number(gid));
    expect(await helper.terminate()).toBe(0);
  });

  it('refuses to start with a group that does not exist', async () => {
    const child = host.spawn([
      'node',
      BIN.helper,
      '--socket',
      join(scratch.dir(), 'h.sock'),
      '--state-dir',
      scratch.dir(),
      '--group',
      'no-such-group',
    ]);
    let stderr = '';
    child.stderr?.on('data', (t) => {
      stderr += t;
    });
    expect(await withTimeout(new Promise((r) => child.once('exit', r)), 10_000, 'helper to exit')).toBe(1);
    expect(stderr).toContain('group "no-such-group" is not in /etc/group');
  });
});

// --- two hosts, a real tunnel ----------------------------------------------------------------

describe('two hosts, each with a helper and wireguard-go', () => {
  it('reach each other across 100.64.x and fd00:: addresses through the tunnel', async () => {
    const segment = await lab.addSegment();
    const hosts = [
      await lab.addHost('ta', { segment, address: '198.18.2.1/24' }),
      await lab.addHost('tb', { segment, address: '198.18.2.2/24' }),
    ];
    const keys = [keyPair(), keyPair()];
    const helpers = await Promise.all(hosts.map((h) => Helper.startIn(h, scratch)));
    const names = [lab.name('ta'), lab.name('tb')];
    const overlay4 = ['100.64.1.1', '100.64.1.2'];
    const overlay6 = ['fd00:65::1', 'fd00:65::2'];
    await Promise.all(
      [0, 1].map((i) => {
        const j = 1 - i;
        return helpers[i]?.apply({
          interface: {
            name: names[i] as string,
            privateKey: keys[i]?.privateKey as string,
            listenPort: 51820,
            addresses: [`${overlay4[i]}/32`, `${overlay6[i]}/128`],
            mtu: 1420,
          },
          peers: [
            {
              publicKey: keys[j]?.publicKey as string,
              allowedIPs: [`${overlay4[j]}/32`, `${overlay6[j]}/128`],
              endpoint: `${hosts[j]?.ip}:51820`,
            },
          ],
          routes: [`${overlay4[j]}/32`, `${overlay6[j]}/128`],
        });
      }),
    );
    const [a, b] = hosts as [Host, Host];
    expect(await a.ping('100.64.1.2', { deadlineS: 5 })).toBe(true);
    expect(await b.ping('100.64.1.1', { deadlineS: 5 })).toBe(true);
    expect(await a.ping('fd00:65::2', { deadlineS: 5 })).toBe(true);
    expect(await b.ping('fd00:65::1', { deadlineS: 5 })).toBe(true);
    // The replies came through WireGuard: the peer has a handshake and traffic counted.
    const answer = await helpers[0]?.request({ id: 1, op: 'status', interface: names[0] });
    expect(answer?.ok).toBe(true);
    const peer = answer?.ok ? answer.status.peers[0] : undefined;
    expect(peer?.latestHandshake).toBeGreaterThan(0);
    expect(peer?.rxBytes).toBeGreaterThan(0);
    for (const h of helpers) expect(await h.terminate()).toBe(0);
    for (const [i, h] of hosts.entries()) expect(await linkExists(h, names[i] as string)).toBe(false);
  });
});
