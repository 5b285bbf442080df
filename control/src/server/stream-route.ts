import type { Socket } from 'node:net';
import {
  BatchQueue,
  MACHINE_AUTH_HEADER,
  STREAM_PATH,
  StreamClientMessage,
  StreamQuery,
} from '@weft/protocol';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import WebSocket from 'ws';
import { authenticateMachine } from '../auth/machine.js';
import { ApiError } from '../errors.js';
import { errorText } from '../log.js';
import type { StreamSession } from '../netmap/hub.js';
import { TAILNET_IPV4_RANGE } from '../tailnet/addresses.js';
import { usableEndpoints } from '../tailnet/endpoints.js';
import { isExpired, type NodeRecord } from '../tailnet/records.js';
import { isExitRoute, normalizeRoutes, routesOverlap } from '../tailnet/routes.js';
import type { ControlContext } from './context.js';
import { keepAlive } from './keepalive.js';
import { parseMessage, parseValue } from './parse.js';
import { StreamSender, sendFrame } from './stream-sender.js';
import { type NodeReport, StreamUpdates } from './stream-updates.js';

// The netmap stream over WebSocket: authenticated before the upgrade (a refused node gets a plain
// HTTP 401 with an ErrorBody), then JSON messages both ways, validated on arrival. The URL's query
// may carry the token of the map the node holds (signed with the URL; a malformed one is a 400).

/**
 * What a node may offer to route: any subnet but the tailnet's own ranges (its nodes are reached
 * directly), and the exit routes.
 */
export function offerableRoutes(routes: readonly string[], ulaPrefix: string): string[] {
  return normalizeRoutes(routes).filter(
    (r) => isExitRoute(r) || ![TAILNET_IPV4_RANGE, ulaPrefix].some((t) => routesOverlap(r, t)),
  );
}

/** Writes a node's coalesced report: one database write and one fan-out, only if something changed. */
async function applyReport(ctx: ControlContext, node: NodeRecord, report: NodeReport): Promise<void> {
  const current = await ctx.store.nodeById(node.id);
  if (current === undefined) return;
  const changes: NodeReport = {};
  if (report.endpoints && JSON.stringify(report.endpoints) !== JSON.stringify(current.endpoints))
    changes.endpoints = report.endpoints;
  const routes = report.advertisedRoutes;
  if (routes && JSON.stringify(routes) !== JSON.stringify(current.advertisedRoutes)) {
    changes.advertisedRoutes = routes;
    ctx.log.info(`${node.name} advertises ${routes.length > 0 ? routes.join(', ') : 'no routes'}`);
  }
  if (Object.keys(changes).length === 0) return;
  await ctx.store.updateNode(node.id, changes);
  await ctx.sync.refreshNodes([node.id]);
}

/** WebSocket close reasons are limited to 123 bytes. */
const closeReason = (text: string) => Buffer.from(text).subarray(0, 120).toString('utf8');

export function registerStreamRoute(app: FastifyInstance, ctx: ControlContext): void {
  const authenticated = new WeakMap<
    FastifyRequest,
    { node: NodeRecord; arrival: number; mapToken: string | undefined }
  >();
  // Upgrades are numbered as they arrive, and each node's newest open one is kept: an older one
  // whose connect waited longer (for its node to be read) must not replace it.
  let arrivals = 0;
  const newest = new Map<string, number>();
  // The upgrades' nodes are read together: those arriving while a read is on its way in the next
  // one (a killed replica's thousands of nodes, each a statement, were most of the database
  // client's time on the replicas they moved to).
  const lookups = new BatchQueue(async (machineKeys: readonly string[]) => {
    const nodes = await ctx.store.nodesByMachineKeys(machineKeys);
    return new Map(nodes.map((n) => [n.machineKey, n]));
  });

  app.get(
    STREAM_PATH,
    {
      websocket: true,
      preValidation: async (req) => {
        const arrival = ++arrivals;
        const machineKey = authenticateMachine({
          header: req.headers[MACHINE_AUTH_HEADER],
          controlPrivateKey: ctx.controlKey.privateKey,
          replay: ctx.machineNonces,
          method: req.method,
          url: req.url,
          body: '',
          signedQuery: true,
        });
        const node = (await lookups.add(machineKey)).get(machineKey);
        if (node === undefined) {
          throw new ApiError(401, 'unknown-node', 'this machine is not registered: register it first');
        }
        if (isExpired(node, new Date())) {
          throw new ApiError(401, 'node-key-expired', 'this node’s key has expired: log in again');
        }
        const { mapToken } = parseValue(req.query, StreamQuery);
        authenticated.set(req, { node, arrival, mapToken });
      },
    },
    (socket, req) => {
      const auth = authenticated.get(req);
      if (auth === undefined) {
        socket.close(1011, 'not authenticated');
        return;
      }
      const { node, arrival, mapToken } = auth;
      if ((newest.get(node.id) ?? 0) < arrival) newest.set(node.id, arrival);
      socket.on('close', () => {
        if (newest.get(node.id) === arrival) newest.delete(node.id);
      });
      // Superseded while it waited: a newer upgrade of the node is open (once that one has closed,
      // this one may serve the node).
      openStream(ctx, socket, req.socket, node, mapToken, () => (newest.get(node.id) ?? arrival) > arrival);
    },
  );
}

function openStream(
  ctx: ControlContext,
  socket: WebSocket,
  tcp: Socket,
  node: NodeRecord,
  /** The token of the map the node holds: resumed when it is what the node would be sent. */
  mapToken: string | undefined,
  superseded: () => boolean,
): void {
  const { hub, sync, background, log, presence } = ctx;
  const sender = new StreamSender(
    {
      get readyState() {
        return socket.readyState;
      },
      get bufferedAmount() {
        return socket.bufferedAmount;
      },
      send: (data, done) => sendFrame(socket, data, done),
      terminate: () => socket.terminate(),
    },
    ctx.limits,
    () => hub.resync(session),
    () => log.warn(`stream ${node.name}: nothing written for ${ctx.limits.streamStuckMs} ms, dropping`),
  );
  const session: StreamSession = {
    nodeId: node.id,
    send: (message) => sender.send(message),
    close: (reason) => socket.close(1000, closeReason(reason)),
    backlogged: () => sender.backlogged(),
  };

  const ulaPrefix = ctx.registration.ulaPrefix;
  const updates = new StreamUpdates(ctx.limits, (report) =>
    background.run(`report of ${node.name}`, () => applyReport(ctx, node, report)),
  );

  // Listeners go on before anything asynchronous so no early message is lost.
  socket.on('message', (data, isBinary) => {
    const flooding = updates.admit();
    if (flooding !== null) {
      log.warn(`stream ${node.name}: ${flooding}, closing`);
      socket.close(1008, closeReason(flooding));
      return;
    }
    if (isBinary) {
      socket.close(1003, 'only JSON text messages are accepted');
      return;
    }
    let message: StreamClientMessage;
    try {
      message = parseMessage(Buffer.from(data as Buffer).toString('utf8'), StreamClientMessage);
    } catch (err) {
      log.warn(`stream ${node.name}: refused message: ${errorText(err)}`);
      socket.close(1008, closeReason(`invalid message: ${errorText(err)}`));
      return;
    }
    if (message.type === 'routes') {
      updates.report({ advertisedRoutes: offerableRoutes(message.advertisedRoutes, ulaPrefix) });
    } else {
      updates.report({ endpoints: usableEndpoints(message.endpoints, [TAILNET_IPV4_RANGE, ulaPrefix]) });
    }
  });

  const stopPings = keepAlive(socket, tcp, ctx.pingIntervalMs, () =>
    log.info(`stream ${node.name}: no pong, dropping`),
  );

  socket.on('error', (err) => log.warn(`stream ${node.name}: ${errorText(err)}`));
  // Shutdown drains background work before closing the database: counting each open stream as
  // work lets its last-seen write land first.
  background.run(
    `stream of ${node.name}`,
    () =>
      new Promise<void>((resolve) =>
        socket.on('close', () => {
          stopPings();
          updates.close();
          sender.close();
          // A stream replaced by the node's newer one (on this replica) is no disconnect: the newer
          // stream's presence row must stay, or peers see it offline and an ephemeral node is swept.
          // Its peers are told at the last-seen write's reload, offline and last seen at once.
          const current = hub.disconnect(session, true);
          log.info(`stream ${node.name}: closed`);
          if (current) background.run(`last seen of ${node.name}`, () => presence.disconnected(node.id));
          resolve();
        }),
      ),
  );

  const connect = () => {
    // Its node may have given up waiting (a burst): no map, and its peers are told nothing.
    if (socket.readyState !== WebSocket.OPEN) {
      ctx.metrics.streamsAbandoned.inc();
      return;
    }
    if (superseded()) {
      session.close('replaced by a newer stream');
      return;
    }
    if (!hub.has(node.id)) {
      session.send({ type: 'logout', reason: hub.goneReason(node.id) });
      session.close('node deleted or expired');
      return;
    }
    hub.connect(session, mapToken);
    log.info(`stream ${node.name}: connected`);
    background.run(`presence of ${node.name}`, () => presence.connected(node.id));
  };
  // Control stopping: the stream is ended here, as closeAll ends the hub's.
  const drop = () => session.close('control is shutting down');
  if (hub.has(node.id)) ctx.connects.add(connect, drop);
  else {
    // A node registered through another connection (or replica) may not be in the hub yet.
    background.run(`connecting ${node.name}`, async () => {
      try {
        await sync.refreshNodes([node.id]);
      } catch (err) {
        // Left open, the stream would answer pings with no map or logout ever coming: the node retries.
        log.error(`stream ${node.name}: reading the node failed: ${errorText(err)}`);
        socket.close(1011, 'control could not read this node, try again');
        return;
      }
      ctx.connects.add(connect, drop);
    });
  }
}
