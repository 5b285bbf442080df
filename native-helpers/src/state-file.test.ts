import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from './log.js';
import { type OwnedState, StateFile } from './state-file.js';

let dir: string;
const logged: string[] = [];
const log: Logger = {
  info: (m) => logged.push(m),
  warn: (m) => logged.push(`warn: ${m}`),
  error: (m) => logged.push(`error: ${m}`),
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-state-file-'));
  logged.length = 0;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const owned = (bootId = 'boot-1'): OwnedState => ({
  version: 1,
  bootId,
  interfaces: { wg0: { created: true }, wgx: { created: false } },
  firewalls: ['wg0'],
  exitOwner: 'wg0',
  sysctls: {
    holders: { 'net.ipv4.conf.all.src_valid_mark': ['wg0'] },
    saved: { 'net.ipv4.conf.all.src_valid_mark': { set: '1', old: '0' } },
  },
  socketBuffers: { holders: ['wg0'], saved: { 'net.core.rmem_max': '212992' } },
});

describe('StateFile', () => {
  it('creates its directory 0700 and the file 0600, and reads back what it wrote', async () => {
    const file = new StateFile(join(dir, 'state'), log);
    await file.prepare();
    expect((await stat(join(dir, 'state'))).mode & 0o777).toBe(0o700);
    await file.write(owned());
    expect((await stat(file.path)).mode & 0o777).toBe(0o600);
    expect(await file.read('boot-1')).toEqual(owned());
  });

  it('replaces the file by renaming a complete new one over it, leaving no temporary file', async () => {
    const file = new StateFile(dir, log);
    await file.write(owned());
    const before = await stat(file.path);
    await file.write({ ...owned(), exitOwner: null });
    // A new inode: readers see the old file or the new one, never half of either.
    expect((await stat(file.path)).ino).not.toBe(before.ino);
    expect(await readdir(dir)).toEqual(['owned.json']);
    expect(JSON.parse(await readFile(file.path, 'utf8')).exitOwner).toBeNull();
    // The same content again writes nothing.
    const same = await stat(file.path);
    await file.write({ ...owned(), exitOwner: null });
    expect((await stat(file.path)).ino).toBe(same.ino);
  });

  it('has nothing to say without a file, or with one from another boot (which it removes)', async () => {
    const file = new StateFile(dir, log);
    expect(await file.read('boot-1')).toBeNull();
    await file.write(owned('boot-0'));
    expect(await file.read('boot-1')).toBeNull();
    expect(await readdir(dir)).toEqual([]);
  });

  it('trusts nothing of a file that does not validate, and moves it aside', async () => {
    const file = new StateFile(dir, log);
    const bad = { ...owned(), sysctls: { holders: { 'kernel.core_pattern': ['wg0'] }, saved: {} } };
    await writeFile(file.path, JSON.stringify(bad));
    expect(await file.read('boot-1')).toBeNull();
    expect(await readdir(dir)).toEqual(['owned.json.invalid']);
    expect(logged.join('\n')).toContain('sysctls.holders.kernel.core_pattern: Invalid key in record');
    await writeFile(file.path, '{"version":1,');
    expect(await file.read('boot-1')).toBeNull();
    expect(logged.at(-1)).toMatch(/is not a valid state file \(not JSON: /);
  });

  it('refuses a state directory others can write into', async () => {
    const open = join(dir, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    await expect(new StateFile(open, log).prepare()).rejects.toThrow(
      `${open} is writable by its group or others (mode 0777)`,
    );
  });
});
