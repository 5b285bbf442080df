import type { Server } from 'node:http';
import Provider from 'oidc-provider';
import type { Browser, Page } from './browser.js';

// A real OpenID Connect provider for tests: `oidc-provider` (a certified implementation) on
// 127.0.0.1, with its development login and consent pages, a few people, and a groups claim.

export interface Person {
  email: string;
  name: string;
  groups: string[];
}

export const PEOPLE: Record<string, Person> = {
  alice: { email: 'alice@example.com', name: 'Alice Example', groups: ['eng', '/platform/oncall'] },
  bob: { email: 'bob@other.org', name: 'Bob Other', groups: ['sales'] },
};

export const CLIENT_ID = 'weft-control';
export const CLIENT_SECRET = 'test-client-secret-0123456789';

export interface TestIdp {
  issuer: string;
  stop(): Promise<void>;
}

export async function startIdp(port: number, redirectUris: string[]): Promise<TestIdp> {
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: redirectUris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    async findAccount(_ctx, id) {
      const person = PEOPLE[id];
      if (person === undefined) return undefined;
      return {
        accountId: id,
        claims: async () => ({
          sub: id,
          email: person.email,
          email_verified: true,
          name: person.name,
          preferred_username: id,
          groups: person.groups,
        }),
      };
    },
    cookies: { keys: ['weft-test-cookie-key'] },
  });
  const server: Server = provider.listen(port);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    issuer,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Opens control's auth URL and signs in at the provider as `login`, through its login and consent
 * forms. Stops before the browser returns to control and gives the callback URL, so a test can
 * visit it, tamper with it or replay it. `tamper` may rewrite the URL control sent the browser to.
 */
export async function signInAtIdp(
  browser: Browser,
  authUrl: string,
  login: string,
  idpIssuer: string,
  tamper: (idpUrl: URL) => void = () => {},
): Promise<string> {
  const toControl = (url: string) => !url.startsWith(idpIssuer);
  const start = await browser.request(authUrl);
  if (start.location === null || !start.location.startsWith(idpIssuer)) {
    throw new Error(
      `control did not send the browser to the provider: ${start.status} ${start.body.slice(0, 300)}`,
    );
  }
  const idpUrl = new URL(start.location);
  tamper(idpUrl);
  let page: Page = await browser.follow(idpUrl.href, toControl);
  for (let step = 0; page.location === null; step++) {
    if (step > 3) throw new Error(`stuck at the provider: ${page.body.slice(0, 300)}`);
    page = /name="login"/.test(page.body)
      ? await browser.submit(page, { login, password: 'any' }, toControl)
      : await browser.submit(page, {}, toControl);
  }
  return page.location;
}

/**
 * The person's browser back at control with the provider's answer: shows the confirmation page
 * and presses Connect on it. Returns the page control shows at the end (or the refusal instead of
 * the confirmation).
 */
export async function confirmAtControl(browser: Browser, callbackUrl: string): Promise<Page> {
  const page = await browser.request(callbackUrl);
  if (page.status !== 200 || !page.body.includes('Connect this device to your tailnet?')) return page;
  return browser.submit(page, {});
}
