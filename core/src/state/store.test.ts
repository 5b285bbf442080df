import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publicKeyOf } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from './atomic.js';
import { LISTEN_PORT_MAX, LISTEN_PORT_MIN } from './schemas.js';
import { StateStore } from './store.js';

let root: string;
const mode = async (p: string) => (await stat(p)).mode & 0o777;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'weft-store-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('state store', () => {
  it('creates the state dir 0700 and tightens a looser existing one', async () => {
    const store = new StateStore(join(root, 'a', 'state'));
    await store.init();
    expect(await mode(store.dir)).toBe(0o700);
    const loose = join(root, 'loose');
    await mkdir(loose, { mode: 0o755 });
    await chmod(loose, 0o755);
    await new StateStore(loose).init();
    expect(await mode(loose)).toBe(0o700);
  });

  it('keeps keys in 0600 files and returns the same key on the next load', async () => {
    const store = new StateStore(join(root, 'state'));
    await store.init();
    const machine = await store.loadOrCreateKey('machine');
    const node = await store.loadOrCreateKey('node');
    expect(machine.publicKey).toBe(publicKeyOf(machine.privateKey));
    expect(node.privateKey).not.toBe(machine.privateKey);
    expect(await mode(join(store.dir, 'machine.key'))).toBe(0o600);
    expect(await mode(join(store.dir, 'node.key'))).toBe(0o600);
    expect((await readFile(join(store.dir, 'node.key'), 'utf8')).trim()).toBe(node.privateKey);
    expect(await store.loadOrCreateKey('node')).toEqual(node);
    await store.deleteKey('node');
    expect(await store.loadKey('node')).toBeNull();
  });

  it('refuses a corrupt key file instead of replacing it', async () => {
    const store = new StateStore(join(root, 'state'));
    await store.init();
    await writeFile(join(store.dir, 'machine.key'), 'not a key\n');
    await expect(store.loadOrCreateKey('machine')).rejects.toThrow(/does not hold a valid key/);
  });

  it('creates prefs once with a random listen port in range, and validates them on read', async () => {
    const store = new StateStore(join(root, 'state'));
    await store.init();
    const prefs = await store.loadPrefs();
    expect(prefs.listenPort).toBeGreaterThanOrEqual(LISTEN_PORT_MIN);
    expect(prefs.listenPort).toBeLessThanOrEqual(LISTEN_PORT_MAX);
    expect(prefs).toMatchObject({ controlUrl: null, hostname: null, wantRunning: false });
    expect(await store.loadPrefs()).toEqual(prefs);
    expect(await mode(join(store.dir, 'prefs.json'))).toBe(0o600);

    await writeFile(join(store.dir, 'prefs.json'), JSON.stringify({ ...prefs, wantRunning: 'yes' }));
    await expect(store.loadPrefs()).rejects.toThrow(/prefs\.json is invalid/);
    await writeFile(join(store.dir, 'prefs.json'), '{');
    await expect(store.loadPrefs()).rejects.toThrow(/not valid JSON/);
  });

  it('round-trips the login record and the netmap cache', async () => {
    const store = new StateStore(join(root, 'state'));
    await store.init();
    expect(await store.loadLogin()).toBeNull();
    const node = await store.loadOrCreateKey('node');
    const login = {
      controlUrl: 'http://198.18.0.1:8080',
      nodePublicKey: node.publicKey,
      authorizedAt: new Date().toISOString(),
    };
    await store.saveLogin(login);
    expect(await store.loadLogin()).toEqual(login);
    await store.deleteLogin();
    expect(await store.loadLogin()).toBeNull();
    expect(await store.loadNetmap()).toBeNull();
  });
});

describe('atomic writes', () => {
  it('replaces content whole, with the mode given, leaving no temp files', async () => {
    const file = join(root, 'f.json');
    await writeFileAtomic(file, 'one');
    await writeFileAtomic(file, 'two');
    expect(await readFile(file, 'utf8')).toBe('two');
    expect(await mode(file)).toBe(0o600);
    expect(await readdir(root)).toEqual(['f.json']);
  });

  it('leaves the old file untouched when the write cannot complete', async () => {
    // A directory in the way makes the final rename fail after the temp file was written.
    const target = join(root, 'busy');
    await mkdir(join(target, 'inner'), { recursive: true });
    await expect(writeFileAtomic(target, 'new')).rejects.toThrow();
    expect(await readdir(root)).toEqual(['busy']);
    expect(await readdir(target)).toEqual(['inner']);
  });
});
