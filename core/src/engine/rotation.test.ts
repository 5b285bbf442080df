import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, publicKeyOf, type RegisterRequest } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../state/atomic.js';
import { type EngineFixture, engineFixture } from '../testing/engine-fixture.js';
import { waitUntil } from '../testing/wait.js';
import type { Engine } from './engine.js';
import type { EngineOptions } from './options.js';

// Automatic node key rotation against the stand-in control, which checks the proof of the old key
// exactly as control does (verifyNodeKeyRotationProof with its own private key).

let fx: EngineFixture;

beforeEach(async () => {
  fx = await engineFixture();
});

afterEach(async () => {
  await fx.cleanup();
});

const readKey = async (name: string) => (await readFile(join(fx.stateDir, name), 'utf8')).trim();
const readLogin = async () => JSON.parse(await readFile(join(fx.stateDir, 'login.json'), 'utf8'));
const rotations = (): RegisterRequest[] => fx.control.registrations.filter((r) => r.oldNodeKey !== undefined);
const machineKey = () => [...fx.control.nodes.keys()][0] as string;
/** The private keys the helper was told to use, in order, without repeats. */
const appliedKeys = () =>
  fx.helper.requests
    .flatMap((r) => (r.op === 'apply' ? [r.state.interface.privateKey] : []))
    .filter((k, i, all) => i === 0 || all[i - 1] !== k);

async function running(over: Partial<EngineOptions>): Promise<Engine> {
  const engine = await fx.startEngine(over);
  await engine.up({ controlUrl: fx.control.url, authKey: 'tskey-good', hostname: 'laptop' });
  return engine;
}

describe('node key rotation (stand-in control)', () => {
  it('rotates on schedule with a valid proof, then WireGuard and the state folder use the new key', async () => {
    const engine = await running({ keyRotationMs: 400 });
    const first = await readKey('node.key');
    // Not before the key is due.
    expect(rotations()).toHaveLength(0);
    await waitUntil('a rotation', () => rotations().length === 1, 3_000);
    await waitUntil('the new key applied', () => fx.helper.state?.interface.privateKey !== first);

    const [rot] = rotations();
    const second = await readKey('node.key');
    expect(rot).toMatchObject({
      nodeKey: publicKeyOf(second),
      oldNodeKey: publicKeyOf(first),
      hostname: 'laptop',
    });
    expect(rot).not.toHaveProperty('authKey');
    // Control checked the proof and now knows the new key; the node kept its identity.
    expect(fx.control.nodes.get(machineKey())?.req.nodeKey).toBe(publicKeyOf(second));
    expect(appliedKeys()).toEqual([first, second]);
    expect((await readLogin()).nodePublicKey).toBe(publicKeyOf(second));
    await expect(stat(join(fx.stateDir, 'node-next.key'))).rejects.toThrow();
    const st = await engine.status();
    expect(st).toMatchObject({ backendState: 'Running', health: [], self: { name: 'laptop' } });
    // The interface stayed up throughout: only the key changed.
    const ops = fx.helper.ops();
    expect(ops.slice(ops.indexOf('apply'))).not.toContain('down');

    // And again one interval later, from the key it moved to.
    await waitUntil('a second rotation', () => rotations().length === 2, 3_000);
    expect(rotations()[1]?.oldNodeKey).toBe(publicKeyOf(second));
  });

  it('keeps the old key while control refuses (403 bad-node-key-proof), says so, retries, and recovers', async () => {
    fx.control.refuseRotation = [
      403,
      { error: { code: 'bad-node-key-proof', message: 'the proof of the old node key is missing or wrong' } },
    ];
    const engine = await running({ keyRotationMs: 200 });
    const first = await readKey('node.key');
    await waitUntil('refusal in health', () =>
      engine.snapshot().health.some((h) => h.includes('node key rotation failed')),
    );
    expect(engine.snapshot().health).toEqual([
      'node key rotation failed (the old key stays in use): control refused registration: the proof of the old node key is missing or wrong',
    ]);
    expect(engine.backendState()).toBe('Running');
    expect(await readKey('node.key')).toBe(first);
    expect(fx.helper.state?.interface.privateKey).toBe(first);
    await waitUntil('retried', () => rotations().length >= 2, 3_000);
    // Every attempt offered the same new key (kept in node-next.key).
    expect(new Set(rotations().map((r) => r.nodeKey)).size).toBe(1);

    fx.control.refuseRotation = null;
    await waitUntil('rotated', () => fx.helper.state?.interface.privateKey !== first, 3_000);
    expect(engine.snapshot().health).toEqual([]);
    expect(publicKeyOf(await readKey('node.key'))).toBe(rotations().at(-1)?.nodeKey);
  });

  it('reports 409 old-node-key-mismatch and keeps its key', async () => {
    const engine = await running({ keyRotationMs: 200 });
    const first = await readKey('node.key');
    const known = fx.control.nodes.get(machineKey());
    if (known) known.req = { ...known.req, nodeKey: generateKeyPair().publicKey };
    await waitUntil('mismatch in health', () =>
      engine.snapshot().health.some((h) => h.includes('not this node’s current key')),
    );
    expect(await readKey('node.key')).toBe(first);
    expect(fx.helper.state?.interface.privateKey).toBe(first);
  });

  it('retries a rotation that could not reach control', async () => {
    const engine = await running({ keyRotationMs: 300 });
    const first = await readKey('node.key');
    const port = fx.control.port;
    await fx.control.stop();
    await waitUntil(
      'failure in health',
      () => engine.snapshot().health.some((h) => h.includes('node key rotation failed')),
      3_000,
    );
    expect(engine.backendState()).toBe('Running');
    await fx.control.start(port);
    await waitUntil('rotated', () => fx.helper.state?.interface.privateKey !== first, 3_000);
    await waitUntil('healthy', () => engine.snapshot().health.length === 0, 3_000);
  });

  it('does not rotate when turned off', async () => {
    await running({ keyRotationMs: null });
    await new Promise((r) => setTimeout(r, 300));
    expect(rotations()).toHaveLength(0);
  });

  it('finishes a rotation interrupted before control’s answer was recorded, at the next start', async () => {
    const engine = await running({ keyRotationMs: null });
    const first = await readKey('node.key');
    await fx.stopEngine(engine);
    // As if weftd died after sending the rotation: the next key is on disk, login.json is old.
    const next = generateKeyPair();
    await writeFileAtomic(join(fx.stateDir, 'node-next.key'), `${next.privateKey}\n`);
    const again = await fx.startEngine({ keyRotationMs: null });
    await waitUntil('rotated', () => fx.helper.state?.interface.privateKey === next.privateKey, 3_000);
    expect(rotations()).toEqual([
      expect.objectContaining({ nodeKey: next.publicKey, oldNodeKey: publicKeyOf(first) }),
    ]);
    expect(await readKey('node.key')).toBe(next.privateKey);
    expect(again.backendState()).toBe('Running');
  });

  it('completes on disk a rotation whose answer was recorded but whose key file was not replaced', async () => {
    const engine = await running({ keyRotationMs: null });
    await fx.stopEngine(engine);
    const next = generateKeyPair();
    await writeFileAtomic(join(fx.stateDir, 'node-next.key'), `${next.privateKey}\n`);
    const login = await readLogin();
    await writeFileAtomic(
      join(fx.stateDir, 'login.json'),
      JSON.stringify({ ...login, nodePublicKey: next.publicKey }),
    );
    const known = fx.control.nodes.get(machineKey());
    if (known) known.req = { ...known.req, nodeKey: next.publicKey };
    const again = await fx.startEngine({ keyRotationMs: null });
    expect(again.backendState()).not.toBe('NeedsLogin');
    expect(await readKey('node.key')).toBe(next.privateKey);
    await expect(stat(join(fx.stateDir, 'node-next.key'))).rejects.toThrow();
    await waitUntil('Running', () => again.backendState() === 'Running');
    expect(fx.helper.state?.interface.privateKey).toBe(next.privateKey);
    expect(rotations()).toHaveLength(0);
  });
});
