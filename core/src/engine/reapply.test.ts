import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type NetMap } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HelperClient } from '../helper/client.js';
import { silentLogger } from '../log/logger.js';
import { StateStore } from '../state/store.js';
import { nodeView, type RegisteredNode, StandInControl } from '../testing/standin-control.js';
import { StandInHelper } from '../testing/standin-helper.js';
import { Engine } from './engine.js';

// POST /reapply: the desktop app's supervisor asks the engine to send a restarted helper the whole
// desired state at once, instead of waiting for the periodic re-apply.

const IFACE = 'weftreap0';
const peerKey = generateKeyPair().publicKey;
let dir: string;
let control: StandInControl;
let helper: StandInHelper;
let engine: Engine;
let helperClient: HelperClient;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-reapply-'));
  control = new StandInControl();
  control.netmapFor = (node: RegisteredNode): NetMap => ({
    self: nodeView(1, node.req.nodeKey, { name: node.req.hostname }),
    peers: [nodeView(2, peerKey)],
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10'],
  });
  await control.start();
  helper = new StandInHelper(join(dir, 'helper.sock'));
  await helper.start();
  helperClient = new HelperClient(helper.path, { log: silentLogger, backoff: { baseMs: 20, capMs: 100 } });
  engine = new Engine({
    store: new StateStore(join(dir, 'state')),
    helper: helperClient,
    interfaceName: IFACE,
    log: silentLogger,
    timing: {
      reapplyMs: 60_000,
      debounceMs: 5,
      upTimeoutMs: 5_000,
      controlBackoff: { baseMs: 20, capMs: 100 },
    },
    addressSource: () => [],
    portMapping: false, // unit tests never ask this machine's gateway
    // The MTU stays 1280: no `ip route` or ping of this machine's own network in unit tests.
    readUnderlay: async () => null,
  });
  await engine.start();
});

afterEach(async () => {
  await engine.shutdown();
  await control.stop();
  await helper.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('engine.reapply', () => {
  it('sends the helper the same whole state again and resolves once it has it (stand-in helper)', async () => {
    await engine.up({ controlUrl: control.url, authKey: 'tskey-good', hostname: 'laptop' });
    const applies = () => helper.requests.filter((r) => r.op === 'apply').length;
    const before = applies();
    const state = helper.lastApply();
    await engine.reapply();
    expect(applies()).toBe(before + 1);
    expect(helper.lastApply()).toEqual(state);
  });

  it('logged out: re-applies "down"', async () => {
    // Logged out, nothing else talks to the helper first: wait for the connection (slow under load).
    if (!helperClient.connected) await once(helperClient, 'connected');
    const before = helper.ops().length;
    await engine.reapply();
    expect(helper.ops().slice(before)).toContain('down');
  });
});
