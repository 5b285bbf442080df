import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildControl, controlBin, serveProcess } from '../testing/control-process.js';
import { cleanupAll, type StreamClient, type TestControl, TestMachine, tempDir } from '../testing/harness.js';

// The real `weft-control` binary, as an admin runs it: a server process and admin processes sharing
// one database file. Builds control first (a no-op when the build is current).

const bin = controlBin;

beforeAll(() => {
  buildControl();
}, 120_000);
afterEach(cleanupAll);

function run(args: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, out, err })));
}

const serve = (cwd: string) => serveProcess([], cwd);

describe('the weft-control binary', () => {
  it('serves, takes admin commands from other processes at once, and shuts down cleanly on SIGTERM', async () => {
    const cwd = tempDir();
    const server = await serve(cwd);
    try {
      // Admin commands with the server's defaults, from the same directory: the same database.
      expect((await run(['users', 'create', 'alice'], cwd)).code).toBe(0);
      const created = await run(['preauthkey', 'create', '--user', 'alice', '--reusable'], cwd);
      expect(created.code).toBe(0);
      expect(created.out).toMatch(/^weftkey-[A-Za-z0-9_-]{43}\n$/);
      const key = created.out.trim();

      const { publicKey } = (await (await fetch(`${server.url}/machine/key`)).json()) as {
        publicKey: string;
      };
      const t = { control: { url: server.url }, controlPublicKey: publicKey } as unknown as TestControl;
      const a = new TestMachine(t);
      const b = new TestMachine(t);
      await a.join('a', key);
      await b.join('b', key);
      const sa: StreamClient = await a.stream();
      const sb: StreamClient = await b.stream();
      await sa.until('a sees b', (c) => c.peerNames().includes('b'));

      const listed = JSON.parse((await run(['nodes', 'list', '--json'], cwd)).out) as { name: string }[];
      expect(listed.map((n) => n.name)).toEqual(['a', 'b']);

      const deleted = await run(['nodes', 'delete', 'b'], cwd);
      expect(deleted.code).toBe(0);
      await sa.until('b gone from a', (c) => !c.peerNames().includes('b'), 2000);
      await sb.until('b logged out', (c) => c.messages.at(-1)?.type === 'logout' && c.closed !== null, 2000);

      server.child.kill('SIGTERM');
      const [code] = await once(server.child, 'exit');
      expect(code).toBe(0);
      await sa.until('a’s stream closed by shutdown', (c) => c.closed !== null);
      expect(server.logs()).toMatch(/stopped/);
    } finally {
      server.child.kill('SIGKILL');
    }
  });

  it('exits 1 with a clear message on bad input', async () => {
    const cwd = tempDir();
    const bad = await run(['serve', '--listen', 'nowhere'], cwd);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/--listen: must be HOST:PORT/);
    const noUser = await run(['preauthkey', 'create', '--user', 'nobody'], cwd);
    expect(noUser.code).toBe(1);
    expect(noUser.out).toBe('');
    expect(noUser.err).toMatch(/no user named nobody/);
  });
});
