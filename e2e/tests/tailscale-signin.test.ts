import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlServer,
  Lab,
  RelayServer,
  removeScratch,
  scratchDir,
  sleep,
  TailscaleNode,
  tailscaleMissing,
  tsPeers,
  waitFor,
} from '../lab/index.js';
import {
  freePort,
  type IdentitySupport,
  joinRoot,
  loadIdentitySupport,
  type TestIdp,
} from '../lab/signin.js';

// Interactive sign-in of the official Tailscale client through Weft's own flow: real tailscaled
// and `tailscale up` (no key) on a lab host, real control in the root namespace configured with a
// real OpenID Connect provider (control's test provider), and the test as the person's browser
// opening the AuthURL the CLI printed and pressing Connect on control's confirmation page. A
// Tailscale client signs in exactly as a Weft node does.

const missing = tailscaleMissing();
if (missing) console.log(`tailscale-signin: skipped: ${missing}`);

let lab: Lab;
let dir: string;
let idp: TestIdp | null = null;
let id: IdentitySupport;
let control: ControlServer;
let relay: RelayServer;
const ts: TailscaleNode[] = [];

/** Signs in through `authUrl` as `login` in a fresh browser and presses Connect; the last page. */
async function signIn(authUrl: string, login: string) {
  const browser = new id.Browser();
  const callback = await id.signInAtIdp(browser, authUrl, login, (idp as TestIdp).issuer);
  return id.confirmAtControl(browser, callback);
}

/** `weft-control nodes list --json`, the fields this test reads. */
async function controlNodes(): Promise<{ name: string; kind: string; user: string | null }[]> {
  return JSON.parse(await control.cli(['nodes', 'list', '--json']));
}

describe.skipIf(missing !== null)('a Tailscale client signs in with the identity provider', () => {
  let a: TailscaleNode;
  let b: TailscaleNode;

  beforeAll(async () => {
    id = await loadIdentitySupport();
    lab = await Lab.create();
    dir = scratchDir(`${lab.id}-tssignin`);
    const seg = await lab.addSegment();
    const root = await joinRoot(lab, seg);
    const { net } = root;
    const controlPort = await freePort(root.ip);
    const controlUrl = `http://${root.ip}:${controlPort}`;
    idp = await id.startIdp(await freePort(), [`${controlUrl}/oidc/callback`]);
    const secretFile = join(dir, 'oidc-secret');
    writeFileSync(secretFile, `${id.CLIENT_SECRET}\n`, { mode: 0o600 });
    root.env = {
      WEFT_CONTROL_OIDC_ISSUER: idp.issuer,
      WEFT_CONTROL_OIDC_CLIENT_ID: id.CLIENT_ID,
      WEFT_CONTROL_OIDC_CLIENT_SECRET_FILE: secretFile,
      WEFT_CONTROL_OIDC_ALLOWED_DOMAINS: 'example.com',
    };
    // A relay too: a Tailscale client with no peer yet counts as Running only once it reaches a relay.
    const rly = await lab.addHost('rly', { segment: seg, address: `${net}.2/24` });
    mkdirSync(join(dir, 'relay'));
    relay = new RelayServer(rly, join(dir, 'relay'));
    control = new ControlServer(root, dir, controlPort, ['--relays', await relay.mapEntry(1, 'lab')]);
    await control.start();
    await relay.start(control);
    await control.cli(['users', 'create', 'ops', '--email', 'ops@example.com']);
    for (const [name, last] of [
      ['a', 11],
      ['b', 12],
    ] as const) {
      // A default route to nowhere on the segment (see TAILSCALE_GATEWAY), never via the root namespace.
      const host = await lab.addHost(name, {
        segment: seg,
        address: `${net}.${last}/24`,
        gateway: `${net}.254`,
      });
      const node = new TailscaleNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`s${name}`));
      await node.start();
      ts.push(node);
    }
    [a, b] = ts as [TailscaleNode, TailscaleNode];
    const key = await control.cli(['preauthkey', 'create', '--user', 'ops']);
    await b.up({ loginServer: control.url, authKey: key, hostname: 'b' });
  }, 120_000);

  afterAll(async () => {
    await idp?.stop();
    await Promise.all(ts.map((n) => n.stop()));
    await control?.stop();
    await relay?.stop();
    await lab?.cleanup();
    for (const n of ts) removeScratch(n.dir);
    if (dir) removeScratch(dir);
  });

  let pending: Awaited<ReturnType<TailscaleNode['upInteractive']>>;

  it('`tailscale up` without a key prints control’s AuthURL and waits in NeedsLogin', async () => {
    pending = await a.upInteractive({ loginServer: control.url, hostname: 'a', timeoutS: 120 });
    expect(pending.authUrl.startsWith(`${control.url}/`)).toBe(true);
    const st = await a.status();
    expect(st.BackendState).toBe('NeedsLogin');
    expect(st.AuthURL).toBe(pending.authUrl);
  });

  it('refuses a person outside the allowed domain; the client keeps waiting', async () => {
    const page = await signIn(pending.authUrl, 'bob');
    expect(page.status).toBe(403);
    expect(page.body).toContain('bob@other.org is not in an allowed domain (example.com)');
    await sleep(1000);
    expect((await a.status()).BackendState).toBe('NeedsLogin');
    expect((await controlNodes()).map((n) => n.name)).not.toContain('a');
  });

  it('signing in at the provider authorizes the waiting client: it runs, as alice, and pings its peer', async () => {
    const opened = Date.now();
    const page = await signIn(pending.authUrl, 'alice');
    expect(page.status).toBe(200);
    const code = await Promise.race([pending.done, sleep(30_000).then(() => 'running' as const)]);
    expect(code).toBe(0);
    const upDone = Date.now();
    const st = await a.status();
    expect(st.BackendState).toBe('Running');
    expect(st.Self?.HostName).toBe('a');
    const bIp = await b.ip4();
    await waitFor('a → b ping', () => a.host.ping(bIp, { count: 1, deadlineS: 1 }), 20_000);
    console.log(
      `Tailscale sign-in: auth URL opened → tailscale up returned ${upDone - opened} ms → first ping ${Date.now() - opened} ms`,
    );
    expect(tsPeers(st).map((p) => p.HostName)).toContain('b');
    // Control bound the node to the person who signed in.
    expect((await controlNodes()).find((n) => n.name === 'a')).toMatchObject({
      kind: 'tailscale',
      user: expect.stringMatching(/^alice\b/),
    });
  });
});
