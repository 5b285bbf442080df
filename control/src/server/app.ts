import rateLimit from '@fastify/rate-limit';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { registerRelayMembersRoute } from '../relays/members-route.js';
import { registerTailscaleProtocol } from '../tailscale/routes.js';
import { registerAdminApi } from './admin-api.js';
import type { ControlContext } from './context.js';
import { registerLoginRoutes } from './login-routes.js';
import { registerMachineRoutes } from './machine-routes.js';
import { registerStreamRoute } from './stream-route.js';

const clientErrorCodes: Record<number, string> = {
  400: 'malformed-request',
  404: 'not-found',
  413: 'too-large',
  415: 'unsupported-media-type',
};

export async function buildApp(ctx: ControlContext): Promise<FastifyInstance> {
  const { limits } = ctx;
  const app = Fastify({
    logger: false,
    bodyLimit: limits.bodyLimitBytes,
    connectionTimeout: limits.connectionTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
  });

  // Signatures cover the exact bytes sent, so bodies reach handlers as raw text, whatever their
  // declared type; handlers parse and validate them after checking the signature.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send(err.body());
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      const code = clientErrorCodes[status] ?? 'bad-request';
      return reply.code(status).send({ error: { code, message: (err as Error).message } });
    }
    ctx.log.error(`${req.method} ${req.url}: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
    return reply.code(500).send({ error: { code: 'internal', message: 'internal server error' } });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({
      error: { code: 'not-found', message: `no such endpoint: ${req.method} ${req.url.split('?')[0]}` },
    }),
  );

  app.addHook('onResponse', async (req, reply) => {
    ctx.metrics.httpRequests.inc({
      route: req.routeOptions.url ?? 'unmatched',
      method: req.method,
      status: reply.statusCode,
    });
  });

  // Only the routes anyone may call without a key are rate-limited (they opt in per route).
  await app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_req, context) =>
      new ApiError(
        429,
        'rate-limited',
        `too many requests from this address: at most ${context.max} per ${context.after}; try again in ${context.ttl > 0 ? Math.ceil(context.ttl / 1000) : 1} s`,
      ),
  });
  await app.register(websocket, { options: { maxPayload: limits.bodyLimitBytes } });
  // After the WebSocket plugin: it takes every upgrade, so /ts2021 is routed around it.
  registerTailscaleProtocol(app, ctx);
  app.get('/healthz', async () => ({ ok: true }));
  registerMachineRoutes(app, ctx);
  registerStreamRoute(app, ctx);
  registerAdminApi(app, ctx);
  registerRelayMembersRoute(app, ctx);
  if (ctx.signIn) registerLoginRoutes(app, ctx, ctx.signIn);
  return app;
}
