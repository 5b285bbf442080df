import { DNS_DEFAULTS } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, TestMachine } from '../testing/harness.js';
import { TsTestClient } from '../testing/tailscale-client.js';

// The tailnet's DNS settings: `weft-control dns get|set` against the database, refused input that
// changes nothing, and a running server that streams new settings and renamed nodes to Weft nodes
// and Tailscale clients.

afterEach(cleanupAll);

describe('DNS settings', () => {
  it('dns get shows the defaults; dns set changes only what it is given', async () => {
    const t = await startTestControl();
    expect(JSON.parse((await t.cli('dns', 'get')).out)).toEqual(DNS_DEFAULTS);
    const set = await t.cli(
      'dns',
      'set',
      '--nameservers',
      '198.51.100.53, 203.0.113.53:5353',
      '--split-dns',
      'corp.example=198.51.100.54;lab.example=[fd00::53]:53,198.51.100.55',
      '--search-domains',
      'corp.example',
      '--extra-records',
      'grafana.corp.example=198.51.100.7,db.corp.example=fd00::7',
    );
    expect(set.code).toBe(0);
    const expected = {
      ...DNS_DEFAULTS,
      nameservers: ['198.51.100.53', '203.0.113.53:5353'],
      splitDns: { 'corp.example': ['198.51.100.54'], 'lab.example': ['[fd00::53]:53', '198.51.100.55'] },
      searchDomains: ['corp.example'],
      extraRecords: [
        { name: 'grafana.corp.example', type: 'A', value: '198.51.100.7' },
        { name: 'db.corp.example', type: 'AAAA', value: 'fd00::7' },
      ],
    };
    expect(JSON.parse(set.out)).toEqual(expected);
    expect((await t.cli('dns', 'set', '--magic-dns', 'off')).code).toBe(0);
    expect(JSON.parse((await t.cli('dns', 'get')).out)).toEqual({ ...expected, magicDns: false });
  });

  it('refuses bad settings with a clear error and changes nothing', async () => {
    const t = await startTestControl();
    const before = (await t.cli('dns', 'get')).out;
    const cases: [string[], RegExp][] = [
      [['--nameservers', '198.51.100.300'], /nameservers\.0: must be an IP address/],
      // The resolver's own addresses: forwarding there loops back into the resolver.
      [
        ['--nameservers', '198.51.100.53,100.100.100.100'],
        /nameservers\.1: must not be the tailnet resolver/,
      ],
      [['--nameservers', '[fd7a:115c:a1e0::53]:53'], /nameservers\.0: must not be the tailnet resolver/],
      [['--split-dns', 'corp.example=fd7a:115c:a1e0::53'], /splitDns\.corp\.example\.0: must not be/],
      [['--base-domain', 'Corp_Example'], /baseDomain: must be a domain name/],
      [['--split-dns', 'corp.example'], /must be DOMAIN=NAMESERVER/],
      [['--split-dns', 'corp.example=nope'], /splitDns\.corp\.example\.0: must be an IP address/],
      [['--extra-records', 'grafana=not-an-ip'], /must be NAME=IP-ADDRESS/],
      [['--magic-dns', 'maybe'], /--magic-dns takes on or off/],
      [[], /give at least one setting/],
    ];
    for (const [args, why] of cases) {
      const r = await t.cli('dns', 'set', ...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err).toMatch(why);
    }
    expect((await t.cli('dns', 'get')).out).toBe(before);
    // A DNS server on a peer's tailnet address is a fine upstream (it is reached through the tunnel).
    expect((await t.cli('dns', 'set', '--nameservers', '100.64.0.7')).code).toBe(0);
  });

  it('streams new settings and renamed nodes to connected nodes', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    await a.join('a', key);
    await new TestMachine(t).join('b', key);
    const sa = await a.stream();
    await sa.until('full map', (c) => c.netmap !== null);
    expect(sa.netmap?.dns).toEqual(DNS_DEFAULTS);

    expect((await t.cli('dns', 'set', '--base-domain', 'tailnet.example')).code).toBe(0);
    await sa.until('new base domain', (c) => c.netmap?.dns?.baseDomain === 'tailnet.example');
    // The settings travel as a delta of their own (other deltas, such as this node's presence, may
    // come around it).
    expect(sa.messages.find((m) => m.type === 'delta' && 'dns' in m)).toEqual({
      type: 'delta',
      dns: { ...DNS_DEFAULTS, baseDomain: 'tailnet.example' },
    });

    expect((await t.cli('nodes', 'rename', 'b', 'build-box')).code).toBe(0);
    await sa.until('renamed peer', (c) => c.peerNames().includes('build-box'));
    expect(sa.peerNames()).toEqual(['build-box']);
    const taken = await t.cli('nodes', 'rename', 'build-box', 'a');
    expect(taken).toMatchObject({ code: 1, err: expect.stringMatching(/another node is named a/) });
    expect((await t.cli('nodes', 'rename', 'build-box', 'Bad_Name')).err).toMatch(/invalid node name/);
  });

  it('sends Tailscale clients a DNSConfig and names under the base domain', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const client = new TsTestClient(t.control.url);
    await client.register({ Auth: { AuthKey: key } }, 'ts-a');
    await new TestMachine(t).join('b', key);
    await t.cli('dns', 'set', '--nameservers', '198.51.100.53', '--split-dns', 'corp.example=198.51.100.54');
    const map = await client.map({});
    await map.until('b', (m) => m.peerNamed('b') !== undefined);
    // The CLI's commit reaches the server through its change feed (a poll), which may come after
    // the first map: wait for the settings, then check the DNSConfig that carried them.
    const lastDns = () =>
      (map.messages.findLast((m) => 'DNSConfig' in (m as object)) as Record<string, unknown> | undefined)
        ?.DNSConfig;
    await map.until('the new resolvers', () => JSON.stringify(lastDns() ?? null).includes('198.51.100.53'));
    expect(lastDns()).toEqual({
      Resolvers: [{ Addr: '198.51.100.53' }],
      Routes: { 'corp.example': [{ Addr: '198.51.100.54' }] },
      Domains: ['weft.internal'],
      Proxied: true,
      ExtraRecords: [],
    });
    expect(map.peerNamed('b')?.Name).toBe('b.weft.internal.');

    await t.cli('dns', 'set', '--base-domain', 'tailnet.example');
    await map.until('renamed domain', (m) => m.peerNamed('b')?.Name === 'b.tailnet.example.');
    const last = map.messages.findLast((m) => 'DNSConfig' in (m as object)) as Record<string, unknown>;
    expect(last.DNSConfig).toMatchObject({ Domains: ['tailnet.example'] });
    expect((last.Node as { Name: string }).Name).toBe('ts-a.tailnet.example.');
  });
});
