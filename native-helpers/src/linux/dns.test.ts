import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DesiredState, InterfaceStatus } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../log.js';
import { OsDns, parseResolvectlDns } from './dns.js';
import { RESOLV_CONF_RECORD, ResolvConf, renderResolvConf } from './dns-resolv-conf.js';
import { RESOLVED_PROBE, resolvedApplyPlan, resolvedRevertPlan } from './dns-resolved.js';
import { renderTable } from './nft.js';
import { CommandError, type Runner } from './runner.js';

// The helper's side of tailnet DNS: the redirect of 100.100.100.100:53 to the engine's resolver
// (checked by nft itself), /etc/resolv.conf pointed at it and put back byte for byte (also by a
// helper that was killed and restarted), and the systemd-resolved command plan. systemd is not PID 1
// on these machines, so resolved cannot run here: its plan is tested as the commands it would run.

const quiet: Logger = {
  info: () => {},
  warn: () => {},
  error: () => {},
  debug: () => {},
} as unknown as Logger;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function scratch() {
  const dir = mkdtempSync(join(tmpdir(), 'weft-dns-'));
  dirs.push(dir);
  const file = join(dir, 'resolv.conf');
  const original =
    '# from DHCP\nnameserver 198.51.100.1\nnameserver fd00::1\noptions edns0 trust-ad\nsearch lan.example\n';
  writeFileSync(file, original);
  const state = join(dir, 'state');
  spawnSync('mkdir', ['-p', state]);
  return { file, original, state };
}

const DNS = {
  resolver: { ipv4: '100.64.0.1', ipv6: 'fd00::1', port: 40053 },
  searchDomains: ['weft.internal'],
};

/** A runner that records commands; `resolvectl status` fails unless resolved "runs". */
function recorder(resolved: boolean) {
  const ran: string[][] = [];
  const runner: Runner = {
    run: async (argv) => {
      ran.push([...argv]);
      if (argv[0] === 'resolvectl' && !resolved) throw new CommandError(argv, 1, 'Failed to connect to bus');
      if (argv.join(' ') === 'resolvectl --no-pager dns')
        return 'Global:\nLink 2 (eth0): 198.51.100.1 fd00::1\nLink 9 (weft0): 100.100.100.100\n';
      return '';
    },
    start: () => {
      throw new Error('not here');
    },
  };
  return { runner, ran };
}

describe('tailnet DNS on Linux', () => {
  it('redirects 100.100.100.100:53 and its IPv6 twin to the resolver, and nft accepts the table', () => {
    const state: DesiredState = {
      interface: {
        name: 'wg0',
        privateKey: Buffer.alloc(32, 1).toString('base64'),
        listenPort: 51820,
        addresses: ['100.64.0.1/32'],
        mtu: 1280,
      },
      peers: [],
      routes: [],
      dns: DNS,
    };
    const table = renderTable(state);
    // Without NAT: the query from the tunnel address becomes 100.100.100.100 → the resolver; its
    // answer, to 100.100.100.100, becomes 100.100.100.100:53 → the tunnel address. Untracked.
    expect(table?.file).toContain(
      [
        '\tchain dns4 {',
        '\t\tip saddr 100.64.0.1 udp dport 53 notrack ip saddr set 100.100.100.100 ip daddr set 100.64.0.1 udp dport set 40053 accept',
        '\t\tip saddr 100.64.0.1 udp sport 40053 notrack ip saddr set 100.100.100.100 ip daddr set 100.64.0.1 udp sport set 53 accept',
        '\t\tip saddr 100.64.0.1 tcp dport 53 notrack ip saddr set 100.100.100.100 ip daddr set 100.64.0.1 tcp dport set 40053 accept',
        '\t\tip saddr 100.64.0.1 tcp sport 40053 notrack ip saddr set 100.100.100.100 ip daddr set 100.64.0.1 tcp sport set 53 accept',
        // Nothing else to the twin leaves: not an ICMP error quoting a query to a closed port.
        '\t\tcounter drop',
        '\t}',
      ].join('\n'),
    );
    expect(table?.file).toContain(
      '\t\tip6 saddr fd00::1 udp dport 53 notrack ip6 saddr set fd7a:115c:a1e0::53 ip6 daddr set fd00::1 udp dport set 40053 accept',
    );
    // A route chain, so the rewritten packets are routed again (to lo); at raw, before any tracking.
    expect(table?.file).toContain(
      [
        '\tchain output {',
        '\t\ttype route hook output priority raw; policy accept;',
        '\t\tip daddr 100.100.100.100 jump dns4',
        '\t\tip6 daddr fd7a:115c:a1e0::53 jump dns6',
        '\t}',
      ].join('\n'),
    );
    expect(table?.file).not.toMatch(/\bnat\b|\bct\b/);
    const r = spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], {
      input: table?.file,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('points resolv.conf at the tailnet resolver in place and restores the exact bytes', async () => {
    const { file, original, state } = scratch();
    const inode = statSync(file).ino;
    const conf = new ResolvConf(file, state, quiet);
    await conf.apply(['weft.internal', 'corp.example']);
    expect(readFileSync(file, 'utf8')).toBe(renderResolvConf(['weft.internal', 'corp.example']));
    expect(readFileSync(file, 'utf8')).toMatch(
      /^# Managed by weft-helper.*\nnameserver 100\.100\.100\.100\nsearch weft\.internal corp\.example\n$/,
    );
    expect(statSync(file).ino).toBe(inode); // written in place: a bind mount or symlink target stays
    expect(await conf.originalNameservers()).toEqual(['198.51.100.1', 'fd00::1']);
    await conf.apply(['weft.internal', 'corp.example']); // idempotent
    await conf.apply(['weft.internal']);
    await conf.restore();
    expect(readFileSync(file, 'utf8')).toBe(original);
    expect(() => statSync(join(state, RESOLV_CONF_RECORD))).toThrow();
    await conf.restore(); // nothing recorded: nothing happens
    expect(readFileSync(file, 'utf8')).toBe(original);
  });

  it('a helper killed while DNS was on restores the original on its next start (the record is on disk)', async () => {
    const { file, original, state } = scratch();
    await new ResolvConf(file, state, quiet).apply(['weft.internal']);
    // A new process: nothing in memory, only the record.
    const next = new OsDns(recorder(false).runner, new ResolvConf(file, state, quiet), quiet);
    await next.release();
    expect(readFileSync(file, 'utf8')).toBe(original);
  });

  it('leaves a file someone else rewrote since, and drops the record', async () => {
    const { file, state } = scratch();
    const conf = new ResolvConf(file, state, quiet);
    await conf.apply(['weft.internal']);
    writeFileSync(file, 'nameserver 203.0.113.53\n');
    await conf.restore();
    expect(readFileSync(file, 'utf8')).toBe('nameserver 203.0.113.53\n');
    expect(() => statSync(join(state, RESOLV_CONF_RECORD))).toThrow();
  });

  it('adopts a file someone else rewrote while ours as the original, then points it at us again', async () => {
    const { file, state } = scratch();
    const conf = new ResolvConf(file, state, quiet);
    await conf.apply(['weft.internal']);
    // DHCP hands out a new resolver while Weft owns the file; the next apply takes the file back.
    writeFileSync(file, 'nameserver 203.0.113.53\n');
    await conf.apply(['weft.internal']);
    expect(readFileSync(file, 'utf8')).toBe(renderResolvConf(['weft.internal']));
    expect(await conf.originalNameservers()).toEqual(['203.0.113.53']);
    // Restore gives back the newest non-Weft file, not the one from before the first apply.
    await conf.restore();
    expect(readFileSync(file, 'utf8')).toBe('nameserver 203.0.113.53\n');
  });

  it('without resolved: resolv.conf for one interface at a time; nothing when DNS is off', async () => {
    const { file, original, state } = scratch();
    const { runner, ran } = recorder(false);
    const dns = new OsDns(runner, new ResolvConf(file, state, quiet), quiet);
    await dns.sync('wg0', null);
    expect(ran).toEqual([]);
    expect(readFileSync(file, 'utf8')).toBe(original);
    await dns.sync('wg0', DNS);
    expect(ran).toEqual([[...RESOLVED_PROBE]]);
    expect(readFileSync(file, 'utf8')).toContain('nameserver 100.100.100.100');
    expect(await dns.osResolvers('wg0')).toEqual(['198.51.100.1', 'fd00::1']);
    await expect(dns.sync('wg1', DNS)).rejects.toThrow(/wg0 already provides the OS's DNS/);
    await dns.sync('wg0', null);
    expect(readFileSync(file, 'utf8')).toBe(original);
  });

  it('with resolved: per-link DNS and the ~. route with resolvectl, reverted after; resolv.conf untouched', async () => {
    const { file, original, state } = scratch();
    const { runner, ran } = recorder(true);
    const dns = new OsDns(runner, new ResolvConf(file, state, quiet), quiet);
    await dns.sync('weft0', DNS);
    expect(ran).toEqual([
      [...RESOLVED_PROBE],
      ...resolvedApplyPlan('weft0', ['weft.internal']).map((c) => [...c]),
      ['resolvectl', '--no-pager', 'dns'],
    ]);
    expect(resolvedApplyPlan('weft0', ['weft.internal'])).toEqual([
      ['resolvectl', 'dns', 'weft0', '100.100.100.100'],
      ['resolvectl', 'domain', 'weft0', 'weft.internal', '~.'],
      ['resolvectl', 'default-route', 'weft0', 'true'],
    ]);
    // Status asks for them often: read at apply, not a process per status.
    ran.length = 0;
    expect(await dns.osResolvers('weft0')).toEqual(['198.51.100.1', 'fd00::1']);
    expect(await dns.osResolvers('weft0')).toEqual(['198.51.100.1', 'fd00::1']);
    expect(ran).toEqual([]);
    await dns.sync('weft0', null);
    expect(ran).toEqual(resolvedRevertPlan('weft0').map((c) => [...c]));
    expect(readFileSync(file, 'utf8')).toBe(original);
  });

  it('reads the other links’ servers from resolvectl dns', () => {
    expect(
      parseResolvectlDns(
        'Global: 203.0.113.53\nLink 3 (wg0): 100.100.100.100\nLink 2 (eth0): 198.51.100.1\n',
        'wg0',
      ),
    ).toEqual(['203.0.113.53', '198.51.100.1']);
    // DNS-over-TLS servers carry their name after '#'.
    expect(parseResolvectlDns('Global: 198.51.100.53#dns.example fd00::53#dns.example\n', 'wg0')).toEqual([
      '198.51.100.53',
      'fd00::53',
    ]);
  });

  it('reports at most 16 OS resolvers, addresses only, so the status always passes the engine’s schema', async () => {
    const { file, state } = scratch();
    const many = Array.from({ length: 40 }, (_, i) => `198.51.100.${i + 1}`).join(' ');
    const runner: Runner = {
      run: async (argv) =>
        argv.join(' ') === 'resolvectl --no-pager dns' ? `Link 2 (eth0): bogus ${many}\n` : '',
      start: () => {
        throw new Error('not here');
      },
    };
    const dns = new OsDns(runner, new ResolvConf(file, state, quiet), quiet);
    await dns.sync('weft0', DNS);
    const resolvers = await dns.osResolvers('weft0');
    expect(resolvers).toEqual(Array.from({ length: 16 }, (_, i) => `198.51.100.${i + 1}`));
    expect(InterfaceStatus.shape.osResolvers.safeParse(resolvers).success).toBe(true);
  });
});
