import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ControlServer, Lab, scratchDir, sleep, stopTailnet, WeftNode, waitFor } from '../lab/index.js';
import {
  freePort,
  type IdentitySupport,
  joinRoot,
  loadIdentitySupport,
  type TestIdp,
} from '../lab/signin.js';

// Signing in with the company's identity provider, end to end with real parts: the real control
// server configured with a real OpenID Connect provider (oidc-provider, control's own test
// provider), real engines, helpers and wireguard-go on lab hosts, and the test as the person's
// browser (fetch with a cookie jar, through the provider's login and consent pages). Control and
// the provider run in the root namespace, which joins the lab's segment; nodes reach control there.
// Tests run in order and share one tailnet:
//   a  signs in interactively (alice@example.com; bob@other.org is refused)
//   b  a server joined by pre-auth key, a's peer
//   c  a server whose weftd rotates its node key every 20 s

const ROTATION = '20s';

let lab: Lab;
let dir: string;
let idp: TestIdp | null = null;
let id: IdentitySupport;
let control: ControlServer;
const nodes: Record<string, WeftNode> = {};
let aIp = '';

/** `weft up` without a key on `node`, left running; resolves with it and the first stdout line. */
async function startInteractiveUp(node: WeftNode, hostname: string) {
  const child = node.host.spawn([
    'node',
    BIN.weft,
    '--socket',
    node.socket,
    'up',
    '--control-url',
    control.url,
    '--insecure-http',
    '--hostname',
    hostname,
    '--timeout',
    '2m',
  ]);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const firstLine = await waitFor(
    'weft up to print the sign-in URL',
    async () => {
      if (child.exitCode !== null) throw new Error(`weft up exited ${child.exitCode}: ${stderr}`);
      const nl = stdout.indexOf('\n');
      return nl >= 0 ? stdout.slice(0, nl) : undefined;
    },
    20_000,
  );
  return { child, firstLine, exited, output: () => ({ stdout, stderr }) };
}

async function exitOf(child: ChildProcess, exited: Promise<number | null>, ms: number) {
  const code = await Promise.race([exited, sleep(ms).then(() => 'running' as const)]);
  if (code === 'running') child.kill('SIGKILL');
  return code;
}

/** Signs in through `authUrl` as `login` in a fresh browser and presses Connect; the last page. */
async function signIn(authUrl: string, login: string) {
  const browser = new id.Browser();
  const callback = await id.signInAtIdp(browser, authUrl, login, (idp as TestIdp).issuer);
  return id.confirmAtControl(browser, callback);
}

interface ControlNode {
  name: string;
  ipv4: string;
  keyExpiry: string | null;
}
async function controlNode(name: string): Promise<ControlNode | undefined> {
  const all = JSON.parse(await control.cli(['nodes', 'list', '--json'])) as ControlNode[];
  return all.find((n) => n.name === name);
}

/** The public keys of `node`'s WireGuard interface and of its peers, as wireguard-go reports them. */
async function wgKeys(node: WeftNode): Promise<{ self: string; peers: string[] }> {
  const self = (await node.host.must(['wg', 'show', node.iface, 'public-key'])).trim();
  const peers = (await node.host.must(['wg', 'show', node.iface, 'peers'])).split('\n').filter(Boolean);
  return { self, peers };
}

beforeAll(async () => {
  id = await loadIdentitySupport();
  lab = await Lab.create();
  dir = scratchDir(`${lab.id}-signin`);
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
  control = new ControlServer(root, dir, controlPort);
  await control.start();
  await control.cli(['users', 'create', 'ops', '--email', 'ops@example.com']);

  for (const [name, last] of [
    ['a', 11],
    ['b', 12],
    ['c', 13],
  ] as const) {
    const host = await lab.addHost(name, { segment: seg, address: `${net}.${last}/24` });
    nodes[name] = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`s${name}`));
  }
  await nodes.a!.start();
  await nodes.b!.start();
  // weftd reads WEFT_KEY_ROTATION (as --key-rotation); only c's daemon is started with it.
  process.env.WEFT_KEY_ROTATION = ROTATION;
  try {
    await nodes.c!.start();
  } finally {
    delete process.env.WEFT_KEY_ROTATION;
  }
  const key = await control.cli(['preauthkey', 'create', '--user', 'ops', '--reusable']);
  await nodes.b!.up(control.url, key, 'b');
}, 120_000);

afterAll(async () => {
  await idp?.stop();
  await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
});

describe('sign in with the identity provider (real control, oidc-provider, wireguard-go)', () => {
  let pending: Awaited<ReturnType<typeof startInteractiveUp>>;

  it('`weft up` without a key prints the sign-in URL alone on its own line and waits', async () => {
    pending = await startInteractiveUp(nodes.a!, 'a');
    expect(pending.firstLine).toMatch(new RegExp(`^${control.url}/login/[A-Za-z0-9_-]{32}$`));
    const st = await nodes.a!.status();
    expect(st.backendState).toBe('NeedsLogin');
    expect(st.authUrl).toBe(pending.firstLine);
    expect(Date.parse(st.authUrlExpiresAt as string) - Date.now()).toBeGreaterThan(8 * 60_000);
    expect(pending.output().stderr).toContain('To log in, open this URL in a browser');
  });

  it('refuses a person outside the allowed domain; the node stays NeedsLogin', async () => {
    const page = await signIn(pending.firstLine, 'bob');
    expect(page.status).toBe(403);
    expect(page.body).toContain('bob@other.org is not in an allowed domain (example.com)');
    expect(page.body).toContain('a was not connected');
    await sleep(1_000);
    const st = await nodes.a!.status();
    expect(st).toMatchObject({ backendState: 'NeedsLogin', authUrl: pending.firstLine, self: null });
    expect(pending.child.exitCode).toBeNull();
    expect(await controlNode('a')).toBeUndefined();
  });

  it('signing in at the provider authorizes the waiting node; it gets its netmap and pings its peer', async () => {
    const opened = Date.now();
    const page = await signIn(pending.firstLine, 'alice');
    expect(page.status).toBe(200);
    expect(page.body).toContain('a is now connected to your tailnet as a');
    const code = await exitOf(pending.child, pending.exited, 30_000);
    const upDone = Date.now();
    expect(code, pending.output().stderr).toBe(0);
    expect(pending.output().stdout).toBe(`${pending.firstLine}\n`);
    expect(pending.output().stderr).toMatch(/Connected as a \(100\./);

    const bIp = await nodes.b!.ip4();
    await waitFor(
      'first ping reply a → b',
      () => nodes.a!.host.ping(bIp, { count: 1, deadlineS: 1 }),
      20_000,
    );
    const replied = Date.now();
    console.log(
      `sign-in: auth URL opened → weft up returned ${upDone - opened} ms → first ping reply ${replied - opened} ms`,
    );
    const st = await nodes.a!.status();
    expect(st.backendState).toBe('Running');
    expect(st.self?.name).toBe('a');
    expect(Date.parse(st.self?.keyExpiry as string) - Date.now()).toBeGreaterThan(179 * 86_400_000);
    expect(st.peers.map((p) => p.name)).toContain('b');
    aIp = await nodes.a!.ip4();
    expect((await nodes.b!.status()).peers.find((p) => p.name === 'a')?.user).toBe('alice@example.com');
  });

  it(`rotates c's node key (weftd --key-rotation ${ROTATION}) under a running ping; b learns the new key`, async () => {
    const key = await control.cli(['preauthkey', 'create', '--user', 'ops']);
    await nodes.c!.up(control.url, key, 'c');
    const cIp = await nodes.c!.ip4();
    await waitFor('b reaches c', () => nodes.b!.host.ping(cIp, { count: 1, deadlineS: 1 }), 20_000);
    const before = await wgKeys(nodes.c!);
    expect((await wgKeys(nodes.b!)).peers).toContain(before.self);

    // 35 s of pings, two a second: the rotation comes 20 s after c's sign-in.
    const pinging = nodes.b!.host.exec(['ping', '-n', '-i', '0.5', '-c', '70', '-W', '1', '-w', '40', cIp], {
      timeoutMs: 45_000,
    });
    const rotated = await waitFor(
      "c's new key on its interface",
      async () => {
        const now = await wgKeys(nodes.c!);
        return now.self !== before.self ? now.self : undefined;
      },
      30_000,
    );
    const t0 = Date.now();
    await waitFor(
      'b to have the new key and not the old one',
      async () => {
        const { peers } = await wgKeys(nodes.b!);
        return peers.includes(rotated) && !peers.includes(before.self);
      },
      5_000,
    );
    console.log(`rotation: b had c's new key ${Date.now() - t0} ms after c switched`);
    const ping = await pinging;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(ping.stdout);
    expect(m, ping.stdout + ping.stderr).not.toBeNull();
    const [sent, received] = [Number(m?.[1]), Number(m?.[2])];
    console.log(`rotation: ${sent - received} of ${sent} pings lost (0.5 s apart) across the key rotation`);
    expect(sent).toBeGreaterThanOrEqual(60);
    // No longer than one WireGuard handshake (a retry comes 5 s after a lost initiation).
    expect(sent - received).toBeLessThanOrEqual(12);

    // Same node, same addresses, running, healthy.
    const st = await nodes.c!.status();
    expect(st).toMatchObject({ backendState: 'Running', health: [], self: { name: 'c' } });
    expect(await nodes.c!.ip4()).toBe(cIp);
    expect(await nodes.b!.host.ping(cIp, { count: 2, deadlineS: 3 })).toBe(true);
  });

  it('`weft-control nodes expire a` → a is NeedsLogin within 2 s and leaves b’s map', async () => {
    await control.cli(['nodes', 'expire', 'a']);
    const t0 = Date.now();
    await waitFor(
      'a to need login',
      async () => (await nodes.a!.status()).backendState === 'NeedsLogin',
      2_000,
    );
    console.log(`expiry: a NeedsLogin ${Date.now() - t0} ms after weft-control nodes expire`);
    const st = await nodes.a!.status();
    expect(st.health.join(' ')).toMatch(/key expired/);
    await waitFor(
      'a gone from b',
      async () => !(await nodes.b!.status()).peers.some((p) => p.name === 'a'),
      2_000,
    );
    expect(await nodes.b!.host.ping(aIp, { count: 1, deadlineS: 2 })).toBe(false);
  });

  it('signing in again keeps a’s name and addresses; `weft logout` expires its key at control', async () => {
    const again = await startInteractiveUp(nodes.a!, 'a');
    const page = await signIn(again.firstLine, 'alice');
    expect(page.status).toBe(200);
    expect(await exitOf(again.child, again.exited, 30_000)).toBe(0);
    expect(await nodes.a!.ip4()).toBe(aIp);
    expect((await nodes.a!.status()).self?.name).toBe('a');
    expect(Date.parse((await controlNode('a'))?.keyExpiry as string)).toBeGreaterThan(Date.now());

    const r = await nodes.a!.weft(['logout']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect((await nodes.a!.status()).backendState).toBe('NeedsLogin');
    const expiry = (await controlNode('a'))?.keyExpiry;
    expect(Date.parse(expiry as string)).toBeLessThanOrEqual(Date.now());
    await waitFor(
      'a gone from b',
      async () => !(await nodes.b!.status()).peers.some((p) => p.name === 'a'),
      2_000,
    );
  });

  it('`weft up --timeout` gives up with a clear message and cancels the link', async () => {
    const r = await nodes.a!.weft(
      ['up', '--control-url', control.url, '--insecure-http', '--hostname', 'a', '--timeout', '2s'],
      30_000,
    );
    expect(r.code).not.toBe(0);
    const url = r.stdout.trim();
    expect(url).toMatch(new RegExp(`^${control.url}/login/`));
    expect(r.stderr).toContain('weft: not logged in within 2s; the sign-in was cancelled');
    expect(await nodes.a!.status()).toMatchObject({ backendState: 'NeedsLogin', authUrl: null });
    const page = await new id.Browser().request(url);
    expect(page.status).toBe(410);
    expect(page.body).toContain('cancelled');
  });
});
