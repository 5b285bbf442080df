import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { startWebShell, type WebShell } from '../../core/src/web/server.js';
import { DemoApp, type DemoAppOptions } from '../../core/src/web/testing/index.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const RENDERER_DIST = join(REPO, 'renderer', 'dist');
export const RESULTS = join(REPO, 'test-results', 'ui');
const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const CHROMIUM = process.env.WEFT_CHROMIUM ?? '/usr/bin/chromium';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
}

export interface Session {
  backend: DemoApp;
  shell: WebShell;
  context: BrowserContext;
  page: Page;
  /** Console errors matching these are expected (e.g. a refused WebSocket while testing reconnects). */
  allowErrors: RegExp[];
  /** Cuts the page's event stream and refuses new ones for `ms`, as a restarting shell would. */
  dropEventStreams(ms: number): Promise<void>;
  close(): Promise<void>;
}

/** A stand-in identity provider: opening a sign-in link it made signs the person in. */
async function startMockIdp(complete: (url: string) => boolean) {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
    const ok = url.pathname === '/mock-idp/authorize' && complete(url.toString());
    res.writeHead(ok ? 200 : 400, { 'content-type': 'text/html; charset=utf-8' });
    res.end(
      `<!doctype html><html lang="en"><title>Mock identity provider</title><h1>${ok ? 'Signed in. You can close this window.' : 'This sign-in link is not valid.'}</h1></html>`,
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

/**
 * The web shell (core/src/web/server.ts) and its controller as `weft web` runs them, over a
 * stand-in engine with the demo tailnet (DemoApp), and a page that opened the shell's URL.
 */
export async function openSession(
  browser: Browser,
  opts: DemoAppOptions & { colorScheme?: 'light' | 'dark' } = {},
): Promise<Session> {
  let idpOrigin = '';
  const backend = new DemoApp({
    delayMs: 120,
    authUrlFor: () => `${idpOrigin}/mock-idp/authorize?request=${Math.random().toString(36).slice(2)}`,
    ...opts,
  });
  const idp = await startMockIdp((url) => backend.completeLogin(url));
  idpOrigin = idp.origin;
  const shell = await startWebShell({ staticDir: RENDERER_DIST, backend, host: '127.0.0.1', port: 0 });
  const context = await browser.newContext({
    viewport: { width: 400, height: 720 },
    colorScheme: opts.colorScheme ?? 'light',
    reducedMotion: 'reduce',
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: shell.origin });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(shell.url);
  const session: Session = {
    backend,
    shell,
    context,
    page,
    allowErrors: [],
    async dropEventStreams(ms: number) {
      const until = Date.now() + ms;
      // New streams from the page fail until then (Playwright stands between page and shell).
      await page.routeWebSocket(/\/bridge\/v0\/events/, (ws) => {
        if (Date.now() < until) ws.close({ code: 1011, reason: 'refused in the test' });
        else ws.connectToServer();
      });
      shell.closeEventStreams();
    },
    async close() {
      await context.close();
      await shell.close();
      await idp.close();
      backend.dispose();
      const unexpected = errors.filter((e) => !session.allowErrors.some((re) => re.test(e)));
      if (unexpected.length) throw new Error(`page errors: ${unexpected.join(' | ')}`);
    },
  };
  return session;
}

/** Saves a screenshot as test-results/ui/NAME-THEME.png, in light and dark. */
export async function screenshots(page: Page, name: string): Promise<string[]> {
  mkdirSync(RESULTS, { recursive: true });
  const paths: string[] = [];
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme, reducedMotion: 'reduce' });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const path = join(RESULTS, `${name}-${scheme}.png`);
    await page.screenshot({ path, fullPage: true, animations: 'disabled' });
    paths.push(path);
  }
  await page.emulateMedia({ colorScheme: 'light' });
  return paths;
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: string[];
}

/** axe-core on the current screen, in both colour schemes; returns serious and critical violations. */
export async function axeSerious(page: Page): Promise<AxeViolation[]> {
  const out: AxeViolation[] = [];
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme, reducedMotion: 'reduce' });
    const has = await page.evaluate(() => 'axe' in window);
    if (!has) await page.evaluate(AXE_SOURCE);
    const violations = (await page.evaluate(async () => {
      const axe = (
        window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: unknown[] }> } }
      ).axe;
      const r = await axe.run(document, { resultTypes: ['violations'] });
      return r.violations;
    })) as { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
    for (const v of violations) {
      if (v.impact === 'serious' || v.impact === 'critical') {
        out.push({
          id: `${v.id} (${scheme})`,
          impact: v.impact,
          help: v.help,
          nodes: v.nodes.map((n) => n.target.join(' ')),
        });
      }
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  return out;
}
