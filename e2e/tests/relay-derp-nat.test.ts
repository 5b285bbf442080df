import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { generateKeyPair } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  type Host,
  Lab,
  RelayServer,
  type Router,
  removeScratch,
  scratchDir,
} from '../lab/index.js';

// weft-relay's DERP and STUN as Tailscale clients behind NATs see them: Tailscale's own DERP and
// STUN clients (the Go anchor e2e/anchors/derp, tailscale.com v1.102.5) in lab namespaces behind
// real nftables NAT routers, the relay on the "internet" segment (198.18.0.0/24):
//
//   relay 198.18.0.2 (DERP :8443, STUN udp :3479, --open)
//   e  endpoint-independent NAT   198.18.11.2  behind 198.18.0.101
//   d  endpoint-dependent NAT     198.18.12.2  behind 198.18.0.102

const ANCHOR = `${process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin'}/derp-anchor`;
const missing = existsSync(ANCHOR)
  ? null
  : spawnSync('go', ['version']).status === 0
    ? `${ANCHOR} is not built: run scripts/setup-tailscale.sh`
    : 'Go is not installed, so the Tailscale DERP/STUN anchor cannot be built';

let lab: Lab;
let dir: string;
let relay: RelayServer;
const routers: Record<string, Router> = {};
const hosts: Record<string, Host> = {};

async function anchor(host: Host, args: string[]): Promise<Record<string, unknown>> {
  const r = await host.exec([ANCHOR, ...args], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`derp-anchor ${args[0]} on ${host.name}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string);
}

describe.skipIf(missing !== null)("weft-relay's DERP and STUN behind NATs (Tailscale's clients)", () => {
  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(lab.id);
    const net = await lab.addSegment();
    const relayHost = await lab.addHost('relay', { segment: net, address: '198.18.0.2/24' });
    for (const [name, kind, wan, lan] of [
      ['e', 'eim', '198.18.0.101', '198.18.11'],
      ['d', 'edm', '198.18.0.102', '198.18.12'],
    ] as const) {
      const router = await addRouter(lab, `r${name}`, {
        kind,
        wan: net,
        wanAddress: `${wan}/24`,
        lanAddress: `${lan}.1/24`,
      });
      routers[name] = router;
      hosts[name] = await router.addHost(name, `${lan}.2/24`);
    }
    relay = new RelayServer(relayHost, dir);
    await relay.start();
  }, 120_000);

  afterAll(async () => {
    await relay?.stop();
    await lab?.cleanup();
    if (dir) removeScratch(dir);
  });

  it("STUN tells each client its NAT's public address, not its own", async () => {
    for (const name of ['e', 'd'] as const) {
      const out = await anchor(hosts[name] as Host, ['stun', '-addr', `198.18.0.2:${relay.stunPort}`]);
      const [mappedIp] = String(out.mapped).split(':');
      expect(mappedIp).toBe(routers[name]?.wanIp);
      expect(String(out.local)).toMatch(/^198\.18\.1[12]\.2:/);
    }
  });

  it('two clients behind different NATs exchange packets through DERP, each seeing the other as source', async () => {
    const [echoKeys, senderKeys] = [generateKeyPair(), generateKeyPair()];
    const echo = hosts.d?.spawn([
      ANCHOR,
      'echo',
      '-url',
      relay.derpUrl,
      '-key',
      echoKeys.privateKey,
      '-count',
      '5',
    ]);
    let out = '';
    echo?.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    // The echo client prints {"ready":…} once the relay serves it.
    for (let i = 0; i < 300 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain(`"ready":"${echoKeys.publicKey}"`);
    const sent = await anchor(hosts.e as Host, [
      'send',
      '-url',
      relay.derpUrl,
      '-key',
      senderKeys.privateKey,
      '-to',
      echoKeys.publicKey,
      '-count',
      '5',
    ]);
    expect(sent.received).toEqual(['go 0', 'go 1', 'go 2', 'go 3', 'go 4']);
  });
});

it.runIf(missing !== null)(`skips the DERP/STUN NAT lab: ${missing}`, () => {});
