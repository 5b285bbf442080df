import { spawnSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lookupGroupId } from './group.js';
import { listenUnix } from './socket.js';

let dir: string;
const servers: net.Server[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-socket-test-'));
});
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  await rm(dir, { recursive: true, force: true });
});

async function listen(path: string, gid?: number): Promise<net.Server> {
  const server = net.createServer();
  servers.push(server);
  await listenUnix(server, path, gid);
  return server;
}

describe('listenUnix', () => {
  it('replaces a stale socket left by a helper that died', async () => {
    const path = join(dir, 'helper.sock');
    // A process that dies by SIGKILL leaves its socket file behind.
    const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', script]);
    expect((await lstat(path)).isSocket()).toBe(true);
    await listen(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('refuses to start while another helper answers on the socket', async () => {
    const path = join(dir, 'helper.sock');
    await listen(path);
    await expect(listen(path)).rejects.toThrow(`another weft-helper is already listening on ${path}`);
  });

  it('refuses to replace something that is not a socket', async () => {
    const path = join(dir, 'helper.sock');
    await writeFile(path, 'precious');
    await expect(listen(path)).rejects.toThrow(`${path} exists and is not a socket; refusing to replace it`);
  });

  it('gives a group read-write access (0660) when asked', async () => {
    const path = join(dir, 'helper.sock');
    const gid = process.getgid?.() ?? 0;
    await listen(path, gid);
    const s = await stat(path);
    expect(s.mode & 0o777).toBe(0o660);
    expect(s.gid).toBe(gid);
  });
});

describe('the socket directory (safe-dir)', () => {
  it('refuses a directory its group can write (the old /run/weft), and binds nothing there', async () => {
    const run = join(dir, 'run');
    await mkdir(run);
    await chmod(run, 0o770);
    await expect(listen(join(run, 'helper.sock'))).rejects.toThrow(
      `${run} is writable by its group or others (mode 0770); the socket needs a directory only its owner can write into`,
    );
    expect(await readdir(run)).toEqual([]);
  });

  it("refuses a symlink in the directory's place", async () => {
    const real = join(dir, 'real');
    await mkdir(real);
    await symlink(real, join(dir, 'link'));
    await expect(listen(join(dir, 'link', 'helper.sock'))).rejects.toThrow(
      `${join(dir, 'link')} is a symlink; the socket directory must be a real directory`,
    );
  });

  // Giving the directory away needs root; the machines that run the suite run it as root.
  it.runIf(process.getuid?.() === 0)('refuses a directory someone else owns', async () => {
    const theirs = join(dir, 'theirs');
    await mkdir(theirs);
    await chown(theirs, 65534, 65534);
    await expect(listen(join(theirs, 'helper.sock'))).rejects.toThrow(
      `${theirs} is owned by uid 65534, not 0; refusing to put the socket there`,
    );
  });

  it('refuses a directory under one others can write without the sticky bit; sticky is fine', async () => {
    const open = join(dir, 'open');
    await mkdir(join(open, 'run'), { recursive: true });
    await chmod(open, 0o777);
    await expect(listen(join(open, 'run', 'helper.sock'))).rejects.toThrow(
      `${open}, above ${join(open, 'run')}, is writable by its group or others (mode 0777) and not sticky`,
    );
    await chmod(open, 0o1777);
    await listen(join(open, 'run', 'helper.sock'));
  });
});

describe('lookupGroupId', () => {
  it('finds a group by name in a group file, and names a missing one', async () => {
    const file = join(dir, 'group');
    await writeFile(file, 'root:x:0:\n# comment\nweft:x:998:alice,bob\nweftish:x:997:\n');
    expect(await lookupGroupId('weft', file)).toBe(998);
    await expect(lookupGroupId('wef', file)).rejects.toThrow(`group "wef" is not in ${file}`);
  });
});
