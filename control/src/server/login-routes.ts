import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as client from 'openid-client';
import { Identity, providerKind, refusal, signInUser } from '../auth/identity.js';
import type { LoginService } from '../auth/logins.js';
import type { IdentityProvider } from '../auth/providers/provider.js';
import { SignInError } from '../auth/sign-in-error.js';
import type { AllowRules } from '../config/config.js';
import { errorText } from '../log.js';
import type { PendingLoginRecord } from '../tailnet/records.js';
import type { ControlContext } from './context.js';
import { choicePage, confirmPage, resultPage } from './pages.js';

// The browser side of interactive login. GET /login/<id> (the URL the device printed) marks the
// browser with a cookie and goes to the identity provider (or a choice page when there are
// several); the provider sends the browser back to its callback, which checks state (against this
// browser's cookie), nonce and PKCE and lets the allow rules decide. Nothing is authorized yet: the
// person sees "Connect this device to your tailnet?" with the device's name, OS, the address that
// asked and when, and only their POST of Connect from the same browser (its cookie plus the page's
// one-time token) authorizes the node. So a link sent by someone else, opened with a live SSO
// session, shows the stranger's device instead of connecting it.

/** Everything sign-in needs; absent when control has no identity provider configured. */
export interface SignInContext {
  providers: IdentityProvider[];
  logins: LoginService;
  allow: AllowRules;
  publicUrl: () => string;
}

const COOKIE = 'weft_signin';
/** This browser's random mark, set when it opens a link; attempts and confirmations are bound to it. */
const BROWSER_COOKIE = 'weft_browser';
/** Browser marks and confirmation tokens: 32 random bytes in base64url. */
const RANDOM_TOKEN = /^[A-Za-z0-9_-]{43}$/;
/** How long a trip to the provider may take (bounded further by the login's own expiry). */
const ATTEMPT_TTL_MS = 10 * 60_000;
/** How long the confirmation page's Connect stays good. */
const CONFIRM_TTL_MS = 10 * 60_000;
/** Attempts kept per login (one per browser, the newest win): reloading a link adds no rows. */
const ATTEMPTS_PER_LOGIN = 8;

export function registerLoginRoutes(app: FastifyInstance, ctx: ControlContext, signIn: SignInContext): void {
  const { providers, logins } = signIn;
  // Sign-in pages answer anyone: rate-limited per address.
  const config = { rateLimit: { max: ctx.limits.loginPagesPerWindow, timeWindow: ctx.limits.rateWindowMs } };

  app.get<{ Params: { id: string } }>('/login/:id', { config }, (req, reply) =>
    respond(ctx, reply, async () => {
      const login = await logins.usable(req.params.id);
      const browser = markBrowser(req, reply, signIn, login);
      const [only] = providers;
      if (providers.length === 1 && only !== undefined)
        return startAttempt(ctx, signIn, reply, login, only, browser);
      const choices = providers.map((p) => ({ label: p.label, href: `/login/${login.id}/${p.id}` }));
      return html(reply, 200, choicePage(login.hostname, choices));
    }),
  );

  app.get<{ Params: { id: string; provider: string } }>('/login/:id/:provider', { config }, (req, reply) =>
    respond(ctx, reply, async () => {
      const provider = providers.find((p) => p.id === req.params.provider);
      if (provider === undefined)
        throw new SignInError(404, 'Unknown sign-in method', 'This sign-in method is not configured here.');
      const login = await logins.usable(req.params.id);
      return startAttempt(ctx, signIn, reply, login, provider, markBrowser(req, reply, signIn, login));
    }),
  );

  for (const provider of providers) {
    app.get(provider.callbackPath, { config }, (req, reply) =>
      respond(ctx, reply, () => finishAttempt(ctx, signIn, req, reply, provider)),
    );
  }

  app.post<{ Params: { id: string } }>('/login/:id/confirm', { config }, (req, reply) =>
    respond(ctx, reply, () => confirm(ctx, signIn, req, reply)),
  );
}

/** This browser's mark (kept if it has one, made otherwise), as the hash stored with its attempts. */
function markBrowser(
  req: FastifyRequest,
  reply: FastifyReply,
  signIn: SignInContext,
  login: PendingLoginRecord,
): string {
  const given = cookieValue(req.headers.cookie, BROWSER_COOKIE);
  const token =
    given !== undefined && RANDOM_TOKEN.test(given) ? given : randomBytes(32).toString('base64url');
  const maxAge = Math.max(1, Math.ceil((Date.parse(login.expiresAt) - Date.now()) / 1000));
  // Lax: it must come back on the provider's top-level redirect, but not on a cross-site POST.
  reply.header('set-cookie', cookie(signIn, BROWSER_COOKIE, token, maxAge));
  return sha256Hex(token);
}

/** The hash of the browser mark this request carries, if any. */
function browserOf(req: FastifyRequest): string | undefined {
  const token = cookieValue(req.headers.cookie, BROWSER_COOKIE);
  return token !== undefined && RANDOM_TOKEN.test(token) ? sha256Hex(token) : undefined;
}

function cookie(signIn: SignInContext, name: string, value: string, maxAge: number): string {
  const secure = signIn.publicUrl().startsWith('https:') ? '; Secure' : '';
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${secure}`;
}

async function startAttempt(
  ctx: ControlContext,
  signIn: SignInContext,
  reply: FastifyReply,
  login: PendingLoginRecord,
  provider: IdentityProvider,
  browserHash: string,
): Promise<FastifyReply> {
  const secrets = {
    state: client.randomState(),
    nonce: client.randomNonce(),
    codeVerifier: client.randomPKCECodeVerifier(),
  };
  const expiresAt = Math.min(Date.parse(login.expiresAt), Date.now() + ATTEMPT_TTL_MS);
  await ctx.store.insertAuthAttempt(
    {
      ...secrets,
      loginId: login.id,
      provider: provider.id,
      expiresAt: new Date(expiresAt).toISOString(),
      browserHash,
    },
    ATTEMPTS_PER_LOGIN,
  );
  let target: URL;
  try {
    target = await provider.authorizationUrl(secrets, `${signIn.publicUrl()}${provider.callbackPath}`);
  } catch (err) {
    throw new SignInError(
      502,
      'Identity provider unavailable',
      `The sign-in could not be started: ${errorText(err)}`,
    );
  }
  // The state also lives in this browser's cookie: an answer arriving in another browser (someone
  // else's link, a forged callback) does not match it and is refused.
  const maxAge = Math.ceil((expiresAt - Date.now()) / 1000);
  reply.header('set-cookie', cookie(signIn, COOKIE, secrets.state, maxAge));
  return reply.code(302).header('location', target.href).header('cache-control', 'no-store').send();
}

async function finishAttempt(
  ctx: ControlContext,
  signIn: SignInContext,
  req: FastifyRequest,
  reply: FastifyReply,
  provider: IdentityProvider,
): Promise<FastifyReply> {
  const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
  const callbackUrl = new URL(`${signIn.publicUrl()}${provider.callbackPath}${query}`);
  const state = callbackUrl.searchParams.get('state');
  if (state === null || state === '') {
    throw new SignInError(
      400,
      'Sign-in state missing',
      'The identity provider’s answer carries no state, so it cannot be matched to a sign-in. Open the sign-in link from your device again.',
    );
  }
  if (cookieValue(req.headers.cookie, COOKIE) !== state) {
    throw new SignInError(
      400,
      'Sign-in did not match',
      'This answer belongs to a sign-in that was not started in this browser (wrong or missing state). Open the sign-in link from your device again, in this browser.',
    );
  }
  const attempt = await ctx.store.takeAuthAttempt(state);
  if (attempt === undefined || attempt.provider !== provider.id) {
    throw new SignInError(
      400,
      'Sign-in already used',
      'This sign-in answer has been used already (a page reloaded or a link replayed). Open the sign-in link from your device again.',
    );
  }
  if (!sameHash(browserOf(req), attempt.browserHash)) {
    throw new SignInError(
      400,
      'Sign-in did not match',
      'This sign-in was not started in this browser. Open the sign-in link from your device again, in this browser.',
    );
  }
  if (Date.parse(attempt.expiresAt) <= Date.now()) {
    throw new SignInError(
      410,
      'Sign-in took too long',
      'The sign-in took too long and expired. Open the sign-in link from your device again.',
    );
  }
  const login = await signIn.logins.usable(attempt.loginId);
  const identity = await provider.complete(callbackUrl, attempt);
  const refused = refusal(identity, signIn.allow);
  if (refused !== null) {
    ctx.log.warn(
      `sign-in refused for ${identity.email ?? identity.subject} (${identity.provider}): ${refused}`,
    );
    throw new SignInError(
      403,
      'Not allowed on this tailnet',
      `${refused} ${login.hostname} was not connected.`,
    );
  }
  // Signed in, but nothing is authorized until this person confirms the device in this browser.
  const token = randomBytes(32).toString('base64url');
  const expiresAt = Math.min(Date.parse(login.expiresAt), Date.now() + CONFIRM_TTL_MS);
  await ctx.store.insertLoginConfirmation({
    tokenHash: sha256Hex(token),
    loginId: login.id,
    browserHash: attempt.browserHash,
    identity: JSON.stringify(identity),
    expiresAt: new Date(expiresAt).toISOString(),
  });
  return html(
    reply,
    200,
    confirmPage({
      action: `/login/${login.id}/confirm`,
      token,
      hostname: login.hostname,
      os: login.os,
      source: login.source,
      requestedAt: login.createdAt,
      signedInAs: identity.email ?? identity.displayName ?? identity.subject,
    }),
  );
}

/** Connect pressed: the page's token and this browser's cookie must both match; then authorize. */
async function confirm(
  ctx: ControlContext,
  signIn: SignInContext,
  req: FastifyRequest<{ Params: { id: string } }>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const form = new URLSearchParams(typeof req.body === 'string' ? req.body : '');
  const token = form.get('token') ?? '';
  const notThisBrowser = new SignInError(
    403,
    'Not confirmed',
    'This confirmation does not belong to this browser, or its form was not the one control showed. Nothing was connected. Open the sign-in link from your device again.',
  );
  if (!RANDOM_TOKEN.test(token)) throw notThisBrowser;
  const tokenHash = sha256Hex(token);
  const confirmation = await ctx.store.loginConfirmation(tokenHash);
  if (
    confirmation === undefined ||
    confirmation.loginId !== req.params.id ||
    !sameHash(browserOf(req), confirmation.browserHash)
  ) {
    throw notThisBrowser;
  }
  if (Date.parse(confirmation.expiresAt) <= Date.now()) {
    throw new SignInError(
      410,
      'Confirmation expired',
      'This page waited too long to be confirmed. Open the sign-in link from your device again.',
    );
  }
  if (!(await ctx.store.deleteLoginConfirmation(tokenHash))) {
    throw new SignInError(409, 'Already confirmed', 'This confirmation has been used already.');
  }
  const login = await signIn.logins.usable(confirmation.loginId);
  const identity = Identity.parse(JSON.parse(confirmation.identity));
  const user = await signInUser(ctx.store, identity);
  const nodeName = await signIn.logins.complete(login.id, user);
  await ctx.sync.refresh();
  ctx.log.info(`sign-in: ${user.name} (${identity.provider}) confirmed ${nodeName} from ${req.ip}`);
  ctx.metrics.signIns.inc({ provider: providerKind(identity) });
  return html(
    reply,
    200,
    resultPage({
      ok: true,
      title: 'Connected',
      message: `${login.hostname} is now connected to your tailnet as ${nodeName}. You are signed in as ${user.name}.`,
    }),
  );
}

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');

/** Whether two SHA-256 hex digests are equal, compared in constant time. */
function sameHash(a: string | undefined, b: string): boolean {
  if (a === undefined || a.length !== b.length || b === '') return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** Runs a page handler; any refusal becomes a result page in plain words with its status. */
async function respond(ctx: ControlContext, reply: FastifyReply, handler: () => Promise<FastifyReply>) {
  try {
    return await handler();
  } catch (err) {
    if (err instanceof SignInError) {
      return html(reply, err.status, resultPage({ ok: false, title: err.title, message: err.message }));
    }
    ctx.log.error(`sign-in: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
    return html(
      reply,
      500,
      resultPage({
        ok: false,
        title: 'Something went wrong',
        message: 'Control could not finish the sign-in. Try again in a moment.',
      }),
    );
  }
}

function html(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('x-frame-options', 'DENY')
    .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    .send(body);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
