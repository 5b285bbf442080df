import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkPolicy } from './check.js';
import { runCompileCommand } from './compile-command.js';
import { formatIssue } from './errors.js';
import { parseTailnet } from './tailnet.js';

const tailnet = parseTailnet({
  users: [
    { name: 'alice', email: 'alice@example.com' },
    { name: 'bob', email: 'bob@example.com' },
  ],
  nodes: {
    laptop: { user: 'alice', ipv4: '100.64.0.1', ipv6: 'fd7a:115c:a1e0::1' },
    phone: { user: 'bob', ipv4: '100.64.0.2' },
    web: { tags: ['tag:web'], ipv4: '100.64.0.3' },
  },
});

const policy = (tests: string, extra = '') => `{
  "groups": { "group:dev": ["alice@example.com", "bob@example.com"] },
  "tagOwners": { "tag:web": ["group:dev"], "tag:db": ["group:dev"] },
  "hosts": { "websrv": "100.64.0.3" },
  "acls": [
    { "action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"] },
    { "action": "accept", "src": ["alice@example.com"], "dst": ["tag:web:22", "tag:db:5432"], "proto": "tcp" },
    ${extra}
  ],
  "tests": [${tests}],
}`;

const messages = (text: string) => {
  const r = checkPolicy(text, tailnet);
  return r.ok ? [] : r.issues.map(formatIssue);
};

describe('a policy without tests', () => {
  it('is checked without looking at any node (there is nothing to run them against)', () => {
    const nodes = new Proxy(tailnet.nodes, {
      ownKeys: () => {
        throw new Error('a node was looked at');
      },
      get: () => {
        throw new Error('a node was looked at');
      },
    });
    expect(checkPolicy(policy(''), { ...tailnet, nodes })).toMatchObject({ ok: true });
    expect(() =>
      checkPolicy(policy('{ "src": "alice@example.com", "accept": ["tag:web:443"] }'), { ...tailnet, nodes }),
    ).toThrow(/looked at/);
  });
});

describe('checkPolicy', () => {
  it('accepts a policy whose tests hold, before any node of a tag exists', () => {
    expect(
      messages(
        policy(`
      { "src": "group:dev", "accept": ["tag:web:443", "websrv:443"], "deny": ["tag:web:80"] },
      { "src": "alice@example.com", "accept": ["tag:web:22", "tag:db:5432"], "proto": "tcp" },
      { "src": "100.64.0.2", "accept": ["websrv:443"], "deny": ["websrv:22", "tag:db:5432"] },`),
      ),
    ).toEqual([]);
  });

  it('refuses a policy whose tests fail, naming the test and the member that fails', () => {
    expect(
      messages(
        policy(`
      { "src": "group:dev", "accept": ["tag:web:22"] },
      { "src": "alice@example.com", "deny": ["tag:web:443"], "accept": ["tag:web:22"], "proto": "udp" },`),
      ),
    ).toEqual([
      'line 11, column 40: test failed: "group:dev" (member bob) cannot reach "tag:web:22", but the test says it should',
      'line 12, column 46: test failed: "alice@example.com" can reach "tag:web:443" over protocol 17, but the test says it should not',
      'line 12, column 73: test failed: "alice@example.com" cannot reach "tag:web:22" over protocol 17, but the test says it should',
    ]);
  });

  it('refuses users the tailnet does not have in rules and tests, and warns in declarations', () => {
    const text = `{
  "groups": { "group:new": ["carol@example.com"] },
  "acls": [{ "action": "accept", "src": ["alicee@example.com"], "dst": ["*:*"] }],
  "tests": [{ "src": "ghost@example.com", "accept": ["laptop:22"] }],
}`;
    const r = checkPolicy(text.replace('laptop:22', '100.64.0.1:22'), tailnet);
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.issues.map(formatIssue)).toEqual([
      'line 3, column 42: unknown user "alicee@example.com": no such user in the tailnet',
      'line 4, column 22: unknown user "ghost@example.com": no such user in the tailnet',
    ]);
    expect(r.warnings.map(formatIssue)).toEqual([
      'line 2, column 29: unknown user "carol@example.com": no such user in the tailnet yet',
    ]);
  });

  it('returns parse errors with their positions', () => {
    expect(messages('{\n  "acls": [,]\n}')).toEqual(['line 2, column 12: syntax error: expected a value']);
  });
});

describe('runCompileCommand', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-policy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };
  const tailnetFile = file('tailnet.json', JSON.stringify(tailnet));

  it('prints every node with its filter, peers and routes', () => {
    const policyFile = file('ok.hujson', policy(''));
    const result = runCompileCommand({ policyFile, tailnetFile });
    expect(result).toMatchObject({ exitCode: 0, stderr: '' });
    const out = JSON.parse(result.stdout);
    expect(Object.keys(out.nodes).sort()).toEqual(['laptop', 'phone', 'web']);
    expect(out.nodes.laptop).toEqual({ packetFilter: [], peers: ['web'], peerRoutes: {} });
    expect(out.nodes.web.peers).toEqual(['laptop', 'phone']);
    expect(out.nodes.web.packetFilter).toContainEqual({
      SrcIPs: ['100.64.0.1', 'fd7a:115c:a1e0::1'],
      DstPorts: [{ IP: '100.64.0.3', Ports: { First: 22, Last: 22 } }],
      IPProto: [6],
    });
  });

  it('exits 1 with the reasons on stderr when the policy is refused', () => {
    const policyFile = file(
      'bad.hujson',
      policy('', '{ "action": "accept", "src": ["tag:nope"], "dst": ["*:*"] },'),
    );
    const result = runCompileCommand({ policyFile, tailnetFile });
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(
      `policy refused:\n${policyFile}: line 8, column 35: src: tag "tag:nope" is not declared in tagOwners\n`,
    );
  });

  it('exits 2 when an input cannot be read', () => {
    const result = runCompileCommand({ policyFile: join(dir, 'missing.hujson'), tailnetFile });
    expect(result.exitCode).toBe(2);
    const badTailnet = file(
      'bad-tailnet.json',
      JSON.stringify({ users: [], nodes: { x: { ipv4: '1.2.3' } } }),
    );
    const bad = runCompileCommand({ policyFile: file('p.hujson', '{}'), tailnetFile: badTailnet });
    expect(bad).toMatchObject({ exitCode: 2, stdout: '' });
    expect(bad.stderr).toContain('nodes.x.ipv4: not a valid IPv4 address');
  });
});
