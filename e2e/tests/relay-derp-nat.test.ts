import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addRouter,
  derpProbesMissing,
  derpprobeArgv,
  type Host,
  Lab,
  makeLabCa,
  PROBES,
  parseDerpprobe,
  parseStunc,
  RelayServer,
  type Router,
  removeScratch,
  scratchDir,
  stuncArgv,
  writeDerpMap,
} from '../lab/index.js';

// weft-relay's DERP and STUN as Tailscale clients behind NATs see them: Tailscale's own DERP and
// STUN clients (the module's derpprobe and stunc, tailscale.com v1.102.5) in lab namespaces
// behind real nftables NAT routers, the relay on the "internet" segment (198.18.0.0/24):
//
//   relay 198.18.0.2 (DERP over TLS :8443, STUN udp :3479, --open)
//   e  endpoint-independent NAT   198.18.11.2  behind 198.18.0.101
//   d  endpoint-dependent NAT     198.18.12.2  behind 198.18.0.102
//
// Two tailscaled behind different NATs talking through the relay: tailscale-lab.test.ts.

const missing = derpProbesMissing();

let lab: Lab;
let dir: string;
let relay: RelayServer;
let derpMap: string;
const routers: Record<string, Router> = {};
const hosts: Record<string, Host> = {};

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
    // derpprobe's clients use TLS only; they skip certificate checks (InsecureForTests in the map).
    await relay.start(undefined, await makeLabCa(dir, relayHost.ip));
    derpMap = join(dir, 'derp-map.json');
    writeDerpMap(derpMap, {
      hostName: 'relay.weft.test',
      ipv4: relayHost.ip,
      derpPort: relay.port,
      stunPort: relay.stunPort,
    });
  }, 120_000);

  afterAll(async () => {
    await relay?.stop();
    await lab?.cleanup();
    if (dir) removeScratch(dir);
  });

  it("STUN tells each client its NAT's public address, not its own", async () => {
    for (const name of ['e', 'd'] as const) {
      const r = await (hosts[name] as Host).exec(stuncArgv('198.18.0.2', relay.stunPort), {
        timeoutMs: 30_000,
      });
      expect(r.code).toBe(0);
      const [mappedIp] = parseStunc(r.stderr).split(':');
      expect(mappedIp).toBe(routers[name]?.wanIp);
    }
  });

  it('behind each NAT two derphttp clients log in through it and exchange a packet via DERP; STUN answers', async () => {
    for (const name of ['e', 'd'] as const) {
      const r = await (hosts[name] as Host).exec(derpprobeArgv(derpMap), { timeoutMs: 60_000 });
      const report = parseDerpprobe(r.stderr);
      expect(report.bad).toEqual({});
      expect(report.good).toEqual(expect.arrayContaining([PROBES.mesh, PROBES.stun]));
      expect(r.code).toBe(0);
    }
  });
});

it.runIf(missing !== null)(`skips the DERP/STUN NAT lab: ${missing}`, () => {});
