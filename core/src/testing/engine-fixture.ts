import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type NetMap } from '@weft/protocol';
import { Engine } from '../engine/engine.js';
import type { EngineOptions } from '../engine/options.js';
import { HelperClient } from '../helper/client.js';
import { silentLogger, stderrLogger } from '../log/logger.js';
import { StateStore } from '../state/store.js';
import { nodeView, type RegisteredNode, StandInControl } from './standin-control.js';
import { StandInHelper } from './standin-helper.js';

// An engine against the stand-in control and helper, with short timings, for engine tests.
// WEFT_TEST_LOG=1 shows the engine's log.

export const IFACE = 'wefttest0';

export interface EngineFixture {
  dir: string;
  stateDir: string;
  control: StandInControl;
  helper: StandInHelper;
  peerKey: string;
  startEngine(over?: Partial<EngineOptions>): Promise<Engine>;
  /** Shuts one engine down (as weftd does on SIGTERM). */
  stopEngine(engine: Engine): Promise<void>;
  /** Shuts down every engine started, then the stand-ins, and removes the folder. */
  cleanup(): Promise<void>;
}

export async function engineFixture(): Promise<EngineFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'weft-engine-'));
  const stateDir = join(dir, 'state');
  const peerKey = generateKeyPair().publicKey;
  const control = new StandInControl();
  control.netmapFor = (node: RegisteredNode): NetMap => ({
    self: nodeView(1, node.req.nodeKey, { name: node.req.hostname }),
    peers: [nodeView(2, peerKey)],
    packetFilter: [],
    tailnetRanges: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'],
  });
  await control.start();
  const helper = new StandInHelper(join(dir, 'helper.sock'));
  await helper.start();
  const engines: Engine[] = [];
  return {
    dir,
    stateDir,
    control,
    helper,
    peerKey,
    async startEngine(over = {}) {
      const engine = new Engine({
        store: new StateStore(stateDir),
        helper: new HelperClient(helper.path, { log: silentLogger, backoff: { baseMs: 20, capMs: 100 } }),
        interfaceName: IFACE,
        log: process.env.WEFT_TEST_LOG ? stderrLogger('engine', 'debug') : silentLogger,
        timing: {
          controlBackoff: { baseMs: 20, capMs: 100 },
          loginBackoff: { baseMs: 20, capMs: 100 },
          rotationBackoff: { baseMs: 50, capMs: 200 },
          endpointsPollMs: 50,
          reapplyMs: 60_000,
          debounceMs: 5,
          upTimeoutMs: 5_000,
        },
        addressSource: () => [{ iface: 'eth0', address: '198.18.5.5' }],
        portMapping: false, // unit tests never ask this machine's gateway
        // The MTU stays 1280: no `ip route` or ping of this machine's own network in unit tests.
        readUnderlay: async () => null,
        ...over,
      });
      engines.push(engine);
      await engine.start();
      return engine;
    },
    async stopEngine(engine) {
      engines.splice(engines.indexOf(engine), 1);
      await engine.shutdown();
    },
    async cleanup() {
      for (const e of engines.splice(0)) await e.shutdown();
      await control.stop();
      await helper.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
