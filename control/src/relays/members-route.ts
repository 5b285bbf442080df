import type { Socket } from 'node:net';
import {
  MACHINE_AUTH_HEADER,
  RELAY_MEMBERS_PATH,
  RelayMembersNonce,
  sealRelayMembers,
  sharedSecret,
} from '@weft/protocol';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import WebSocket from 'ws';
import { authenticateMachine } from '../auth/machine.js';
import { ApiError } from '../errors.js';
import { errorText } from '../log.js';
import type { ControlContext } from '../server/context.js';
import { keepAlive } from '../server/keepalive.js';

// The relays' WebSocket (protocol: @weft/protocol relay-members.ts). A relay proves its key by
// signing the upgrade, as a machine does; only keys in the relay map are answered. Each message is
// the whole member set, sealed for that relay and that connection's nonce.

interface RelaySession {
  relayKey: string;
  nonce: string;
}

export function registerRelayMembersRoute(app: FastifyInstance, ctx: ControlContext): void {
  const sessions = new WeakMap<FastifyRequest, RelaySession>();

  app.get(
    RELAY_MEMBERS_PATH,
    {
      websocket: true,
      preValidation: async (req) => {
        const relayKey = authenticateMachine({
          header: req.headers[MACHINE_AUTH_HEADER],
          controlPrivateKey: ctx.controlKey.privateKey,
          replay: ctx.machineNonces,
          method: req.method,
          url: req.url,
          body: '',
        });
        if (!(ctx.hub.relayMap?.regions ?? []).some((r) => r.publicKey === relayKey)) {
          throw new ApiError(403, 'unknown-relay', 'this key is not a relay of this control (see --relays)');
        }
        const nonce = RelayMembersNonce.safeParse((req.query as Record<string, unknown>).nonce);
        if (!nonce.success)
          throw new ApiError(400, 'malformed-request', 'nonce must be 32 bytes in base64url');
        sessions.set(req, { relayKey, nonce: nonce.data });
      },
    },
    (socket, req) => {
      const session = sessions.get(req);
      if (session === undefined) {
        socket.close(1011, 'not authenticated');
        return;
      }
      serveRelay(ctx, socket, req.socket, session);
    },
  );
}

function serveRelay(
  ctx: ControlContext,
  socket: WebSocket,
  tcp: Socket,
  { relayKey, nonce }: RelaySession,
): void {
  const secret = sharedSecret(ctx.controlKey.privateKey, relayKey);
  let seq = 0;
  const send = (keys: readonly string[]) => {
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(sealRelayMembers(secret, nonce, { seq: ++seq, keys: [...keys] }));
  };
  // A relay only listens: anything it sends is a protocol error.
  socket.on('message', () => socket.close(1008, 'relays send nothing on this socket'));
  const unsubscribe = ctx.relayMembers.subscribe(send);
  const stopPings = keepAlive(socket, tcp, ctx.pingIntervalMs, () =>
    ctx.log.info(`relay ${relayKey}: no pong, dropping`),
  );
  socket.on('error', (err) => ctx.log.warn(`relay ${relayKey}: ${errorText(err)}`));
  socket.on('close', () => {
    stopPings();
    unsubscribe();
    ctx.log.info(`relay ${relayKey}: members feed closed`);
  });
  ctx.log.info(`relay ${relayKey}: members feed open (${ctx.relayMembers.current().length} node keys)`);
  send(ctx.relayMembers.current());
}
