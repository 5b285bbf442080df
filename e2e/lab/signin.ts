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

  constructor(lab: Lab, ip: string) {
    super(lab, 'root', '', ip);
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
 * Joins the root namespace to `segment` at `address` (a prefix of its own, so two runs on one
 * machine never share a root route). The veth's far end lives in the lab's hub namespace, so both
 * ends go when the lab is cleaned up.
 */
export async function joinRoot(lab: Lab, segment: Segment, address: string): Promise<RootHost> {
  const outer = lab.name('rt');
  const inner = lab.name('rh');
  const hub = lab.name('hub');
  await must(['ip', 'link', 'add', outer, 'type', 'veth', 'peer', 'name', inner, 'netns', hub]);
  await must(['ip', '-n', hub, 'link', 'set', inner, 'master', segment.bridge, 'up']);
  await must(['ip', 'addr', 'add', address, 'dev', outer]);
  await must(['ip', 'link', 'set', outer, 'up']);
  return new RootHost(lab, address.split('/')[0] as string);
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
