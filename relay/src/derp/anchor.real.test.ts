import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@weft/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  derpProbesMissing,
  derpprobeArgv,
  PROBES,
  parseDerpprobe,
  parseStunc,
  stuncArgv,
  writeDerpMap,
} from '../../../e2e/lab/derp-probes.js';
import { Membership } from '../membership.js';
import { type RunningRelay, startRelay } from '../relay.js';

// weft-relay against Tailscale's own DERP and STUN clients at tailscale.com v1.102.5, the
// module's derpprobe and stunc commands (built by scripts/setup-tailscale.sh). Loopback only.
// Tailscale clients between NATs: e2e/tests/relay-derp-nat.test.ts and tailscale-lab.test.ts.

const missing = derpProbesMissing();

/**
 * Runs a command to its end (exit code and all output; derpprobe and stunc log to stderr). The
 * tests allow 90 s: derpprobe waits for every probe, slow on a loaded machine.
 */
function run(argv: string[]): Promise<{ code: number; log: string }> {
  const [cmd, ...args] = argv as [string, ...string[]];
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number(err.code ?? 1) : 0, log: stdout + stderr });
    });
  });
}

let dir: string;
let tls: { cert: Buffer; key: Buffer };
const relays: RunningRelay[] = [];

/** A TLS relay on loopback and a DERP map naming it; derpprobe's prober insists on TLS. */
async function relayWithMap(name: string, membership: Membership) {
  const relay = await startRelay({
    keyPair: generateKeyPair(),
    host: '127.0.0.1',
    port: 0,
    reflectorPort: 0,
    stunPort: 0,
    membership,
    tls,
  });
  relays.push(relay);
  const map = join(dir, `${name}.json`);
  const port = Number(new URL(relay.url).port);
  writeDerpMap(map, {
    hostName: 'relay.weft.test',
    ipv4: '127.0.0.1',
    derpPort: port,
    stunPort: relay.stunPort as number,
  });
  return { relay, map };
}

describe.skipIf(missing !== null)("weft-relay against Tailscale's DERP and STUN clients", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-derpprobe-'));
    const [certFile, keyFile] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    // biome-ignore format: the openssl command reads best on one line
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=relay.weft.test', '-addext', 'subjectAltName=DNS:relay.weft.test'], { stdio: 'ignore' });
    tls = { cert: await readFile(certFile), key: await readFile(keyFile) };
  });
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.close()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('derpprobe: two derphttp clients log in to an open relay and one gets the packet the other sent; its STUN probe is answered', async () => {
    const { relay, map } = await relayWithMap('open', Membership.open());
    const out = await run(derpprobeArgv(map));
    const report = parseDerpprobe(out.log);
    expect(report.bad).toEqual({});
    expect(report.good).toEqual(expect.arrayContaining([PROBES.mesh, PROBES.stun]));
    expect(out.code).toBe(0);
    expect(relay.stun?.stats().answered).toBeGreaterThanOrEqual(1);
  }, 90_000);

  it('derpprobe: a relay serving one tailnet refuses the clients whose keys are not in it (a Health frame, no ServerInfo)', async () => {
    const membership = Membership.tailnet();
    membership.replace([generateKeyPair().publicKey]);
    const { relay, map } = await relayWithMap('tailnet', membership);
    const out = await run(derpprobeArgv(map));
    expect(out.code).toBe(1);
    expect(parseDerpprobe(out.log).bad[PROBES.mesh]).toContain(
      'unexpected first message type derp.HealthMessage',
    );
    expect(relay.server.stats().authenticated).toBe(0);
  }, 90_000);

  it("stunc: Tailscale's STUN client learns its own address from the relay", async () => {
    const { relay } = await relayWithMap('stun', Membership.open());
    const out = await run(stuncArgv('127.0.0.1', relay.stunPort as number));
    expect(out.code).toBe(0);
    expect(parseStunc(out.log)).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(relay.stun?.stats().answered).toBe(1);
  }, 90_000);
});

it.runIf(missing !== null)(`skips the Tailscale DERP/STUN client tests: ${missing}`, () => {});
