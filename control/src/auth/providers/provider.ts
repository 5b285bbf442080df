import { readFileSync } from 'node:fs';
import type { Identity } from '../identity.js';
import { SignInError } from '../sign-in-error.js';

// An identity provider as the login pages use it: where to send the browser, and how to turn the
// browser's return (the callback URL) into an Identity. OIDC issuers and GitHub implement it.

/** The secrets of one trip to the provider, kept by control between the redirect and the callback. */
export interface AuthAttemptSecrets {
  state: string;
  nonce: string;
  codeVerifier: string;
}

export interface IdentityProvider {
  /** Stable id, part of the URLs: /login/<id>/<provider id>. */
  readonly id: 'oidc' | 'github';
  /** What the choice page's button says. */
  readonly label: string;
  /** Where the provider sends the browser back, below control's public URL. */
  readonly callbackPath: string;
  authorizationUrl(secrets: AuthAttemptSecrets, redirectUri: string): Promise<URL>;
  /** `callbackUrl` is the callback as the provider addressed it (public URL, path and query). */
  complete(callbackUrl: URL, secrets: AuthAttemptSecrets): Promise<Identity>;
}

/** The provider could not be reached or answered nonsense: nothing the person did wrong. */
export function providerDown(provider: string, err: unknown): SignInError {
  const cause =
    err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
  return new SignInError(
    502,
    'Identity provider unavailable',
    `${provider} could not be reached to finish the sign-in (${cause}). Nothing was changed: open the sign-in link from your device again in a moment.`,
  );
}

/** Fetch with a time limit, so a provider that hangs fails the sign-in rather than holding it. */
export async function fetchWithTimeout(url: string, init: RequestInit, ms = 10_000): Promise<Response> {
  return fetch(url, { ...init, signal: AbortSignal.timeout(ms) });
}

/** A client secret from its file (so it is in no command line, environment or process listing). */
export function readSecret(path: string, flag: string): string {
  try {
    const secret = readFileSync(path, 'utf8').trim();
    if (secret === '') throw new Error('the file is empty');
    return secret;
  } catch (err) {
    throw new Error(
      `cannot read the client secret (${flag} ${path}): ${err instanceof Error ? err.message : err}`,
    );
  }
}
