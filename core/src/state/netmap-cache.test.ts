import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type NetMap } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log/logger.js';
import { nodeView } from '../testing/standin-control.js';
import { NetmapCache } from './netmap-cache.js';
import type { Login } from './schemas.js';
import { StateStore } from './store.js';

let root: string;
let store: StateStore;
let warnings: string[];
let cache: NetmapCache;

const login: Login = {
  controlUrl: 'http://198.18.0.1:8080/',
  nodePublicKey: generateKeyPair().publicKey,
  authorizedAt: new Date().toISOString(),
};
const netmap: NetMap = {
  self: nodeView(1, login.nodePublicKey),
  peers: [nodeView(2, generateKeyPair().publicKey)],
  packetFilter: [],
  tailnetRanges: ['100.64.0.0/10'],
};
const TOKEN = '1.1.0123456789abcdef';

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'weft-netmap-cache-'));
  store = new StateStore(join(root, 'state'));
  await store.init();
  warnings = [];
  cache = new NetmapCache(store, { ...silentLogger, warn: (m: string) => warnings.push(m) });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('netmap cache', () => {
  it('keeps the map and its token as one record, and a map without a token as none', async () => {
    cache.save(login, { netmap, mapToken: TOKEN });
    await cache.flush();
    expect(await cache.load(login)).toEqual({ netmap, mapToken: TOKEN });
    cache.save(login, { netmap, mapToken: null });
    await cache.flush();
    expect(await cache.load(login)).toEqual({ netmap, mapToken: null });
    expect(warnings).toEqual([]);
  });

  it('ignores a cache of the older format (a bare netmap), saying so', async () => {
    await writeFile(join(store.dir, 'netmap.json'), JSON.stringify(netmap));
    expect(await cache.load(login)).toBeNull();
    expect(warnings).toEqual([
      `ignoring the cached netmap: ${join(store.dir, 'netmap.json')} is invalid: not a cache of this format (an older or newer weft wrote it)`,
    ]);
  });

  it('ignores a corrupt cache or a bad token, saying so', async () => {
    await writeFile(join(store.dir, 'netmap.json'), '{"format":2,');
    expect(await cache.load(login)).toBeNull();
    cache.save(login, { netmap, mapToken: 'not a token!' });
    await cache.flush();
    expect(await cache.load(login)).toBeNull();
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/ignoring the cached netmap: .* is not valid JSON/);
    expect(warnings[1]).toMatch(/ignoring the cached netmap: .* is invalid/);
  });

  it('ignores the map of another control or another node key', async () => {
    cache.save(login, { netmap, mapToken: TOKEN });
    await cache.flush();
    expect(await cache.load({ ...login, controlUrl: 'http://198.18.0.2:8080/' })).toBeNull();
    expect(await cache.load({ ...login, nodePublicKey: generateKeyPair().publicKey })).toBeNull();
    expect(warnings).toHaveLength(2);
    expect(warnings.every((w) => w.startsWith('ignoring the cached netmap: it is of another login'))).toBe(
      true,
    );
  });

  it('delete forgets a map saved just before it (logout)', async () => {
    cache.save(login, { netmap, mapToken: TOKEN });
    await cache.delete();
    expect(await cache.load(login)).toBeNull();
  });
});
