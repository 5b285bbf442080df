import {
  CONTROL_KEY_PATH,
  type ControlKeyResponse,
  LOGIN_CANCEL_PATH,
  LOGOUT_PATH,
  type LoginCancelResponse,
  type LogoutResponse,
  MACHINE_AUTH_HEADER,
  REGISTER_PATH,
  RegisterRequest,
  type RegisterResponse,
} from '@weft/protocol';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { authenticateMachine } from '../auth/machine.js';
import { registerMachine } from '../auth/register.js';
import { isExpired } from '../tailnet/records.js';
import type { ControlContext } from './context.js';
import { parseMessage } from './parse.js';

export function registerMachineRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get(
    CONTROL_KEY_PATH,
    async (): Promise<z.infer<typeof ControlKeyResponse>> => ({ publicKey: ctx.controlKey.publicKey }),
  );

  /** The machine key that signed the request, and the raw body exactly as signed. */
  const signed = (req: FastifyRequest) => {
    // The content-type parser leaves bodies unparsed, as text.
    const body = typeof req.body === 'string' ? req.body : '';
    const machineKey = authenticateMachine({
      header: req.headers[MACHINE_AUTH_HEADER],
      controlPrivateKey: ctx.controlKey.privateKey,
      replay: ctx.machineNonces,
      method: req.method,
      url: req.url,
      body,
    });
    return { machineKey, body };
  };

  // Anyone can make a machine key, so registration counts as unauthenticated: rate-limited per address.
  const rateLimit = { max: ctx.limits.registerPerWindow, timeWindow: ctx.limits.rateWindowMs };
  app.post(REGISTER_PATH, { config: { rateLimit } }, async (req): Promise<RegisterResponse> => {
    const { machineKey, body } = signed(req);
    const request = parseMessage(body, RegisterRequest);
    const result = await registerMachine(ctx.registration, { machineKey, source: req.ip }, request);
    if (result.status === 'needs-auth') return result;

    await ctx.sync.refreshNodes([result.nodeId]);
    const node = ctx.hub.view(result.nodeId);
    if (node === undefined) throw new Error(`registered node ${result.nodeId} vanished`);
    ctx.log.info(`registered ${node.name} (${node.addresses.join(', ')}, ${request.os || 'unknown os'})`);
    ctx.metrics.registrations.inc({ protocol: 'weft' });
    return { status: 'authorized', node };
  });

  // The node gives up waiting for a sign-in (weft up interrupted): its link stops working.
  app.post(LOGIN_CANCEL_PATH, async (req): Promise<LoginCancelResponse> => {
    const { machineKey } = signed(req);
    return { cancelled: (await ctx.signIn?.logins.cancel(machineKey)) ?? false };
  });

  // `weft logout`: the node key stops working here too, so a copy of the node's state is useless.
  // The node stays (name and addresses) for the next sign-in, as with an expired key.
  app.post(LOGOUT_PATH, async (req): Promise<LogoutResponse> => {
    const { machineKey } = signed(req);
    const node = await ctx.store.nodeByMachineKey(machineKey);
    if (node === undefined || isExpired(node, new Date())) return { loggedOut: false };
    await ctx.store.updateNode(node.id, { keyExpiry: new Date().toISOString() });
    await ctx.sync.refreshNodes([node.id]);
    ctx.log.info(`${node.name} logged out`);
    return { loggedOut: true };
  });
}
