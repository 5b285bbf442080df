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

/** Nothing a node sends is anywhere near this; anything larger is refused unread. */
export const MAX_BODY_BYTES = 64 * 1024;

const clientErrorCodes: Record<number, string> = {
  400: 'malformed-request',
  404: 'not-found',
  413: 'too-large',
  415: 'unsupported-media-type',
};

export async function buildApp(ctx: ControlContext): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: MAX_BODY_BYTES });

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

  await app.register(websocket, { options: { maxPayload: MAX_BODY_BYTES } });
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
