import {
  CONTROL_KEY_PATH,
  type ControlKeyResponse,
  MACHINE_AUTH_HEADER,
  REGISTER_PATH,
  RegisterRequest,
  type RegisterResponse,
} from '@weft/protocol';
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { authenticateMachine } from '../auth/machine.js';
import { registerMachine } from '../auth/register.js';
import type { ControlContext } from './context.js';
import { parseMessage } from './parse.js';

export function registerMachineRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get(
    CONTROL_KEY_PATH,
    async (): Promise<z.infer<typeof ControlKeyResponse>> => ({ publicKey: ctx.controlKey.publicKey }),
  );

  app.post(REGISTER_PATH, async (req): Promise<RegisterResponse> => {
    // The raw text, exactly as signed: the content-type parser leaves bodies unparsed.
    const body = typeof req.body === 'string' ? req.body : '';
    const machineKey = authenticateMachine({
      header: req.headers[MACHINE_AUTH_HEADER],
      controlPrivateKey: ctx.controlKey.privateKey,
      method: req.method,
      url: req.url,
      body,
    });
    const request = parseMessage(body, RegisterRequest);
    const result = await registerMachine(ctx.registration, machineKey, request);
    if (result.status === 'needs-auth') return result;

    await ctx.sync.refresh();
    const node = ctx.hub.view(result.nodeId);
    if (node === undefined) throw new Error(`registered node ${result.nodeId} vanished`);
    ctx.log.info(`registered ${node.name} (${node.addresses.join(', ')}, ${request.os || 'unknown os'})`);
    return { status: 'authorized', node };
  });
}
