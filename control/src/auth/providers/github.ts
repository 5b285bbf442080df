import * as client from 'openid-client';
import { z } from 'zod';
import type { GithubConfig } from '../../config/config.js';
import type { Identity } from '../identity.js';
import { SignInError } from '../sign-in-error.js';
import {
  type AuthAttemptSecrets,
  fetchWithTimeout,
  type IdentityProvider,
  providerDown,
  readSecret,
} from './provider.js';

// Sign-in with GitHub through its OAuth web flow (GitHub is not an OpenID provider): authorize,
// exchange the code (with PKCE, which GitHub supports), then GET /user for the stable numeric id
// and GET /user/emails for the verified primary email. The identity is `github` + the user id,
// which survives renames. Base URLs are configurable for GitHub Enterprise Server.

const Token = z.union([
  z.object({ access_token: z.string().min(1) }),
  z.object({ error: z.string(), error_description: z.string().optional() }),
]);
const User = z.object({ id: z.number().int(), login: z.string(), name: z.string().nullable().optional() });
const Emails = z.array(z.object({ email: z.string(), primary: z.boolean(), verified: z.boolean() }));

export class GithubProvider implements IdentityProvider {
  readonly id = 'github';
  readonly label = 'Sign in with GitHub';
  readonly callbackPath = '/github/callback';
  private readonly secret: string;

  constructor(private readonly config: GithubConfig) {
    this.secret = readSecret(config.clientSecretFile, '--github-client-secret-file');
  }

  async authorizationUrl(secrets: AuthAttemptSecrets, redirectUri: string): Promise<URL> {
    const url = new URL('/login/oauth/authorize', this.config.webUrl);
    url.search = new URLSearchParams({
      client_id: this.config.clientId,
      redirect_uri: redirectUri,
      // read:user for the profile, user:email for the (private) verified email list.
      scope: 'read:user user:email',
      state: secrets.state,
      allow_signup: 'false',
      code_challenge: await client.calculatePKCECodeChallenge(secrets.codeVerifier),
      code_challenge_method: 'S256',
    }).toString();
    return url;
  }

  async complete(callbackUrl: URL, secrets: AuthAttemptSecrets): Promise<Identity> {
    const params = callbackUrl.searchParams;
    const error = params.get('error');
    if (error !== null) {
      throw new SignInError(
        400,
        'Sign-in refused',
        `GitHub did not sign you in: ${params.get('error_description') ?? error}.`,
      );
    }
    const code = params.get('code');
    if (code === null) throw new SignInError(400, 'Sign-in failed', 'GitHub sent no sign-in code back.');

    const token = Token.safeParse(
      await this.json(new URL('/login/oauth/access_token', this.config.webUrl), {
        method: 'POST',
        headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          client_id: this.config.clientId,
          client_secret: this.secret,
          code,
          redirect_uri: `${callbackUrl.origin}${callbackUrl.pathname}`,
          code_verifier: secrets.codeVerifier,
        }).toString(),
      }),
    );
    if (!token.success)
      throw new SignInError(502, 'Sign-in failed', 'GitHub answered the code exchange with nonsense.');
    if ('error' in token.data) {
      throw new SignInError(
        400,
        'Sign-in refused',
        `GitHub refused to complete the sign-in: ${token.data.error_description ?? token.data.error}. The sign-in code may have been used already; open the sign-in link from your device again.`,
      );
    }
    const auth = {
      authorization: `Bearer ${token.data.access_token}`,
      accept: 'application/vnd.github+json',
    };
    const user = User.safeParse(
      await this.json(new URL('user', `${this.config.apiUrl}/`), { headers: auth }),
    );
    const emails = Emails.safeParse(
      await this.json(new URL('user/emails', `${this.config.apiUrl}/`), { headers: auth }),
    );
    if (!user.success || !emails.success) {
      throw new SignInError(
        502,
        'Sign-in failed',
        'GitHub’s user or email answer was not what GitHub documents.',
      );
    }
    const primary = emails.data.find((e) => e.primary && e.verified);
    return {
      provider: 'github',
      subject: String(user.data.id),
      email: primary?.email ?? null,
      emailVerified: primary !== undefined,
      displayName: user.data.name ?? user.data.login,
      groups: [],
    };
  }

  /** One GitHub request; a network failure or a 5xx means GitHub is down, not that the person erred. */
  private async json(url: URL, init: RequestInit): Promise<unknown> {
    let res: Response;
    try {
      res = await fetchWithTimeout(url.href, {
        ...init,
        headers: { 'user-agent': 'weft-control', ...init.headers },
      });
    } catch (err) {
      throw providerDown('GitHub', err);
    }
    if (res.status >= 500) throw providerDown('GitHub', new Error(`HTTP ${res.status} from ${url.pathname}`));
    if (!res.ok) {
      throw new SignInError(
        502,
        'Sign-in failed',
        `GitHub answered ${url.pathname} with HTTP ${res.status}.`,
      );
    }
    try {
      return await res.json();
    } catch {
      throw new SignInError(
        502,
        'Sign-in failed',
        `GitHub answered ${url.pathname} with something other than JSON.`,
      );
    }
  }
}
