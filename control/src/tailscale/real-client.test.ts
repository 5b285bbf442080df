import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Browser } from '../testing/browser.js';
import { cleanupAll, freePort, startTestControl, type TestControl, tempDir } from '../testing/harness.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  confirmAtControl,
  signInAtIdp,
  startIdp,
} from '../testing/identity-provider.js';

// The real Tailscale client (tailscaled and tailscale v1.102.5, built by scripts/setup.sh into
// /var/cache/weft-go/bin) against this control on loopback, in userspace networking: no namespaces,
// no root. Skipped where the binaries are not built.

const BIN = process.env.WEFT_GO_BIN ?? '/var/cache/weft-go/bin';
const TAILSCALED = join(BIN, 'tailscaled');
const TAILSCALE = join(BIN, 'tailscale');
const have = existsSync(TAILSCALED) && existsSync(TAILSCALE);
const run = promisify(execFile);

const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0))
    if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
  await cleanupAll();
});

interface Client {
  socket: string;
  cli(...args: string[]): Promise<string>;
  status(): Promise<{ BackendState: string; Peer?: Record<string, { HostName: string; Online: boolean }> }>;
}

function startTailscaled(name: string): Client {
  const dir = tempDir();
  const socket = join(dir, `${name}.sock`);
  const child = spawn(
    TAILSCALED,
    ['--tun=userspace-networking', '--statedir', join(dir, 'state'), '--socket', socket, '--port', '0'],
    // Its logs go to the scratch folder, not /var/lib/tailscale.
    { env: { ...process.env, TS_NO_LOGS_NO_SUPPORT: 'true', TS_LOGS_DIR: dir }, stdio: 'ignore' },
  );
  children.push(child);
  const cli = async (...args: string[]) =>
    (await run(TAILSCALE, ['--socket', socket, ...args], { timeout: 20_000 })).stdout;
  return { socket, cli, status: async () => JSON.parse(await cli('status', '--json')) };
}

/** Polls (at most `tries` times, 250 ms apart) until `test` holds. */
async function eventually<T>(what: string, probe: () => Promise<T>, test: (v: T) => boolean, tries = 80) {
  let last: T | undefined;
  for (let i = 0; i < tries; i++) {
    try {
      last = await probe();
      if (test(last)) return last;
    } catch {
      // tailscaled not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`never saw ${what}; last: ${JSON.stringify(last)}`);
}

async function up(t: TestControl, c: Client, hostname: string, key: string) {
  await eventually(
    'tailscaled',
    () => c.cli('version'),
    () => true,
  );
  // Without a relay `up` waits for one; the login is done once the state leaves NeedsLogin.
  const child = spawn(
    TAILSCALE,
    // --accept-dns=false: control sends DNSConfig now, and this machine's resolver is not the test's.
    [
      '--socket',
      c.socket,
      'up',
      '--login-server',
      t.control.url,
      '--authkey',
      key,
      '--hostname',
      hostname,
      '--accept-dns=false',
    ],
    { stdio: 'ignore' },
  );
  children.push(child);
  await eventually(
    `${hostname} logged in`,
    () => c.status(),
    (s) => s.BackendState === 'Starting' || s.BackendState === 'Running',
  );
}

describe.skipIf(!have)('the real Tailscale client (v1.102.5) against Weft control', () => {
  it('joins with a pre-auth key, sees its peer, pings it directly, and is logged out by expiry', async () => {
    const t = await startTestControl();
    const key = await t.key('--reusable');
    const [a, b] = [startTailscaled('a'), startTailscaled('b')];
    await up(t, a, 'real-a', key);
    await up(t, b, 'real-b', key);
    expect((await a.cli('ip', '-4')).trim()).toBe('100.64.0.1');
    await eventually(
      'b in a’s status',
      () => a.status(),
      (s) => Object.values(s.Peer ?? {}).some((p) => p.HostName === 'real-b' && p.Online),
    );
    const pong = await a.cli('ping', '-c', '5', '100.64.0.2');
    expect(pong).toMatch(/pong from real-b \(100\.64\.0\.2\) via [0-9.]+:\d+/);

    const list = (await t.cli('nodes', 'list')).out;
    expect(list).toMatch(/real-a .* tailscale +1\.102\.5/);

    expect((await t.cli('nodes', 'expire', 'real-b')).code).toBe(0);
    await eventually(
      'b logged out',
      () => b.status(),
      (s) => s.BackendState === 'NeedsLogin',
    );
    await eventually(
      'b gone from a',
      () => a.status(),
      (s) => Object.keys(s.Peer ?? {}).length === 0,
    );
  }, 60_000);

  it('signs in interactively: the URL tailscale prints, the identity provider, then the netmap', async () => {
    const [controlPort, idpPort] = [await freePort(), await freePort()];
    const controlUrl = `http://127.0.0.1:${controlPort}`;
    const idp = await startIdp(idpPort, [`${controlUrl}/oidc/callback`]);
    const secretFile = join(tempDir(), 'oidc-secret');
    writeFileSync(secretFile, `${CLIENT_SECRET}\n`);
    const t = await startTestControl({
      config: {
        listen: { host: '127.0.0.1', port: controlPort },
        oidc: {
          issuer: idp.issuer,
          clientId: CLIENT_ID,
          clientSecretFile: secretFile,
          groupsClaim: 'groups',
          scopes: ['openid', 'email', 'profile'],
        },
      },
    });
    try {
      const c = startTailscaled('i');
      await eventually(
        'tailscaled',
        () => c.cli('version'),
        () => true,
      );
      const upCmd = spawn(
        TAILSCALE,
        [
          '--socket',
          c.socket,
          'up',
          '--login-server',
          controlUrl,
          '--hostname',
          'real-i',
          '--accept-dns=false',
        ],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      children.push(upCmd);
      let printed = '';
      upCmd.stdout?.on('data', (d) => {
        printed += d;
      });
      upCmd.stderr?.on('data', (d) => {
        printed += d;
      });
      const url = await eventually(
        'the printed sign-in URL',
        async () => /http:\/\/127\.0\.0\.1:\d+\/login\/[A-Za-z0-9_-]+/.exec(printed)?.[0],
        (u) => u !== undefined,
      );
      const browser = new Browser();
      const callback = await signInAtIdp(browser, url as string, 'alice', idp.issuer);
      expect((await confirmAtControl(browser, callback)).status).toBe(200);
      await eventually(
        'signed in',
        () => c.status(),
        (s) => s.BackendState === 'Starting' || s.BackendState === 'Running',
      );
      expect((await c.cli('ip', '-4')).trim()).toBe('100.64.0.1');
      expect((await t.cli('nodes', 'list')).out).toMatch(/real-i .* alice@example\.com .* tailscale/);
    } finally {
      await t.control.close();
      await idp.stop();
    }
  }, 60_000);
});
