import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, Lab, scratchDir, stopTailnet, WeftNode, waitFor } from '../lab/index.js';
import { startWeftWeb, type WeftWeb } from '../lab/weft-web.js';
import { axeSerious, launchChromium, screenshots } from './harness.js';

// The renderer in Chromium against a REAL engine: weftd + weft-helper + wireguard-go on lab hosts,
// joined to a real control server with two peers, through the real web shell: `weft web` (the
// built CLI) next to node a's weftd, its URL taken from the first line of its stdout. Sign-in
// here is by pre-auth key through the CLI (real-signin.test.ts signs in through the UI). Needs
// root, like every network-lab test.

let lab: Lab;
let dir: string;
let control: ControlServer;
let key: string;
const nodes: Record<string, WeftNode> = {};
let shell: WeftWeb;
let browser: Browser;
let page: Page;

const heading = (name: string) => page.getByRole('heading', { level: 1, name, exact: true });
const statusLine = () => page.locator('.status-line');

describe('desktop UI against a real engine (real engine, weft web)', () => {
  beforeAll(async () => {
    lab = await Lab.create();
    dir = scratchDir(lab.id);
    const seg = await lab.addSegment();
    const ctlHost = await lab.addHost('ctl', { segment: seg, address: '198.18.0.1/24' });
    control = new ControlServer(ctlHost, dir);
    await control.start();
    await control.cli(['users', 'create', 'alice', '--email', 'alice@example.com']);
    key = await control.cli(['preauthkey', 'create', '--user', 'alice', '--reusable']);
    for (const [name, addr] of [
      ['a', '198.18.0.11/24'],
      ['b', '198.18.0.12/24'],
      ['c', '198.18.0.13/24'],
    ] as const) {
      const host = await lab.addHost(name, { segment: seg, address: addr });
      const node = new WeftNode(host, scratchDir(`${lab.id}-${name}`), lab.name(`u${name}`));
      await node.start();
      nodes[name] = node;
    }
    await nodes.b?.up(control.url, key, 'b');
    await nodes.c?.up(control.url, key, 'c');

    shell = await startWeftWeb(nodes.a?.socket ?? '', dir);
    expect(shell.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]{43}$/);
    browser = await launchChromium();
    const context = await browser.newContext({
      viewport: { width: 400, height: 720 },
      reducedMotion: 'reduce',
    });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: shell.origin });
    page = await context.newPage();
    await page.goto(shell.url);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    const webExit = await shell?.stop();
    await stopTailnet({ nodes: Object.values(nodes), control, lab, dir });
    expect(webExit, 'weft web exits 0 on SIGTERM').toBe(0);
  }, 60_000);

  it('shows sign-in while the engine needs login, then this device and its peers once signed in (real engine)', async () => {
    await expect.poll(() => heading('Sign in to Weft').isVisible(), { timeout: 15_000 }).toBe(true);
    await screenshots(page, 'real-engine-signin');
    await nodes.a?.up(control.url, key, 'a');
    await expect.poll(() => heading('a').isVisible(), { timeout: 20_000 }).toBe(true);
    const devices = page.getByRole('list', { name: 'Devices' }).getByRole('listitem');
    await expect
      .poll(() => devices.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label'))), {
        timeout: 20_000,
      })
      .toEqual(['b', 'c']);
    const aIp = await nodes.a?.ip4();
    expect(await page.getByRole('list', { name: 'Addresses of this device' }).textContent()).toContain(aIp);
  }, 60_000);

  it('weft web answers only its own page with its token (real weft web)', async () => {
    const token = new URL(shell.url).searchParams.get('token') ?? '';
    const call = (headers: Record<string, string>) =>
      fetch(`${shell.origin}/bridge/v0/call/getState`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: '{}',
      });
    expect((await call({ origin: shell.origin })).status).toBe(403);
    expect((await call({ authorization: `Bearer ${token}`, origin: 'http://198.51.100.9' })).status).toBe(
      403,
    );
    const ok = await call({ authorization: `Bearer ${token}`, origin: shell.origin });
    expect(await ok.json()).toMatchObject({
      ok: true,
      value: { shell: 'web', engine: { backendState: 'Running' } },
    });
  });

  it('shows peers online and direct once traffic flows; copies an address (real engine)', async () => {
    const bIp = (await nodes.b?.ip4()) ?? '';
    const cIp = (await nodes.c?.ip4()) ?? '';
    await waitFor(
      'a reaches b',
      () => nodes.a?.host.ping(bIp, { count: 1, deadlineS: 1 }) ?? Promise.resolve(false),
      20_000,
    );
    await waitFor(
      'a reaches c',
      () => nodes.a?.host.ping(cIp, { count: 1, deadlineS: 1 }) ?? Promise.resolve(false),
      20_000,
    );
    await expect
      .poll(() => statusLine().textContent(), { timeout: 15_000 })
      .toBe('Connected · 2 direct, 0 relayed');
    expect(await page.getByRole('listitem', { name: 'b' }).textContent()).toContain('Online · Direct');
    await screenshots(page, 'real-engine-home');
    const violations = await axeSerious(page);
    expect(violations, JSON.stringify(violations, null, 2)).toEqual([]);

    await page.getByRole('button', { name: `Copy address of b (${bIp})` }).click();
    await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(bIp);
  }, 60_000);

  it('picks an exit node: the engine routes through it and the status says so; back to none (real engine)', async () => {
    const set = await nodes.b?.weft(['set', '--advertise-exit-node']);
    expect(set?.code, set?.stderr).toBe(0);
    await control.cli(['routes', 'approve', 'b', '0.0.0.0/0', '::/0']);
    await page.getByRole('button', { name: /Exit node/ }).click();
    await expect.poll(() => heading('Exit node').isVisible()).toBe(true);
    const b = page.getByRole('radio', { name: /\bb\b/ }).last();
    await expect.poll(() => b.isEnabled(), { timeout: 30_000 }).toBe(true);
    await b.click();
    await expect.poll(async () => (await nodes.a?.status())?.exitNode?.id, { timeout: 20_000 }).toBeTruthy();
    await expect.poll(() => b.isChecked()).toBe(true);
    await screenshots(page, 'real-engine-exit-nodes');
    await page.getByRole('button', { name: 'Back' }).click();
    await expect.poll(() => statusLine().textContent(), { timeout: 20_000 }).toMatch(/· exit node b$/);
    await screenshots(page, 'real-engine-home-exit-node');

    await page.getByRole('button', { name: /Exit node/ }).click();
    await page.getByRole('radio', { name: /^None/ }).click();
    await expect
      .poll(async () => (await nodes.a?.status())?.exitNode ?? null, { timeout: 20_000 })
      .toBeNull();
    await page.getByRole('button', { name: 'Back' }).click();
    await expect
      .poll(() => statusLine().textContent(), { timeout: 20_000 })
      .toMatch(/^Connected · \d direct/);
  }, 90_000);

  it('disconnects and reconnects the real tunnel with the switch (real engine)', async () => {
    const bIp = (await nodes.b?.ip4()) ?? '';
    const toggle = page.getByRole('switch', { name: 'Connection' });
    await toggle.click();
    await expect.poll(() => statusLine().textContent(), { timeout: 20_000 }).toBe('Disconnected');
    expect((await nodes.a?.status())?.backendState).toBe('Stopped');
    expect(await nodes.a?.host.ping(bIp, { count: 1, deadlineS: 2 })).toBe(false);
    await screenshots(page, 'real-engine-disconnected');

    await toggle.click();
    await expect.poll(() => statusLine().textContent(), { timeout: 45_000 }).toMatch(/^Connected/);
    expect((await nodes.a?.status())?.backendState).toBe('Running');
    await waitFor(
      'a reaches b again',
      () => nodes.a?.host.ping(bIp, { count: 1, deadlineS: 1 }) ?? Promise.resolve(false),
      20_000,
    );
  }, 90_000);
});
