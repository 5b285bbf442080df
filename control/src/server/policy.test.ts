import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALLOW_ALL } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY_TEXT } from '../cli/policy.js';
import { openSqliteDatabase } from '../db/sqlite.js';
import { Store } from '../db/store.js';
import {
  cleanupAll,
  type StreamClient,
  startTestControl,
  type TestControl,
  type TestControlOptions,
  TestMachine,
  tempDir,
} from '../testing/harness.js';

// The policy from the admin's command to the nodes' streams: `policy set` (another process, as far
// as the server knows: it learns of it through the database) and `serve --policy-file`.

afterEach(cleanupAll);

/** Dev people may reach the web server on 443 only; everyone else reaches nothing. */
const WEB_443 = `{
  // Who is who.
  "groups": { "group:dev": ["alice@example.com"], "group:eng": [] },
  "tagOwners": { "tag:web": ["group:dev"] },
  "acls": [
    { "action": "accept", "src": ["group:dev", "group:eng"], "dst": ["tag:web:443"] },
  ],
  "tests": [
    { "src": "alice@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22"] },
  ],
}
`;

const WEB_443_AND_22 = WEB_443.replace('"tag:web:443"]', '"tag:web:443", "tag:web:22"]').replace(
  '"accept": ["tag:web:443"], "deny": ["tag:web:22"]',
  '"accept": ["tag:web:443", "tag:web:22"]',
);

/** Passes validation but fails its own test (alice should not reach 22, yet the rule lets her). */
const FAILS_ITS_TEST = WEB_443.replace('"tag:web:443"]', '"tag:web:443", "tag:web:22"]');

const SYNTAX_ERROR = `{
  "acls": [
    { "action": "accept", "src": ["*"] "dst": ["*:*"] },
  ],
}`;

interface Tailnet {
  t: TestControl;
  dir: string;
  /** Alice's laptop, Bob's laptop, and the web server tagged tag:web. */
  sa: StreamClient;
  sb: StreamClient;
  sw: StreamClient;
  ids: { a: string; b: string; w: string };
  file(name: string, text: string): string;
}

async function tailnet(options: TestControlOptions = {}): Promise<Tailnet> {
  const dir = tempDir();
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const t = await startTestControl({ pollIntervalMs: 200, ...options });
  for (const [name, email] of [
    ['alice', 'alice@example.com'],
    ['bob', 'bob@example.com'],
  ]) {
    expect((await t.cli('users', 'create', name as string, '--email', email as string)).code).toBe(0);
  }
  const key = async (...args: string[]) => (await t.cli('preauthkey', 'create', ...args)).out.trim();
  const a = new TestMachine(t);
  const b = new TestMachine(t);
  const w = new TestMachine(t);
  const ids = {
    a: (await a.join('a', await key('--user', 'alice'))).id,
    b: (await b.join('b', await key('--user', 'bob'))).id,
    w: (await w.join('web', await key('--user', 'alice', '--tags', 'tag:web'))).id,
  };
  const [sa, sb, sw] = await Promise.all([a.stream(), b.stream(), w.stream()]);
  for (const s of [sa, sb, sw]) await s.until('full map', (c) => c.netmap !== null);
  return { t, dir, sa, sb, sw, ids, file };
}

/** The ports the web server's filter opens to alice's laptop. */
function webPortsFor(n: Tailnet): number[] {
  const aIp = n.sa.netmap?.self.addresses[0]?.split('/')[0] as string;
  return (n.sw.netmap?.packetFilter ?? [])
    .filter((r) => r.SrcIPs.some((s) => s === aIp || s.startsWith(`${aIp}-`) || s.endsWith(`-${aIp}`)))
    .flatMap((r) => (r.DstPorts ?? []).map((d) => d.Ports.First))
    .filter((p, i, all) => all.indexOf(p) === i)
    .sort((x, y) => x - y);
}

const inForce = (n: Tailnet, ports: number[]) => () =>
  JSON.stringify(webPortsFor(n)) === JSON.stringify(ports) &&
  n.sa.peerNames().join() === 'web' &&
  n.sb.peerNames().length === 0;

describe('policy set', () => {
  it('reaches every connected node within 1 s: peers and packet filters follow the policy', async () => {
    const n = await tailnet();
    // No policy yet: allow-all, as before policies existed.
    expect(n.sa.peerNames()).toEqual(['b', 'web']);
    expect(n.sw.netmap?.packetFilter).toEqual(ALLOW_ALL);

    const set = await n.t.cli('policy', 'set', n.file('p1.hujson', WEB_443));
    expect(set).toMatchObject({ code: 0, err: 'policy version 1 set\n' });
    const ms = await n.sw.until('the policy in force', inForce(n, [443]), 1000);
    await n.sb.until('bob sees no one', (c) => c.peerNames().length === 0, 1000);
    expect(n.sw.peerNames()).toEqual(['a']);
    expect(n.sa.netmap?.packetFilter).toEqual([]);
    console.log(`policy set → web's filter updated after ${ms} ms`);

    // Open 22 as well: only the web server's filter moves; no one's peers change.
    const before = { a: n.sa.messages.length, b: n.sb.messages.length };
    expect((await n.t.cli('policy', 'set', n.file('p2.hujson', WEB_443_AND_22))).code).toBe(0);
    await n.sw.until('22 opened', () => JSON.stringify(webPortsFor(n)) === '[22,443]', 1000);
    expect(n.sa.messages.length).toBe(before.a);
    expect(n.sb.messages.length).toBe(before.b);
  });

  it('refuses a policy with a syntax error or a failing test, with line and column; the old one stays', async () => {
    const n = await tailnet();
    const good = n.file('good.hujson', WEB_443);
    expect((await n.t.cli('policy', 'set', good)).code).toBe(0);
    await n.sw.until('the policy in force', inForce(n, [443]), 1000);
    const counts = () => [n.sa, n.sb, n.sw].map((s) => s.messages.length);
    const before = counts();

    const syntax = n.file('syntax.hujson', SYNTAX_ERROR);
    const r1 = await n.t.cli('policy', 'set', syntax);
    expect(r1.code).toBe(1);
    expect(r1.err).toContain(`${syntax}: line 3, column 40:`);
    expect(r1.err).toMatch(/policy refused; the policy in force stays \(version 1\)/);

    const failing = n.file('failing.hujson', FAILS_ITS_TEST);
    const r2 = await n.t.cli('policy', 'set', failing);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(
      /failing\.hujson: line \d+, column \d+: test failed: "alice@example.com" can reach "tag:web:22", but the test says it should not/,
    );

    const unknownUser = n.file(
      'unknown.hujson',
      WEB_443.replace('"src": ["group:dev"', '"src": ["mallory@example.com"'),
    );
    const r3 = await n.t.cli('policy', 'set', unknownUser);
    expect(r3.code).toBe(1);
    expect(r3.err).toMatch(/unknown user "mallory@example.com"/);

    expect((await n.t.cli('policy', 'get')).out).toBe(WEB_443);
    // Two polls later nothing was sent to anyone.
    await new Promise((r) => setTimeout(r, 500));
    expect(counts()).toEqual(before);
    expect(webPortsFor(n)).toEqual([443]);
  });

  it('follows users’ identity-provider groups into policy groups', async () => {
    const n = await tailnet();
    expect((await n.t.cli('policy', 'set', n.file('p.hujson', WEB_443))).code).toBe(0);
    await n.sw.until('the policy in force', inForce(n, [443]), 1000);

    // Bob signs in through the identity provider, which says he is in "eng" (as the sign-in code
    // stores it): group:eng, declared empty in the policy, now holds him.
    const store = new Store(await openSqliteDatabase(n.t.db));
    const bob = (await store.userByName('bob'))!;
    await store.updateUserClaims(bob.id, { ...bob, groups: ['/eng'] });
    await store.destroy();
    await n.sb.until('bob sees the web server', (c) => c.peerNames().join() === 'web', 1000);
    await n.sw.until('web sees bob', (c) => c.peerNames().join() === 'a,b', 1000);
  });
});

describe('policy check, get, history and compile', () => {
  it('checks without changing anything, prints the text exactly as set, and lists versions', async () => {
    const t = await startTestControl();
    await t.cli('users', 'create', 'alice', '--email', 'alice@example.com');
    const dir = tempDir();
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const good = write('good.hujson', WEB_443);

    const none = await t.cli('policy', 'get');
    expect(none).toMatchObject({ code: 0, out: DEFAULT_POLICY_TEXT });
    expect(none.err).toMatch(/no policy has been set/);
    expect((await t.cli('policy', 'history')).out).toMatch(/no policy has been set/);

    expect(await t.cli('policy', 'check', good)).toMatchObject({
      code: 0,
      out: `${good}: policy is valid; 1 test passed\n`,
    });
    const bad = write('bad.hujson', SYNTAX_ERROR);
    const checked = await t.cli('policy', 'check', bad);
    expect(checked.code).toBe(1);
    expect(checked.err).toContain(`${bad}: line 3, column 40:`);
    expect((await t.cli('policy', 'check', join(dir, 'missing.hujson'))).code).toBe(1);
    expect((await t.cli('policy', 'history', '--json')).out).toBe('[]\n');

    expect((await t.cli('policy', 'set', good)).code).toBe(0);
    expect(await t.cli('policy', 'set', good)).toMatchObject({
      code: 0,
      err: 'policy unchanged: it is already version 1\n',
    });
    expect((await t.cli('policy', 'get')).out).toBe(WEB_443);
    const history = JSON.parse((await t.cli('policy', 'history', '--json')).out);
    expect(history).toEqual([
      { version: 1, createdAt: expect.any(String), createdBy: expect.stringMatching(/^cli:/) },
    ]);
  });

  it('compiles a described tailnet without a database, and exits 1 on a refused policy', async () => {
    const { runCliCaptured } = await import('../testing/harness.js');
    const dir = tempDir();
    const policy = join(dir, 'p.hujson');
    const tailnetFile = join(dir, 't.json');
    writeFileSync(policy, WEB_443);
    writeFileSync(
      tailnetFile,
      JSON.stringify({
        users: [{ name: 'alice', email: 'alice@example.com' }],
        nodes: {
          laptop: { user: 'alice', ipv4: '100.64.0.1' },
          web: { tags: ['tag:web'], ipv4: '100.64.0.2' },
        },
      }),
    );
    const ok = await runCliCaptured(['policy', 'compile', '--policy', policy, '--tailnet', tailnetFile]);
    expect(ok.code).toBe(0);
    const out = JSON.parse(ok.out);
    expect(out.nodes.web.peers).toEqual(['laptop']);
    expect(out.nodes.web.packetFilter).toEqual([
      { SrcIPs: ['100.64.0.1'], DstPorts: [{ IP: '100.64.0.2', Ports: { First: 443, Last: 443 } }] },
    ]);
    writeFileSync(policy, FAILS_ITS_TEST);
    const refused = await runCliCaptured(['policy', 'compile', '--policy', policy, '--tailnet', tailnetFile]);
    expect(refused.code).toBe(1);
    expect(refused.out).toBe('');
    expect(refused.err).toMatch(/policy refused:\n.*line \d+, column \d+: test failed/);
  });
});

describe('serve --policy-file', () => {
  /** Valid before anyone has signed in: alice is named only in a group (a warning), not in a test. */
  const START = `{
  "groups": { "group:dev": ["alice@example.com"], "group:eng": [] },
  "tagOwners": { "tag:web": ["group:dev"] },
  "acls": [{ "action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"] }],
}
`;

  it('applies every good save within 1 s; a bad save is logged with line and column and changes nothing', async () => {
    const errors: string[] = [];
    const policyFile = join(tempDir(), 'policy.hujson');
    writeFileSync(policyFile, START);
    const log = { info() {}, warn() {}, error: (m: string) => errors.push(m) };
    const n = await tailnet({ log, config: { policyFile } });
    expect(inForce(n, [443])()).toBe(true);
    expect((await n.t.cli('policy', 'history', '--json')).out).toContain(`"createdBy": "file:${policyFile}"`);

    writeFileSync(policyFile, WEB_443_AND_22);
    const ms = await n.sw.until('22 opened', () => JSON.stringify(webPortsFor(n)) === '[22,443]', 1000);
    console.log(`policy file saved → web's filter updated after ${ms} ms`);

    // An editor's save: a new file renamed over the old one.
    writeFileSync(`${policyFile}.tmp`, WEB_443);
    renameSync(`${policyFile}.tmp`, policyFile);
    await n.sw.until('22 closed again', () => JSON.stringify(webPortsFor(n)) === '[443]', 1000);

    const counts = () => [n.sa, n.sb, n.sw].map((s) => s.messages.length);
    const before = counts();
    writeFileSync(policyFile, SYNTAX_ERROR);
    await n.sw.until(
      'the syntax error logged',
      () => errors.some((e) => e.includes('line 3, column 40')),
      1000,
    );
    expect(errors.at(-1)).toMatch(/^policy file refused; the policy in force stays:\n/);
    writeFileSync(policyFile, FAILS_ITS_TEST);
    await n.sw.until(
      'the failing test logged',
      () => errors.some((e) => /line \d+, column \d+: test failed/.test(e)),
      1000,
    );
    await new Promise((r) => setTimeout(r, 400));
    expect(counts()).toEqual(before);
    expect((await n.t.cli('policy', 'get')).out).toBe(WEB_443);
    expect(webPortsFor(n)).toEqual([443]);
  });

  it('a policy file refused at start stops the start, saying where', async () => {
    const policyFile = join(tempDir(), 'policy.hujson');
    writeFileSync(policyFile, SYNTAX_ERROR);
    await expect(startTestControl({ config: { policyFile } })).rejects.toThrow(
      `${policyFile}: line 3, column 40:`,
    );
  });
});
