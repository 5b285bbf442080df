import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Browser } from '../testing/browser.js';
import { cleanupAll, startTestControl, TestMachine, tempDir } from '../testing/harness.js';
import { confirmAtControl } from '../testing/identity-provider.js';

// GitHub's OAuth web flow against a local stand-in that speaks GitHub's documented endpoints
// (/login/oauth/authorize, /login/oauth/access_token, /user, /user/emails): GitHub itself cannot
// be reached from here. The stand-in signs in one fixed person and enforces what GitHub enforces
// that control relies on: the client secret, single-use codes, the redirect URI and PKCE.

afterEach(cleanupAll);

const CLIENT_ID = 'Iv1.standin';
const CLIENT_SECRET = 'github-standin-secret';

async function startGithubStandIn() {
  const codes = new Map<string, { challenge: string; redirectUri: string }>();
  const tokens = new Set<string>();
  const body = (req: IncomingMessage) =>
    new Promise<URLSearchParams>((resolve) => {
      let text = '';
      req.on('data', (c) => {
        text += c;
      });
      req.on('end', () => resolve(new URLSearchParams(text)));
    });
  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
  };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://standin');
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      const q = url.searchParams;
      if (q.get('client_id') !== CLIENT_ID || q.get('code_challenge_method') !== 'S256')
        return json(res, 400, {});
      const code = randomBytes(10).toString('hex');
      codes.set(code, { challenge: q.get('code_challenge') ?? '', redirectUri: q.get('redirect_uri') ?? '' });
      const back = new URL(q.get('redirect_uri') ?? '');
      back.searchParams.set('code', code);
      back.searchParams.set('state', q.get('state') ?? '');
      res.writeHead(302, { location: back.href }).end();
      return;
    }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      const form = await body(req);
      const grant = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      const verifier = createHash('sha256')
        .update(form.get('code_verifier') ?? '')
        .digest('base64url');
      if (form.get('client_id') !== CLIENT_ID || form.get('client_secret') !== CLIENT_SECRET) {
        return json(res, 200, { error: 'incorrect_client_credentials' });
      }
      if (
        grant === undefined ||
        grant.redirectUri !== form.get('redirect_uri') ||
        grant.challenge !== verifier
      ) {
        return json(res, 200, {
          error: 'bad_verification_code',
          error_description: 'The code passed is incorrect or expired.',
        });
      }
      const token = `gho_${randomBytes(12).toString('hex')}`;
      tokens.add(token);
      return json(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
    }
    if (!tokens.has((req.headers.authorization ?? '').replace(/^Bearer /, ''))) {
      return json(res, 401, { message: 'Bad credentials' });
    }
    if (url.pathname === '/api/user')
      return json(res, 200, { id: 583231, login: 'octocat', name: 'The Octocat' });
    if (url.pathname === '/api/user/emails') {
      return json(res, 200, [
        { email: 'octocat@users.noreply.github.com', primary: false, verified: true, visibility: null },
        { email: 'octocat@example.com', primary: true, verified: true, visibility: 'private' },
      ]);
    }
    json(res, 404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('sign-in with GitHub (GitHub stand-in)', () => {
  it('signs in with the verified primary email, authorizes the waiting node, and refuses a replayed code', async () => {
    const github = await startGithubStandIn();
    const secretFile = join(tempDir(), 'github-secret');
    writeFileSync(secretFile, CLIENT_SECRET);
    const t = await startTestControl({
      config: {
        github: {
          clientId: CLIENT_ID,
          clientSecretFile: secretFile,
          webUrl: github.base,
          apiUrl: `${github.base}/api`,
        },
        allow: { domains: ['example.com'], users: [], groups: [] },
      },
    });
    try {
      const m = new TestMachine(t);
      const asked = await m.register({ hostname: 'desktop' });
      expect(asked.json.status).toBe('needs-auth');
      const waiting = m.register({ hostname: 'desktop', wait: true });

      const browser = new Browser();
      const opened = Date.now();
      const toProvider = await browser.request(asked.json.authUrl);
      expect(toProvider.location).toMatch(new RegExp(`^${github.base}/login/oauth/authorize\\?`));
      const authorize = new URL(toProvider.location as string);
      expect(authorize.searchParams.get('redirect_uri')).toBe(`${t.control.url}/github/callback`);
      expect(authorize.searchParams.get('scope')).toBe('read:user user:email');
      const callback = (await browser.request(authorize.href)).location as string;
      const result = await confirmAtControl(browser, callback);
      const reply = await waiting;
      console.log(`GitHub: auth URL opened → node authorized: ${Date.now() - opened} ms`);

      expect(result.status).toBe(200);
      expect(result.body).toContain('desktop is now connected to your tailnet as desktop');
      expect(reply.json).toMatchObject({
        status: 'authorized',
        node: { name: 'desktop', user: 'octocat@example.com' },
      });
      const users = JSON.parse((await t.cli('users', 'list', '--json')).out);
      expect(users).toEqual([
        expect.objectContaining({
          name: 'octocat@example.com',
          provider: 'github',
          subject: '583231',
          displayName: 'The Octocat',
        }),
      ]);

      // The same code for another machine's sign-in: GitHub refuses it, nothing is authorized.
      const other = new TestMachine(t);
      const second = await other.register({ hostname: 'second' });
      const state = new URL((await browser.request(second.json.authUrl)).location as string).searchParams.get(
        'state',
      );
      const replay = new URL(callback);
      replay.searchParams.set('state', state as string);
      const refused = await browser.request(replay.href);
      expect(refused.status).toBe(400);
      expect(refused.body).toContain('The code passed is incorrect or expired');
      expect((await other.register({ hostname: 'second' })).json.status).toBe('needs-auth');
    } finally {
      await t.control.close();
      await github.close();
    }
  });
});
