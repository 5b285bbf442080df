import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as client from 'openid-client';
import { refusal, signInUser } from '../auth/identity.js';
import type { LoginService } from '../auth/logins.js';
import type { IdentityProvider } from '../auth/providers/provider.js';
import { SignInError } from '../auth/sign-in-error.js';
import type { AllowRules } from '../config/config.js';
import { errorText } from '../log.js';
import type { PendingLoginRecord } from '../tailnet/records.js';
import type { ControlContext } from './context.js';
import { choicePage, resultPage } from './pages.js';

// The browser side of interactive login. GET /login/<id> (the URL the device printed) goes to the
// identity provider (or a choice page when there are several); the provider sends the browser back
// to its callback, which checks state (against this browser's cookie), nonce and PKCE, lets the
// allow rules decide, signs the user in, authorizes the node that asked, and says so in words.

/** Everything sign-in needs; absent when control has no identity provider configured. */
export interface SignInContext {
  providers: IdentityProvider[];
  logins: LoginService;
  allow: AllowRules;
  publicUrl: () => string;
}

const COOKIE = 'weft_signin';
/** How long a trip to the provider may take (bounded further by the login's own expiry). */
const ATTEMPT_TTL_MS = 10 * 60_000;

export function registerLoginRoutes(app: FastifyInstance, ctx: ControlContext, signIn: SignInContext): void {
  const { providers, logins } = signIn;

  app.get<{ Params: { id: string } }>('/login/:id', (req, reply) =>
    respond(ctx, reply, async () => {
      const login = await logins.usable(req.params.id);
      const [only] = providers;
      if (providers.length === 1 && only !== undefined) return startAttempt(ctx, signIn, reply, login, only);
      const choices = providers.map((p) => ({ label: p.label, href: `/login/${login.id}/${p.id}` }));
      return html(reply, 200, choicePage(login.hostname, choices));
    }),
  );

  app.get<{ Params: { id: string; provider: string } }>('/login/:id/:provider', (req, reply) =>
    respond(ctx, reply, async () => {
      const provider = providers.find((p) => p.id === req.params.provider);
      if (provider === undefined)
        throw new SignInError(404, 'Unknown sign-in method', 'This sign-in method is not configured here.');
      return startAttempt(ctx, signIn, reply, await logins.usable(req.params.id), provider);
    }),
  );

  for (const provider of providers) {
    app.get(provider.callbackPath, (req, reply) =>
      respond(ctx, reply, () => finishAttempt(ctx, signIn, req, reply, provider)),
    );
  }
}

async function startAttempt(
  ctx: ControlContext,
  signIn: SignInContext,
  reply: FastifyReply,
  login: PendingLoginRecord,
  provider: IdentityProvider,
): Promise<FastifyReply> {
  const secrets = {
    state: client.randomState(),
    nonce: client.randomNonce(),
    codeVerifier: client.randomPKCECodeVerifier(),
  };
  const expiresAt = Math.min(Date.parse(login.expiresAt), Date.now() + ATTEMPT_TTL_MS);
  await ctx.store.insertAuthAttempt({
    ...secrets,
    loginId: login.id,
    provider: provider.id,
    expiresAt: new Date(expiresAt).toISOString(),
  });
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
  const secure = signIn.publicUrl().startsWith('https:') ? '; Secure' : '';
  const maxAge = Math.ceil((expiresAt - Date.now()) / 1000);
  reply.header(
    'set-cookie',
    `${COOKIE}=${secrets.state}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${secure}`,
  );
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
  const user = await signInUser(ctx.store, identity);
  const nodeName = await signIn.logins.complete(login.id, user);
  await ctx.sync.refresh();
  ctx.log.info(`sign-in: ${user.name} (${identity.provider}) authorized ${nodeName}`);
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
    .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'")
    .send(body);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
