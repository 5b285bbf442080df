import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { must, type RunResult, run } from './exec.js';
import { Host, type Lab, type Segment } from './lab.js';
import { REPO } from './weft.js';

// Sign-in labs: the test process is the person's browser, so it must reach control and the
// identity provider. The root namespace (where the test runs) joins a lab segment through a veth;
// control runs there too, next to a real OpenID Connect provider on 127.0.0.1, and the nodes reach
// control over the segment.

/** The root namespace as a lab host: commands run directly, not through `ip netns exec`. */
export class RootHost extends Host {
  /** Added to the environment of every process spawned here (e.g. control's OIDC settings). */
  env: NodeJS.ProcessEnv = {};

  constructor(
    lab: Lab,
    /** The segment's /24 as its first three octets (e.g. 198.19.7): hosts take their addresses in it. */
    readonly net: string,
  ) {
    super(lab, 'root', '', `${net}.250`);
  }

  override exec(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    return run(argv, opts);
  }

  override must(argv: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    return must(argv, opts);
  }

  override spawn(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
    const [cmd, ...args] = argv;
    if (!cmd) throw new Error('spawn: empty argv');
    return this.lab.track(
      spawn(cmd, args, {
        env: { ...process.env, ...this.env, ...opts.env },
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
  }
}

/**
 * Joins the root namespace to `segment` at .250 of a 198.19.N.0/24 no root route uses yet. The
 * root namespace's routes are shared by every run on the machine (and by what a killed run left
 * behind), so a fixed prefix would send this run's packets into another lab's segment. The veth's
 * far end lives in the lab's hub namespace, so both ends go when the lab is cleaned up.
 */
export async function joinRoot(lab: Lab, segment: Segment): Promise<RootHost> {
  const net = await unusedRootNet();
  const outer = lab.name('rt');
  const inner = lab.name('rh');
  const hub = lab.name('hub');
  await must(['ip', 'link', 'add', outer, 'type', 'veth', 'peer', 'name', inner, 'netns', hub]);
  await must(['ip', '-n', hub, 'link', 'set', inner, 'master', segment.bridge, 'up']);
  await must(['ip', 'addr', 'add', `${net}.250/24`, 'dev', outer]);
  await must(['ip', 'link', 'set', outer, 'up']);
  return new RootHost(lab, net);
}

async function unusedRootNet(): Promise<string> {
  const routes = await must(['ip', '-4', 'route', 'show', 'table', 'all']);
  const used = new Set(routes.match(/198\.19\.\d+(?=\.)/g) ?? []);
  // Random first, so two runs starting together rarely race for the same prefix.
  const start = Math.floor(Math.random() * 250);
  for (let i = 0; i < 250; i++) {
    const net = `198.19.${1 + ((start + i) % 250)}`;
    if (!used.has(net)) return net;
  }
  throw new Error(
    'joinRoot: every 198.19.N.0/24 is routed in the root namespace (leaked labs? see `ip -br link`)',
  );
}

/** A TCP port free on `host` right now. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

// --- control's test identity provider and browser -------------------------------------------

export interface TestIdp {
  issuer: string;
  stop(): Promise<void>;
}

export interface Page {
  url: string;
  status: number;
  body: string;
  location: string | null;
}

/** A fetch-based browser with a cookie jar that follows redirects by hand. */
export interface TestBrowser {
  request(url: string, init?: { method?: string; form?: Record<string, string> }): Promise<Page>;
  follow(url: string, stop?: (url: string) => boolean): Promise<Page>;
}

export interface IdentitySupport {
  /** oidc-provider on 127.0.0.1:port with alice@example.com and bob@other.org. */
  startIdp(port: number, redirectUris: string[]): Promise<TestIdp>;
  /** Opens control's auth URL and signs in at the provider; returns the callback URL to control. */
  signInAtIdp(browser: TestBrowser, authUrl: string, login: string, idpIssuer: string): Promise<string>;
  /** Back at control with the callback URL: presses Connect on the confirmation page; the last page. */
  confirmAtControl(browser: TestBrowser, callbackUrl: string): Promise<Page>;
  Browser: new () => TestBrowser;
  CLIENT_ID: string;
  CLIENT_SECRET: string;
  PEOPLE: Record<string, { email: string; name: string; groups: string[] }>;
}

/**
 * Control's own test support (control/src/testing: a real oidc-provider with its login and consent
 * pages, and the browser that drives them), loaded from source: vitest compiles it on import, and
 * like control's tests it is part of no build.
 */
export async function loadIdentitySupport(): Promise<IdentitySupport> {
  const dir = join(REPO, 'control', 'src', 'testing');
  const load = (file: string) => import(pathToFileURL(join(dir, file)).href);
  const [idp, browser] = await Promise.all([load('identity-provider.ts'), load('browser.ts')]);
  return { ...idp, Browser: browser.Browser } as IdentitySupport;
}
