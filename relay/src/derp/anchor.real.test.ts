import { execFile, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RelayConnection } from '@weft/core';
import { generateKeyPair } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Membership } from '../membership.js';
import { type RunningRelay, startRelay } from '../relay.js';

// weft-relay against the real Tailscale clients: tailscale.com/derp/derphttp and
// tailscale.com/net/stun at v1.102.5, in the anchor program e2e/anchors/derp (built by
// e2e/anchors/build.sh into /var/cache/weft-go/bin, here if it is missing). Loopback only.

const BIN = process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin';
const ANCHOR = `${BIN}/derp-anchor`;
const BUILD = fileURLToPath(new URL('../../../e2e/anchors/build.sh', import.meta.url));
const haveGo = spawnSync('go', ['version']).status === 0;
const run = promisify(execFile);

async function anchor(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(ANCHOR, args, { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string);
}

const [a, b, weftNode, stranger] = [
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
  generateKeyPair(),
];
let relay: RunningRelay;
let derpUrl: string;

describe.skipIf(!haveGo)('the real Tailscale DERP and STUN clients against weft-relay', () => {
  beforeAll(async () => {
    if (!existsSync(ANCHOR)) await run(BUILD, [], { timeout: 600_000 });
    const membership = Membership.tailnet();
    membership.replace([a.publicKey, b.publicKey, weftNode.publicKey]);
    relay = await startRelay({
      keyPair: generateKeyPair(),
      host: '127.0.0.1',
      port: 0,
      reflectorPort: 0,
      stunPort: 0,
      membership,
    });
    derpUrl = relay.url.replace(/^ws/, 'http').replace(/\/relay$/, '/derp');
  }, 600_000);
  afterAll(() => relay?.close());

  it('two derphttp clients exchange packets both ways, tagged with their keys, and get a Pong', async () => {
    const out = await anchor(
      'pair',
      '-url',
      derpUrl,
      '-key',
      a.privateKey,
      '-key2',
      b.privateKey,
      '-count',
      '50',
    );
    expect(out).toEqual({ aToB: 50, bToA: 50, pong: true });
  });

  it('a derphttp client whose key is not in the tailnet gets no ServerInfo, a reason, and a closed connection', async () => {
    const out = await anchor('probe', '-url', derpUrl, '-key', stranger.privateKey);
    expect(out.messages).toEqual(['health: node key is not in the tailnet']);
    expect(out.closed).not.toBe('');
    expect(relay.server.stats().authenticated).toBe(0);
  });

  it('a derphttp client and a Weft relay client reach each other through the one forwarding table', async () => {
    const w = new RelayConnection({
      url: relay.url,
      nodePrivateKey: weftNode.privateKey,
      nodeKey: weftNode.publicKey,
      relayKey: relay.publicKey,
    });
    const connected = once(w, 'up');
    w.start();
    await connected;
    try {
      w.on('packet', (from, packet) =>
        w.send(Buffer.from(from, 'base64'), Buffer.concat([Buffer.from('weft echo: '), packet])),
      );
      const out = await anchor(
        'send',
        '-url',
        derpUrl,
        '-key',
        a.privateKey,
        '-to',
        weftNode.publicKey,
        '-count',
        '3',
      );
      expect(out.received).toEqual(['weft echo: go 0', 'weft echo: go 1', 'weft echo: go 2']);
    } finally {
      w.close();
    }
  });

  it("Tailscale's STUN client learns its own address and port from the relay", async () => {
    const out = await anchor('stun', '-addr', `127.0.0.1:${relay.stunPort}`);
    expect(out.mapped).toBe(out.local);
    expect(relay.stun?.stats().answered).toBe(1);
  });
});

it.runIf(!haveGo)(
  'skips the Tailscale anchor tests: Go is not installed (see TESTING.md, scripts/setup.sh)',
  () => {},
);
