import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { authenticateApiKey } from '../auth/api-keys.js';
import {
  CliError,
  createPreauthKey,
  deleteNode,
  expireNode,
  nodeSummary,
  userSummary,
} from '../cli/admin.js';
import type { ControlContext } from './context.js';
import { parseMessage } from './parse.js';

// The admin HTTP API under /api/v1/, for automation: the admin CLI's own functions behind an API
// key (`Authorization: Bearer weftapi-…`). Every write is followed by a refresh, so the change
// reaches the netmaps at once rather than at the next database poll.

const PreauthKeyBody = z.strictObject({
  user: z.string().min(1),
  reusable: z.boolean().optional(),
  ephemeral: z.boolean().optional(),
  expiration: z.string().default('1h'),
  tags: z.array(z.string()).optional(),
});

const STATUS_OF: Record<CliError['kind'], number> = { invalid: 400, 'not-found': 404, conflict: 409 };

export function registerAdminApi(app: FastifyInstance, ctx: ControlContext): void {
  app.register(
    async (api) => {
      api.addHook('onRequest', async (req) => {
        await authenticateApiKey(ctx.store, req.headers.authorization, new Date());
      });
      // The admin functions speak CliError; the API answers with the matching status and an ErrorBody.
      api.setErrorHandler((err, _req, reply) => {
        if (err instanceof CliError) {
          return reply.code(STATUS_OF[err.kind]).send({ error: { code: err.kind, message: err.message } });
        }
        throw err;
      });

      api.get('/nodes', async () => ({ nodes: (await ctx.store.listNodes()).map(nodeSummary) }));
      api.delete<{ Params: { name: string } }>('/nodes/:name', async (req) => {
        const node = await deleteNode(ctx.store, req.params.name);
        await ctx.sync.refreshNodes([node.id]);
        return { deleted: node.name };
      });
      api.post<{ Params: { name: string } }>('/nodes/:name/expire', async (req) => {
        const node = await expireNode(ctx.store, req.params.name);
        await ctx.sync.refreshNodes([node.id]);
        return { node: nodeSummary(node) };
      });
      api.get('/users', async () => ({ users: (await ctx.store.listUsers()).map(userSummary) }));
      api.post('/preauthkeys', async (req) => {
        const body = parseMessage(typeof req.body === 'string' ? req.body : '', PreauthKeyBody);
        const key = await createPreauthKey(ctx.store, { ...body, tags: body.tags?.join(',') });
        return { key };
      });
    },
    { prefix: '/api/v1' },
  );
}
