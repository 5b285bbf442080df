import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoEngine } from '../../core/src/bridge/testing/index.js';
import { axeSerious, launchChromium, openSession, RENDERER_DIST, RESULTS, screenshots } from './harness.js';

// The renderer in a real Chromium, through the web shell's HTTP + WebSocket bridge and the
// controller `weft web` runs, with only the engine replaced by a stand-in (DemoApp: the demo
// tailnet, a stand-in identity provider). "mocked bridge" in every name: no real engine behind it.

let browser: Browser;
const metrics: Record<string, unknown> = {};

beforeAll(async () => {
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
});

const heading = (page: Page, name: string | RegExp) => page.getByRole('heading', { level: 1, name });
const statusLine = (page: Page) => page.locator('.status-line');

async function expectAccessible(page: Page) {
  const violations = await axeSerious(page);
  expect(violations, JSON.stringify(violations, null, 2)).toEqual([]);
}

describe('desktop UI in Chromium (mocked bridge)', () => {
  it('sign-in flow: validation, waiting with the link, the browser sign-in, signed in (mocked bridge)', async () => {
    const s = await openSession(browser);
    const { page, backend } = s;
    try {
      await expect.poll(() => heading(page, 'Sign in to Weft').isVisible()).toBe(true);
      const url = page.getByRole('textbox', { name: 'Control server' });
      // focus starts on the screen's heading; the next Tab is the address field
      await expect
        .poll(() => page.evaluate(() => document.activeElement?.textContent))
        .toBe('Sign in to Weft');
      await page.keyboard.press('Tab');
      expect(await url.evaluate((el) => el === document.activeElement)).toBe(true);
      await screenshots(page, 'signin');
      await expectAccessible(page);

      // an address without a scheme is refused with a message, and never reaches the backend
      await url.fill('weft.example.com');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => page.getByRole('alert').textContent()).toContain('starting with https://');
      expect(await url.getAttribute('aria-invalid')).toBe('true');
      expect(backend.calls.filter((c) => c.method === 'login')).toEqual([]);
      await screenshots(page, 'signin-invalid');

      // a valid one: Enter submits (keyboard), the waiting screen shows the link and Cancel
      await url.fill('https://weft.example.com');
      await url.press('Enter');
      await expect.poll(() => heading(page, 'Finish signing in in your browser').isVisible()).toBe(true);
      const link = page.getByRole('link', { name: 'Open sign-in page' });
      await expect.poll(() => link.isVisible()).toBe(true);
      const authUrl = backend.state.login.authUrl;
      expect(authUrl).toMatch(/\/mock-idp\/authorize\?request=/);
      expect(await link.getAttribute('href')).toBe(authUrl);
      expect(await page.getByRole('textbox', { name: 'Sign-in link' }).inputValue()).toBe(authUrl);
      await page.getByRole('button', { name: 'Copy sign-in link' }).click();
      await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(authUrl);
      await screenshots(page, 'signin-waiting');
      await expectAccessible(page);

      // the person opens the link and signs in at the identity provider, in another tab
      const [idp] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
      await idp.waitForLoadState();
      expect(await idp.getByRole('heading').textContent()).toBe('Signed in. You can close this window.');
      await idp.close();
      await expect.poll(() => heading(page, 'alice-laptop').isVisible()).toBe(true);
      expect(backend.calls.find((c) => c.method === 'login')?.input).toEqual({
        controlUrl: 'https://weft.example.com',
      });
    } finally {
      await s.close();
    }
  });

  it('sign-in can be cancelled while waiting (mocked bridge)', async () => {
    const s = await openSession(browser);
    const { page, backend } = s;
    try {
      await page.getByRole('textbox', { name: 'Control server' }).fill('https://weft.example.com');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => page.getByRole('link', { name: 'Open sign-in page' }).isVisible()).toBe(true);
      const authUrl = backend.state.login.authUrl ?? '';
      await page.getByRole('button', { name: 'Cancel' }).click();
      await expect.poll(() => heading(page, 'Sign in to Weft').isVisible()).toBe(true);
      expect(backend.completeLogin(authUrl)).toBe(false); // the link no longer signs anyone in
      // the address typed before is kept for the next try
      expect(await page.getByRole('textbox', { name: 'Control server' }).inputValue()).toBe(
        'https://weft.example.com',
      );
    } finally {
      await s.close();
    }
  });

  it('main view and peers list: this device, status, search, copy an address (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page } = s;
    try {
      await expect.poll(() => heading(page, 'alice-laptop').isVisible()).toBe(true);
      await expect.poll(() => statusLine(page).textContent()).toBe('Connected · 3 direct, 2 relayed');
      const devices = page.getByRole('list', { name: 'Devices' }).getByRole('listitem');
      expect(await devices.count()).toBe(7);
      const nas = page.getByRole('listitem', { name: 'nas' });
      expect(await nas.textContent()).toContain('Online · Direct · Linux');
      // A relayed peer says why.
      expect(await page.getByRole('listitem', { name: 'build-server' }).textContent()).toContain(
        'Relayed (peer’s NAT maps per destination)',
      );
      expect(await page.getByRole('listitem', { name: 'bob-phone' }).textContent()).toContain(
        'Offline · last seen 2 h ago · iOS',
      );
      // online devices are listed before offline ones
      const names = await devices.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
      expect(names).toEqual([
        'alice-desktop',
        'build-server',
        'fra-exit',
        'nas',
        'office-gw',
        'bob-phone',
        'pi-exit',
      ]);
      await screenshots(page, 'home');
      await expectAccessible(page);

      const search = page.getByRole('searchbox', { name: 'Search devices' });
      await search.fill('exit');
      await expect.poll(() => devices.count()).toBe(3);
      await search.fill('100.64.0.3');
      await expect
        .poll(() => devices.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label'))))
        .toEqual(['build-server']);
      await search.fill('windows');
      await expect
        .poll(() => devices.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label'))))
        .toEqual(['alice-desktop']);
      await search.fill('nothing-like-this');
      await expect.poll(() => page.getByText('No devices match “nothing-like-this”.').isVisible()).toBe(true);
      await screenshots(page, 'home-search-empty');
      await search.fill('');

      await page.getByRole('button', { name: 'Copy address of nas (100.64.0.2)' }).click();
      await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe('100.64.0.2');
      await expect
        .poll(() => page.getByRole('status').filter({ hasText: 'Copied 100.64.0.2' }).count())
        .toBe(1);
      await page.getByRole('button', { name: 'Copy 100.64.0.1' }).click();
      await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe('100.64.0.1');
    } finally {
      await s.close();
    }
  });

  it('pick an exit node and see the status change; allow LAN; back to none (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      await page.getByRole('button', { name: /Exit node/ }).click();
      await expect.poll(() => heading(page, 'Exit node').isVisible()).toBe(true);
      const none = page.getByRole('radio', { name: /^None/ });
      expect(await none.isChecked()).toBe(true);
      // Recommended: the online exit node with the lowest latency
      expect(await page.getByRole('radio', { name: /Recommended\s+office-gw/ }).count()).toBe(1);
      expect(await page.getByRole('radio', { name: /pi-exit/ }).isDisabled()).toBe(true);
      await screenshots(page, 'exit-nodes');
      await expectAccessible(page);

      await page.getByRole('radio', { name: /fra-exit/ }).click();
      await expect.poll(() => backend.state.engine?.exitNode).toEqual({ id: 'n-fra', allowLan: false });
      await expect.poll(() => page.getByRole('radio', { name: /fra-exit/ }).isChecked()).toBe(true);

      const lan = page.getByRole('switch', { name: 'Allow local network access' });
      await lan.click();
      await expect.poll(() => lan.getAttribute('aria-checked')).toBe('true');
      expect(backend.state.engine?.exitNode).toEqual({ id: 'n-fra', allowLan: true });

      const search = page.getByRole('searchbox', { name: 'Search exit nodes' });
      await search.fill('berlin');
      await expect.poll(() => page.getByRole('radio').count()).toBe(2); // None + office-gw
      await search.fill('');
      await screenshots(page, 'exit-nodes-selected');

      await page.getByRole('button', { name: 'Back' }).click();
      await expect
        .poll(() => statusLine(page).textContent())
        .toBe('Connected · 3 direct, 2 relayed · exit node fra-exit');
      expect(await page.getByRole('button', { name: /Exit node/ }).textContent()).toContain('fra-exit');
      await screenshots(page, 'home-exit-node');

      // the last used is listed first next time; None turns it off
      await page.getByRole('button', { name: /Exit node/ }).click();
      const radios = await page
        .getByRole('radio')
        .evaluateAll((els) => els.map((e) => e.closest('label')?.textContent));
      expect(radios[1]).toContain('office-gw'); // Recommended stays on top
      expect(radios[2]).toContain('fra-exit');
      await page.getByRole('radio', { name: /^None/ }).click();
      await expect.poll(() => backend.state.engine?.exitNode).toBeNull();
      await page.getByRole('button', { name: 'Back' }).click();
      await expect.poll(() => statusLine(page).textContent()).toBe('Connected · 3 direct, 2 relayed');
    } finally {
      await s.close();
    }
  });

  it('disconnect and reconnect with the switch, by mouse and keyboard (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      const toggle = page.getByRole('switch', { name: 'Connection' });
      expect(await toggle.getAttribute('aria-checked')).toBe('true');
      await toggle.click();
      await expect.poll(() => statusLine(page).textContent()).toBe('Disconnected');
      expect(await toggle.getAttribute('aria-checked')).toBe('false');
      expect(backend.state.engine?.backendState).toBe('Stopped');
      await screenshots(page, 'home-disconnected');
      await expectAccessible(page);

      await toggle.focus();
      await page.keyboard.press('Space');
      await expect.poll(() => statusLine(page).textContent()).toBe('Connecting…');
      await expect.poll(() => statusLine(page).textContent()).toBe('Connected · 3 direct, 2 relayed');
      expect(backend.calls.map((c) => c.method).filter((m) => m === 'connect' || m === 'disconnect')).toEqual(
        ['disconnect', 'connect'],
      );
    } finally {
      await s.close();
    }
  });

  it('keyboard only: Tab reaches every control in order, all with names (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page } = s;
    try {
      await heading(page, 'alice-laptop').waitFor();
      const names: string[] = [];
      for (let i = 0; i < 16; i++) {
        await page.keyboard.press('Tab');
        names.push(
          await page.evaluate(() => {
            const el = document.activeElement as HTMLElement | null;
            if (!el) return '';
            const labelled = el.getAttribute('aria-labelledby');
            const name =
              el.getAttribute('aria-label') ??
              (labelled ? document.getElementById(labelled)?.textContent : null) ??
              (el.id ? document.querySelector(`label[for="${el.id}"]`)?.textContent : null) ??
              el.textContent;
            return `${el.getAttribute('role') ?? el.tagName.toLowerCase()}:${(name ?? '').trim()}`;
          }),
        );
      }
      // focus starts on the screen heading, so the first Tab is the connection switch
      expect(names.slice(0, 6)).toEqual([
        'switch:Connection',
        'button:Copy 100.64.0.1',
        'button:Copy fd7a:115c:a1e0::1',
        'button:Exit nodeNone',
        'input:Search devices',
        'button:Copy address of alice-desktop (100.64.0.8)',
      ]);
      expect(names.every((n) => !n.endsWith(':'))).toBe(true);
      // Settings is before the heading: Shift+Tab from the switch reaches it; Enter opens it
      await page.getByRole('switch', { name: 'Connection' }).focus();
      await page.keyboard.press('Shift+Tab');
      expect(await page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).toBe('Settings');
      await page.keyboard.press('Enter');
      await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe('Settings');
    } finally {
      await s.close();
    }
  });

  it('settings: account, advertise, theme, sign out (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      await page.getByRole('button', { name: 'Settings' }).click();
      await expect.poll(() => heading(page, 'Settings').isVisible()).toBe(true);
      expect(await page.getByText('Signed in as').textContent()).toContain('Alice Example');
      await screenshots(page, 'settings');
      await expectAccessible(page);

      await page.getByRole('switch', { name: 'Run as exit node' }).click();
      await expect.poll(() => backend.state.engine?.prefs?.advertiseExitNode).toBe(true);
      const routes = page.getByRole('textbox', { name: 'Advertise routes' });
      await routes.fill('198.51.100.7/24');
      await routes.press('Enter');
      await expect
        .poll(() => page.getByRole('alert').textContent())
        .toBe('198.51.100.7/24 is not a route (like 198.51.100.0/24)');
      await routes.fill('198.51.100.0/24, 203.0.113.0/24');
      await routes.press('Enter');
      await expect
        .poll(() => backend.state.engine?.prefs?.advertiseRoutes)
        .toEqual(['198.51.100.0/24', '203.0.113.0/24']);

      // explicit theme overrides the OS preference
      await page.getByRole('radio', { name: 'Dark' }).click();
      await expect.poll(() => page.evaluate(() => document.documentElement.dataset.theme)).toBe('dark');
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      expect(bg).toBe('rgb(21, 23, 27)');
      await page.getByRole('radio', { name: 'System' }).click();
      await expect.poll(() => page.evaluate(() => document.documentElement.dataset.theme)).toBeUndefined();

      await page.getByRole('button', { name: 'Sign out' }).click();
      await expect.poll(() => backend.state.engine?.backendState).toBe('NeedsLogin');
      await page.getByRole('button', { name: 'Back' }).click();
      await expect.poll(() => heading(page, 'Sign in to Weft').isVisible()).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('problems are shown plainly: engine down, helper failing, link lost (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      await heading(page, 'alice-laptop').waitFor();
      backend.update((st) => {
        st.helper = {
          phase: 'failed',
          restarts: 5,
          message: 'The network helper exited with code 1',
          nextAttemptAt: null,
        };
      });
      await expect
        .poll(() => page.getByRole('alert').first().textContent())
        .toContain('The network helper exited with code 1. Weft keeps trying to start it.');
      await expect.poll(() => statusLine(page).textContent()).toBe('Not working');
      await screenshots(page, 'error-helper');
      await expectAccessible(page);
      backend.update((st) => {
        st.engine = null;
        st.engineError = 'the Weft engine is not running';
      });
      await expect
        .poll(() => page.getByRole('alert').first().textContent())
        .toContain("Weft's engine is not running: the Weft engine is not running");
      await screenshots(page, 'error-engine');
      // the tray's own menu would say the same; the UI keeps working once the engine is back
      backend.update((st) => {
        st.helper = { phase: 'running', restarts: 5, message: null, nextAttemptAt: null };
        st.engine = demoEngine(Date.now());
        st.engineError = null;
      });
      await expect.poll(() => statusLine(page).textContent()).toBe('Connected · 3 direct, 2 relayed');
    } finally {
      await s.close();
    }
  });

  it('warns when this device’s key expires within 7 days and re-authenticates (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      await heading(page, 'alice-laptop').waitFor();
      backend.update((st) => {
        const self = st.engine?.self;
        if (self) self.keyExpiry = new Date(Date.now() + 3 * 86_400_000 - 60_000).toISOString();
      });
      await expect
        .poll(() => page.getByRole('alert').first().textContent())
        .toContain('key expires in 3 days');
      await screenshots(page, 'home-key-expiring');
      await expectAccessible(page);
      await page.getByRole('button', { name: 'Sign in again' }).click();
      await expect
        .poll(() => backend.calls.find((c) => c.method === 'login')?.input)
        .toEqual({
          controlUrl: 'https://weft.example.com',
        });
    } finally {
      await s.close();
    }
  });

  it('losing the event stream shows a banner, reconnects by itself and catches up (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    const { page, backend } = s;
    try {
      await heading(page, 'alice-laptop').waitFor();
      s.allowErrors.push(/WebSocket connection to .* failed/);
      await s.dropEventStreams(1500);
      await expect
        .poll(() => page.getByRole('alert').filter({ hasText: 'Lost the connection to Weft' }).count())
        .toBe(1);
      backend.update((st) => {
        if (st.engine) st.engine.backendState = 'Stopped';
      }); // happens while the page is not listening
      await screenshots(page, 'link-lost');
      await expect
        .poll(() => page.getByRole('alert').filter({ hasText: 'Lost the connection to Weft' }).count(), {
          timeout: 10_000,
        })
        .toBe(0);
      // the first frame after reconnecting is the full state: the page caught up
      await expect.poll(() => statusLine(page).textContent()).toBe('Disconnected');
    } finally {
      await s.close();
    }
  });

  it('the web shell refuses calls without its token or from another origin (mocked bridge)', async () => {
    const s = await openSession(browser, { signedIn: true });
    try {
      const call = (headers: Record<string, string>) =>
        fetch(`${s.shell.origin}/bridge/v0/call/disconnect`, { method: 'POST', headers, body: '{}' }).then(
          (r) => r.status,
        );
      expect(await call({})).toBe(403);
      expect(await call({ authorization: 'Bearer wrong' })).toBe(403);
      expect(await call({ authorization: `Bearer ${s.shell.token}`, origin: 'http://evil.example' })).toBe(
        403,
      );
      expect(s.backend.state.engine?.backendState).toBe('Running');
      expect(await call({ authorization: `Bearer ${s.shell.token}` })).toBe(200);
      // the token is taken out of the address bar
      expect(new URL(s.page.url()).search).toBe('');
    } finally {
      await s.close();
    }
  });

  it('first paint and bundle size (mocked bridge)', async () => {
    const s = await openSession(browser);
    try {
      await heading(s.page, 'Sign in to Weft').waitFor();
      // Chromium records the paint entries once the frame is presented, which on a busy machine
      // can be after the heading is in the DOM: wait for first-contentful-paint, bounded.
      const paint = await s.page.evaluate(async () => {
        await new Promise<void>((resolve) => {
          const done = () => {
            observer.disconnect();
            clearTimeout(timer);
            resolve();
          };
          const observer = new PerformanceObserver((list) => {
            if (list.getEntries().some((e) => e.name === 'first-contentful-paint')) done();
          });
          const timer = setTimeout(done, 10_000);
          observer.observe({ type: 'paint', buffered: true });
        });
        const entries = performance.getEntriesByType('paint').map((e) => [e.name, Math.round(e.startTime)]);
        const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
        return {
          ...Object.fromEntries(entries),
          domContentLoaded: Math.round(nav?.domContentLoadedEventEnd ?? 0),
        };
      });
      const assets = readdirSync(join(RENDERER_DIST, 'assets'));
      const sizes = Object.fromEntries(
        ['index.html', ...assets.map((a) => `assets/${a}`)].map((f) => {
          const data = readFileSync(join(RENDERER_DIST, f));
          return [f, { bytes: data.length, gzip: gzipSync(data, { level: 9 }).length }];
        }),
      );
      const gzipTotal = Object.values(sizes).reduce((n, v) => n + v.gzip, 0);
      metrics.firstPaintMs = paint;
      metrics.bundle = { files: sizes, gzipTotal };
      console.log(
        `renderer bundle ${(gzipTotal / 1024).toFixed(1)} KiB gzipped; first paint ${JSON.stringify(paint)}`,
      );
      expect(paint['first-contentful-paint']).toBeGreaterThan(0);
      expect(gzipTotal).toBeLessThan(160 * 1024);
    } finally {
      await s.close();
    }
  });
});
