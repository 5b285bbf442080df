import type { IncomingMessage, Server } from 'node:http';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TsEarlyNoise } from '@weft/protocol';
import type { RegistrationCaller } from '../auth/register.js';
import { x25519Public, x25519RandomPrivate } from '../crypto/x25519.js';
import { errorText, type Logger } from '../log.js';
import { errorFrame, INITIATION_LEN, NoiseHandshakeError, respondToInitiation } from './noise.js';
import { NoiseStream } from './noise-stream.js';

// The /ts2021 upgrade: an HTTP/1.1 request with `Upgrade: tailscale-control-protocol` whose
// `X-Tailscale-Handshake` header (base64) carries the Noise initiation, or, without the header, the
// initiation as the first bytes after the switch. The handshake is checked before anything is
// answered, so garbage or a message for another key gets a plain 400 and nothing else happens. Then
// control sends its response frame, the early payload (EarlyNoise) and serves HTTP/2 over the
// records, one HTTP/2 server per connection that knows the proven machine key.

export const TS2021_PATH = '/ts2021';
export const UPGRADE_PROTOCOL = 'tailscale-control-protocol';
const HANDSHAKE_HEADER = 'x-tailscale-handshake';
/** A client that upgraded without the header has this long to send its initiation. */
const INITIATION_WAIT_MS = 10_000;
/** A connection with no HTTP/2 activity this long is closed (a map stream has keep-alives). */
const IDLE_MS = 5 * 60_000;
const EARLY_PAYLOAD_MAGIC = Buffer.from([0xff, 0xff, 0xff, 0x54, 0x53]);

/** Who is asking: the machine key the handshake proved and the address the connection came from. */
export type NoiseRequestHandler = (
  caller: RegistrationCaller,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
) => void;

export interface Ts2021Deps {
  noisePrivateKey: Uint8Array;
  handle: NoiseRequestHandler;
  log: Logger;
  /** Sessions still open, ended on shutdown. */
  sessions: Set<http2.ServerHttp2Session>;
}

export function isTs2021Upgrade(req: IncomingMessage): boolean {
  return (req.url ?? '').split('?')[0] === TS2021_PATH;
}

/** Routes /ts2021 upgrades here and every other upgrade (Weft's WebSockets) to the listeners before. */
export function routeTs2021Upgrades(server: Server, deps: Ts2021Deps): void {
  const others = server.listeners('upgrade') as ((req: IncomingMessage, s: Duplex, h: Buffer) => void)[];
  server.removeAllListeners('upgrade');
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (isTs2021Upgrade(req)) acceptTs2021(req, socket, head, deps);
    else for (const listener of others) listener.call(server, req, socket, head);
  });
}

/** A plain 400 with the reason, before anything was switched: the client's HTTP library shows it. */
function refuse(socket: Duplex, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function acceptTs2021(req: IncomingMessage, socket: Duplex, head: Buffer, deps: Ts2021Deps): void {
  socket.on('error', (err) => deps.log.warn(`ts2021 ${req.socket.remoteAddress}: ${errorText(err)}`));
  const protocol = String(req.headers.upgrade ?? '').toLowerCase();
  if (protocol !== UPGRADE_PROTOCOL) {
    refuse(socket, `unknown next protocol ${JSON.stringify(protocol.slice(0, 40))}`);
    return;
  }
  const header = req.headers[HANDSHAKE_HEADER];
  if (typeof header === 'string' && header !== '') {
    const init = Buffer.from(header, 'base64');
    if (init.toString('base64') !== header.replace(/\s/g, '')) {
      refuse(socket, 'invalid tailscale handshake header (not base64)');
      return;
    }
    let session: ReturnType<typeof respondToInitiation>;
    try {
      session = respondToInitiation(deps.noisePrivateKey, init);
    } catch (err) {
      deps.log.warn(`ts2021 ${req.socket.remoteAddress}: refused handshake: ${errorText(err)}`);
      refuse(socket, `noise handshake failed: ${errorText(err)}`);
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n\r\n`,
    );
    serve(socket, session, head, deps, req.socket.remoteAddress ?? '');
    return;
  }

  // No header: switch first, then read the initiation from the stream.
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n\r\n`,
  );
  let buffered = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), INITIATION_WAIT_MS);
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (buffered.length < INITIATION_LEN) return;
    socket.off('data', onData);
    clearTimeout(timer);
    try {
      const session = respondToInitiation(deps.noisePrivateKey, buffered.subarray(0, INITIATION_LEN));
      serve(socket, session, buffered.subarray(INITIATION_LEN), deps, req.socket.remoteAddress ?? '');
    } catch (err) {
      deps.log.warn(`ts2021 ${req.socket.remoteAddress}: refused handshake: ${errorText(err)}`);
      const why = err instanceof NoiseHandshakeError ? err.message : 'handshake failed';
      socket.end(errorFrame(why));
    }
  };
  socket.on('data', onData);
  socket.on('close', () => clearTimeout(timer));
  if (head.length > 0) onData(head);
}

function serve(
  socket: Duplex,
  session: ReturnType<typeof respondToInitiation>,
  head: Buffer,
  deps: Ts2021Deps,
  source: string,
): void {
  const machineKey = Buffer.from(session.machineKey).toString('base64');
  socket.write(session.response);
  const stream = new NoiseStream(socket, session.rx, session.tx, head);
  stream.on('error', (err) => deps.log.info(`ts2021 machine ${machineKey}: ${errorText(err)}`));
  // The client reads this before HTTP/2; the challenge is for node-key signatures, which Weft
  // does not ask for, so a fresh random key serves.
  const early: TsEarlyNoise = {
    NodeKeyChallenge: `chalpub:${Buffer.from(x25519Public(x25519RandomPrivate())).toString('hex')}`,
  };
  const json = Buffer.from(JSON.stringify(early));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  stream.write(Buffer.concat([EARLY_PAYLOAD_MAGIC, length, json]));

  const server = http2.createServer({ maxSessionMemory: 4 }, (req, res) =>
    deps.handle({ machineKey, source }, req, res),
  );
  server.on('session', (h2) => {
    deps.sessions.add(h2);
    h2.on('close', () => deps.sessions.delete(h2));
    h2.setTimeout(IDLE_MS, () => h2.destroy());
    h2.on('error', (err) => deps.log.info(`ts2021 machine ${machineKey}: ${errorText(err)}`));
  });
  server.emit('connection', stream);
}
