import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import {
  keyFromTailscale,
  TS_MIN_CAPABILITY_VERSION,
  type TsMapRequest,
  TsMapRequest as TsMapRequestSchema,
  type TsMapResponse,
  TsRegisterRequest,
} from '@weft/protocol';
import type { z } from 'zod';
import type { RegistrationCaller } from '../auth/register.js';
import { errorText } from '../log.js';
import type { ControlContext } from '../server/context.js';
import { offerableRoutes } from '../server/stream-route.js';
import { StreamSender } from '../server/stream-sender.js';
import { TAILNET_IPV4_RANGE } from '../tailnet/addresses.js';
import { usableEndpoints } from '../tailnet/endpoints.js';
import { isExpired, type NodeRecord, type NodeUpdate } from '../tailnet/records.js';
import { fullMapResponse, mapResponseParts, TsMapSession } from './map-session.js';
import { mapSocket } from './map-socket.js';
import { registerTailscale, tooOldMessage } from './register.js';
import { loadZstd, zstdFrame } from './zstd.js';

// The HTTP/2 API a Tailscale client uses inside ts2021, every request on the machine key the
// handshake proved: /machine/register and /machine/map. Other /machine/ endpoints of Tailscale's
// protocol (set-dns, id-token, audit-log, c2n, ...) answer 501, as Headscale answers them.

/** A MapRequest or RegisterRequest is a few KB; anything near this is refused unread. */
export const MAX_NOISE_BODY_BYTES = 256 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: Http2ServerRequest): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_NOISE_BODY_BYTES) {
        reject(new HttpError(413, `request body over ${MAX_NOISE_BODY_BYTES} bytes`));
        req.pause();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJson<S extends z.ZodType>(body: Buffer, schema: S): z.infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HttpError(400, `invalid request: ${issue?.path.join('.') || 'body'}: ${issue?.message}`);
  }
  return parsed.data;
}

function sendText(res: Http2ServerResponse, status: number, text: string): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`${text}\n`);
}

export function handleNoiseRequest(
  ctx: ControlContext,
  caller: RegistrationCaller,
  req: Http2ServerRequest,
  res: Http2ServerResponse,
): void {
  const path = (req.url ?? '').split('?')[0];
  const handle = async () => {
    if (req.method === 'POST' && path === '/machine/register') {
      const request = parseJson(await readBody(req), TsRegisterRequest);
      const answer = await registerTailscale(ctx, caller, request, () => res.closed);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
      return;
    }
    if (req.method === 'POST' && path === '/machine/map') {
      await handleMap(ctx, caller.machineKey, parseJson(await readBody(req), TsMapRequestSchema), res);
      return;
    }
    throw new HttpError(501, `${req.method} ${path} is not implemented by Weft's control`);
  };
  handle().catch((err) => {
    if (err instanceof HttpError) {
      sendText(res, err.status, err.message);
      return;
    }
    ctx.log.error(`ts2021 ${req.method} ${path}: ${errorText(err)}`);
    sendText(res, 500, 'internal server error');
  });
}

/**
 * One MapResponse on the wire, in parts to be written in order: a 4-byte little-endian length, then
 * JSON (zstd if asked). Uncompressed, the parts include peers' bytes shared with other frames.
 */
export function mapFrameParts(response: TsMapResponse, zstd: boolean): Buffer[] {
  const parts = mapResponseParts(response);
  const body = zstd ? [zstdFrame(Buffer.concat(parts))] : parts;
  const length = Buffer.alloc(4);
  length.writeUInt32LE(body.reduce((sum, part) => sum + part.length, 0));
  return [length, ...body];
}

/** One MapResponse on the wire as one buffer. */
export function mapFrame(response: TsMapResponse, zstd: boolean): Buffer {
  return Buffer.concat(mapFrameParts(response, zstd));
}

/** What a MapRequest tells control about the node (unless ReadOnly). */
function reported(ctx: ControlContext, node: NodeRecord, req: TsMapRequest): NodeUpdate {
  // Last seen moves when a stream opens or closes, as for Weft nodes: not on every request, which
  // would send every peer a change.
  const update: NodeUpdate = {};
  // As for Weft nodes: no endpoint that points peers at their own machine, network or the tailnet.
  if (req.Endpoints) {
    update.endpoints = usableEndpoints(req.Endpoints, [TAILNET_IPV4_RANGE, ctx.registration.ulaPrefix]);
  }
  if (req.DiscoKey) update.discoKey = keyFromTailscale(req.DiscoKey, 'discokey');
  const hostinfo = req.Hostinfo;
  if (hostinfo) {
    if (hostinfo.IPNVersion) update.clientVersion = hostinfo.IPNVersion.slice(0, 128);
    const derp = hostinfo.NetInfo?.PreferredDERP;
    if (derp !== undefined && derp > 0) update.homeRelay = derp;
    // Advertised, not approved: routes wait for an admin or autoApprovers as Weft nodes' do.
    const routes = offerableRoutes(hostinfo.RoutableIPs ?? [], ctx.registration.ulaPrefix);
    if (JSON.stringify(routes) !== JSON.stringify(node.advertisedRoutes)) update.advertisedRoutes = routes;
  }
  return update;
}

async function handleMap(
  ctx: ControlContext,
  machineKey: string,
  req: TsMapRequest,
  res: Http2ServerResponse,
): Promise<void> {
  if (req.Version < TS_MIN_CAPABILITY_VERSION) throw new HttpError(400, tooOldMessage(req.Version));
  const node = await ctx.store.nodeByMachineKey(machineKey);
  if (node === undefined || node.nodeKey !== keyFromTailscale(req.NodeKey, 'nodekey')) {
    throw new HttpError(401, 'this node key is not registered for this machine: register first');
  }
  if (isExpired(node, new Date())) throw new HttpError(403, 'node key expired: log in again');
  const update = req.ReadOnly ? {} : reported(ctx, node, req);
  if (Object.keys(update).length > 0) {
    await ctx.store.updateNode(node.id, update);
    await ctx.sync.refreshNodes([node.id]);
  }
  const zstd = req.Compress === 'zstd';
  if (zstd) await loadZstd();
  // Registered through another connection or replica: the hub may not have it yet.
  if (!ctx.hub.has(node.id)) await ctx.sync.refreshNodes([node.id]);

  if (!req.Stream) {
    // A "lite" update (OmitPeers) only reports; otherwise one whole map.
    if (req.OmitPeers) {
      res.writeHead(200);
      res.end();
      return;
    }
    const netmap = ctx.hub.snapshot(node.id);
    if (netmap === undefined) throw new HttpError(403, 'this node is no longer in the tailnet');
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(mapFrame(fullMapResponse(netmap), zstd));
    return;
  }
  streamMap(ctx, node, res, { zstd, keepAlive: req.KeepAlive !== false });
}

function streamMap(
  ctx: ControlContext,
  node: NodeRecord,
  res: Http2ServerResponse,
  { zstd, keepAlive }: { zstd: boolean; keepAlive: boolean },
): void {
  const { hub, log, background } = ctx;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  // Bounded like a Weft stream: over the bound the hub holds deltas back and sends one whole map
  // once the client has read what was queued; a client stuck that long is dropped.
  const sender = new StreamSender(
    mapSocket(res),
    ctx.limits,
    () => hub.resync(session),
    () =>
      log.warn(
        `map stream ${node.name} (tailscale): nothing read for ${ctx.limits.streamStuckMs} ms, dropping`,
      ),
  );
  const session = new TsMapSession(
    node.id,
    // A response with Peers is a whole map (not counted against the bound while it is written).
    (response) => sender.sendEncoded(mapFrameParts(response, zstd), response.Peers !== undefined),
    (reason) => {
      log.info(`map stream ${node.name} (tailscale): ended: ${reason}`);
      res.end();
    },
    () => sender.backlogged(),
  );
  // Keep-alives tell the client (which asks for them) the stream is alive while nothing changes;
  // none while bytes are still queued (those say as much once read).
  const keepAliveFrame = mapFrame({ KeepAlive: true }, zstd);
  const ticker = setInterval(() => {
    if (keepAlive && !res.closed && res.stream.writableLength === 0) res.write(keepAliveFrame);
  }, ctx.pingIntervalMs);

  background.run(
    `map stream of ${node.name}`,
    () =>
      new Promise<void>((resolve) =>
        res.on('close', () => {
          clearInterval(ticker);
          sender.close();
          // Only the node's current stream: a replaced one leaves the newer stream's presence alone.
          // Its peers are told at the last-seen write's reload, offline and last seen at once.
          if (hub.disconnect(session, true))
            background.run(`last seen of ${node.name}`, () => ctx.presence.disconnected(node.id));
          resolve();
        }),
      ),
  );
  if (!hub.has(node.id)) {
    session.send({ type: 'logout', reason: hub.goneReason(node.id) });
    return;
  }
  hub.connect(session);
  log.info(`map stream ${node.name} (tailscale): connected`);
  background.run(`last seen of ${node.name}`, () => ctx.presence.connected(node.id));
}
