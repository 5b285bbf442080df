import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, Lab, REPO, scratchDir, stopTailnet, WeftNode, waitFor } from '../lab/index.js';

// Tailnet names end to end on lab hosts: real control, helpers (nftables redirect, resolv.conf) and
// engines (the resolver). Each host has its own /etc/netns/NS/resolv.conf (bind-mounted over
// /etc/resolv.conf inside it), so the helper's changes stay in the lab. systemd-resolved does not
// run here (systemd is not PID 1): these hosts use the resolv.conf path; the resolvectl plan is a
// unit test (native-helpers/src/linux/dns.test.ts). Tests run in order and share one tailnet.

let lab: Lab;
let dir: string;
let control: ControlServer;
const nodes: Record<'a' | 'b' | 'c', WeftNode> = {} as never;
const original: Record<string, string> = {};

/** alice's nodes see each other; bob's node (c) is seen by nobody. */
const POLICY = `{ "acls": [{ "action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:*"] }] }`;

const resolvConf = (n: WeftNode) => readFileSync(n.host.resolvConf, 'utf8');

/** The IPv4 address glibc resolves `name` to on the node's host (through /etc/resolv.conf), or null. */
async function lookup(n: WeftNode, name: string): Promise<string | null> {
  const r = await n.host.exec(['getent', 'ahostsv4', name], { timeoutMs: 10_000 });
  return r.code === 0 ? (r.stdout.split(/\s+/)[0] ?? null) : null;
}

/** Asks `server`:53 from the node's host with core's query client; the answer's records. */
async function ask(n: WeftNode, server: string, name: string, tcp: boolean, port = 53): Promise<string[]> {
  const module = join(REPO, 'core/dist/dns/query.js');
  const script = `import(${JSON.stringify(module)}).then(async (m) => { const r = await m.queryDns({ host: ${JSON.stringify(server)}, port: ${port} }, ${JSON.stringify(name)}, 'A', { tcp: ${tcp} }); console.log(JSON.stringify(m.describeAnswer(r.answer).records)); })`;
  const r = await n.host.exec(['node', '-e', script], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`query failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

beforeAll(async () => {
  lab = await Lab.create();
  dir = scratchDir(lab.id);
  const seg = await lab.addSegment();
  const ctlHost = await lab.addHost('ctl', { segment: seg, address: '198.18.0.1/24' });
  control = new ControlServer(ctlHost, dir);
  await control.start();
  await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
  await control.cli(['users', 'create', 'bob', '--email', 'bob@example.com']);
  const file = join(dir, 'policy.hujson');
  writeFileSync(file, POLICY);
  await control.cli(['policy', 'set', file]);
  const hosts = { a: '198.18.0.11/24', b: '198.18.0.12/24', c: '198.18.0.13/24' } as const;
  for (const [name, address] of Object.entries(hosts) as [keyof typeof hosts, string][]) {
    const host = await lab.addHost(name, { segment: seg, address });
    nodes[name] = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`t${name}`));
    original[name] = readFileSync(host.resolvConf, 'utf8');
    await nodes[name].start();
  }
  const key = (user: string) => control.cli(['preauthkey', 'create', '--user', user]);
  await nodes.a.up(control.url, await key('alice'), 'a');
  await nodes.b.up(control.url, await key('alice'), 'b');
  await nodes.c.up(control.url, await key('bob'), 'c');
}, 120_000);

afterAll(async () => {
  await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
});

describe('tailnet names (MagicDNS) on lab hosts', () => {
  it('points resolv.conf at 100.100.100.100; getent and ping work by short name and FQDN', async () => {
    await waitFor('a resolv.conf managed', async () =>
      resolvConf(nodes.a).includes('nameserver 100.100.100.100'),
    );
    expect(resolvConf(nodes.a)).toContain('search weft.internal');
    const bIp = await nodes.b.ip4();
    expect(await waitFor('b resolves on a', async () => (await lookup(nodes.a, 'b')) ?? false)).toBe(bIp);
    expect(await lookup(nodes.a, 'b.weft.internal')).toBe(bIp);
    // dig, as a person asks the resolver directly.
    const dig = await nodes.a.host.exec(
      ['dig', '+short', '+time=2', '+tries=2', '@100.100.100.100', 'b.weft.internal', 'A'],
      { timeoutMs: 15_000 },
    );
    expect(dig.stdout.trim()).toBe(bIp);
    await waitFor('a pings b by name', () => nodes.a.host.ping('b', { count: 1, deadlineS: 2 }), 20_000);
    const status = await nodes.a.status();
    expect(status.self?.dnsName).toBe('a.weft.internal');
    expect(status.peers.map((p) => p.dnsName)).toEqual(['b.weft.internal']);
    const query = await nodes.a.weft(['dns', 'query', 'b']);
    expect(query.stdout).toBe(`NOERROR\nb\tA ${bIp}\n`);
    // Over TCP, and at the IPv6 twin, as a stub resolver asks (the engine's own query client).
    expect(await ask(nodes.a, '100.100.100.100', 'b.weft.internal', true)).toEqual([`A ${bIp}`]);
    expect(await ask(nodes.a, 'fd7a:115c:a1e0::53', 'b.weft.internal', false)).toEqual([`A ${bIp}`]);
  });

  it("serves this machine only: a peer the policy lets reach every port gets no answer from a's resolver", async () => {
    const dns = JSON.parse((await nodes.a.weft(['dns', 'status', '--json'])).stdout) as {
      resolver: { addresses: string[]; port: number };
    };
    const [aIp] = dns.resolver.addresses as [string];
    // a itself is answered at that address and port; b, through the tunnel, is not (UDP nor TCP).
    expect(await ask(nodes.a, aIp, 'a.weft.internal', false, dns.resolver.port)).toEqual([`A ${aIp}`]);
    for (const tcp of [false, true]) {
      // Dropped, so the query times out (not refused, not an error of the script).
      await expect(ask(nodes.b, aIp, 'a.weft.internal', tcp, dns.resolver.port)).rejects.toThrow(
        /no (TCP )?answer from .* in \d+ ms/,
      );
    }
  });

  it('a peer the policy hides does not resolve', async () => {
    expect(await lookup(nodes.a, 'c')).toBeNull();
    const query = await nodes.a.weft(['dns', 'query', 'c.weft.internal']);
    expect(query).toMatchObject({ code: 1, stdout: 'NXDOMAIN\n' });
    // c itself knows its own name.
    await waitFor('c resolves itself', async () => (await lookup(nodes.c, 'c')) === (await nodes.c.ip4()));
  });

  it('a renamed node resolves by its new name within 1 s', async () => {
    const bIp = await nodes.b.ip4();
    await control.cli(['nodes', 'rename', 'b', 'build-box']);
    const renamed = Date.now();
    await waitFor('build-box resolves on a', async () => (await lookup(nodes.a, 'build-box')) === bIp, 5000);
    // The bound is 1 s; the figure is printed for the note, not asserted (a loaded CI machine).
    console.log(`nodes rename → new name resolved on a after ${Date.now() - renamed} ms`);
    expect(await lookup(nodes.a, 'b')).toBeNull();
  });

  it('weft down, helper SIGTERM and helper SIGKILL + restart put resolv.conf back exactly', async () => {
    const a = nodes.a;
    expect((await a.weft(['down'])).code).toBe(0);
    expect(resolvConf(a)).toBe(original.a);
    expect((await a.weft(['up', '--control-url', control.url, '--insecure-http'], 60_000)).code).toBe(0);
    await waitFor('managed again after up', async () => resolvConf(a).includes('100.100.100.100'));

    await a.stopHelper('SIGTERM');
    expect(resolvConf(a)).toBe(original.a);
    await a.startHelper();
    await waitFor('managed again after the helper restart', async () =>
      resolvConf(a).includes('100.100.100.100'),
    );

    // A crash: nothing is put back by the dying helper. With the engine stopped (it cannot reach a
    // helper to take anything down), the next helper's start puts the file back from its record.
    await a.stopHelper('SIGKILL');
    expect(resolvConf(a)).toContain('100.100.100.100');
    await a.stopDaemon();
    await a.startHelper();
    await waitFor('restored by the restarted helper', async () => resolvConf(a) === original.a);
  });
});
