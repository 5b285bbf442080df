import * as client from 'openid-client';
import type { OidcConfig } from '../../config/config.js';
import type { Identity } from '../identity.js';
import { SignInError } from '../sign-in-error.js';
import { type AuthAttemptSecrets, type IdentityProvider, providerDown, readSecret } from './provider.js';

// Sign-in through any OpenID Connect issuer (Google, Entra ID, Okta, Keycloak, Authentik, Dex…):
// discovery, authorization code with PKCE (S256), state and nonce checked by openid-client, the ID
// token's signature and claims validated against the issuer's keys.

const DISCOVERY_TIMEOUT_S = 10;

/** Plain HTTP only to a provider on this machine (a development or test set-up). */
function isLoopback(url: URL): boolean {
  return url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\./.test(url.hostname);
}

export class OidcProvider implements IdentityProvider {
  readonly id = 'oidc';
  readonly callbackPath = '/oidc/callback';
  readonly label: string;

  private constructor(
    private readonly config: OidcConfig,
    private readonly client: client.Configuration,
  ) {
    this.label = `Sign in with ${new URL(config.issuer).host}`;
  }

  /** Discovers the issuer; throws with a message saying what to check when it cannot. */
  static async discover(config: OidcConfig): Promise<OidcProvider> {
    const issuer = new URL(config.issuer);
    if (issuer.protocol !== 'https:' && !isLoopback(issuer)) {
      throw new Error(
        `--oidc-issuer must be an https:// URL (plain http only for a provider on this machine): ${config.issuer}`,
      );
    }
    const secret = readSecret(config.clientSecretFile, '--oidc-client-secret-file');
    try {
      const found = await client.discovery(issuer, config.clientId, secret, undefined, {
        timeout: DISCOVERY_TIMEOUT_S,
        ...(issuer.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : {}),
      });
      return new OidcProvider(config, found);
    } catch (err) {
      const cause =
        err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
      throw new Error(
        `cannot discover the OIDC issuer ${config.issuer} (${cause}): check --oidc-issuer and that ${discoveryUrl(issuer)} answers from this machine`,
      );
    }
  }

  async authorizationUrl(secrets: AuthAttemptSecrets, redirectUri: string): Promise<URL> {
    return client.buildAuthorizationUrl(this.client, {
      redirect_uri: redirectUri,
      scope: this.config.scopes.join(' '),
      response_type: 'code',
      state: secrets.state,
      nonce: secrets.nonce,
      code_challenge: await client.calculatePKCECodeChallenge(secrets.codeVerifier),
      code_challenge_method: 'S256',
    });
  }

  async complete(callbackUrl: URL, secrets: AuthAttemptSecrets): Promise<Identity> {
    const issuer = this.config.issuer;
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(this.client, callbackUrl, {
        pkceCodeVerifier: secrets.codeVerifier,
        expectedState: secrets.state,
        expectedNonce: secrets.nonce,
        idTokenExpected: true,
      });
    } catch (err) {
      throw explain(issuer, err);
    }
    const claims = tokens.claims();
    if (claims === undefined) throw new SignInError(502, 'Sign-in failed', `${issuer} returned no ID token.`);
    let all: Record<string, unknown> = claims;
    // Some providers (Keycloak and Okta without extra scopes, Authentik) put email or groups only in
    // the userinfo answer.
    if ((claims.email === undefined || claims[this.config.groupsClaim] === undefined) && this.hasUserinfo()) {
      try {
        all = { ...(await client.fetchUserInfo(this.client, tokens.access_token, claims.sub)), ...claims };
      } catch (err) {
        throw explain(issuer, err);
      }
    }
    const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);
    return {
      provider: issuer,
      subject: claims.sub,
      email: text(all.email),
      // Only an explicit vouch counts. Entra ID sends no email_verified: its `email` is whatever
      // the account's owner typed unless the optional claim xms_edov says the domain is verified.
      emailVerified: text(all.email) !== null && (all.email_verified === true || all.xms_edov === true),
      displayName: text(all.name),
      groups: groupsFrom(all[this.config.groupsClaim]),
    };
  }

  private hasUserinfo(): boolean {
    return this.client.serverMetadata().userinfo_endpoint !== undefined;
  }
}

function discoveryUrl(issuer: URL): string {
  return `${issuer.href.replace(/\/$/, '')}/.well-known/openid-configuration`;
}

/** The groups claim is a list of names, or (some providers, one group) a single string. */
function groupsFrom(value: unknown): string[] {
  const list = Array.isArray(value) ? value : typeof value === 'string' ? [value] : [];
  return list.filter((g): g is string => typeof g === 'string' && g !== '');
}

/** The claim a failed comparison was about; openid-client wraps oauth4webapi's error, which names it. */
function comparedClaim(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const claim = (e.cause as { claim?: unknown } | undefined)?.claim;
    if (typeof claim === 'string') return claim;
  }
  return undefined;
}

/** Turns openid-client's failures into what the person should read. */
function explain(issuer: string, err: unknown): SignInError {
  if (err instanceof client.ResponseBodyError) {
    return new SignInError(
      400,
      'Sign-in refused',
      `${issuer} refused to complete the sign-in: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}. The sign-in code may have been used already; open the sign-in link from your device again.`,
    );
  }
  if (err instanceof client.AuthorizationResponseError) {
    return new SignInError(
      400,
      'Sign-in refused',
      `${issuer} did not sign you in: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}.`,
    );
  }
  const code = (err as { code?: string }).code;
  if (code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED' && comparedClaim(err) === 'nonce') {
    return new SignInError(
      400,
      'Sign-in did not match',
      'The identity provider’s answer belongs to another sign-in (its nonce does not match), so it was refused. Open the sign-in link from your device again.',
    );
  }
  if (typeof code === 'string' && code.startsWith('OAUTH_')) {
    return new SignInError(
      502,
      'Sign-in failed',
      `${issuer} gave an answer that could not be trusted: ${(err as Error).message}.`,
    );
  }
  return providerDown(issuer, err);
}
