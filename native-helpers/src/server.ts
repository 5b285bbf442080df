import net from 'node:net';
import {
  HELPER_MAX_MESSAGE_BYTES,
  type HelperErrorCode,
  type HelperRequest,
  type HelperResponse,
  type InterfaceStatus,
  SerialQueue,
} from '@weft/protocol';
import type { z } from 'zod';
import { BackendError, type PlatformBackend } from './backend.js';
import { LineSplitter } from './framing.js';
import type { Logger } from './log.js';
import { listenUnix } from './socket.js';
import { RequestParser } from './validate.js';

// The helper's socket server: newline-delimited JSON, one response line per request line, in order.
// Requests from every connection go through one queue because they all change the same OS state.
// Each connection stops reading while its request waits, so a client cannot pile up work.

const DEFAULT_MAX_CONNECTIONS = 16;
const CLOSE_GRACE_MS = 1000;

export interface HelperServerOptions {
  backend: PlatformBackend;
  log: Logger;
  /** Connections beyond this many are answered `busy` and closed. */
  maxConnections?: number;
}

export class HelperServer {
  private readonly server: net.Server;
  private readonly queue = new SerialQueue();
  /** Open connections, and whether each is busy with a request (then it closes itself when done). */
  private readonly connections = new Map<net.Socket, { pumping: boolean }>();
  private readonly maxConnections: number;
  private readonly parser = new RequestParser();
  private closing = false;

  constructor(private readonly opts: HelperServerOptions) {
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    // Half-open: a client may send its request and shut its side (`… | socat - UNIX:…`) and still
    // read the answer.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
  }

  /** Listens on a unix socket: mode 0600, or 0660 owned by `gid` when given. */
  async listen(path: string, gid?: number): Promise<void> {
    await listenUnix(this.server, path, gid);
  }

  /**
   * Stops listening (libuv removes the socket file at once) and closes every connection: idle ones
   * now, busy ones once their request is answered. Requests not yet started are answered `busy`.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const [socket, state] of this.connections) if (!state.pumping) finish(socket);
    await this.queue.drain();
    // A client that never reads its last answer must not hold the exit up.
    const grace = setTimeout(() => {
      for (const socket of this.connections.keys()) socket.destroy();
    }, CLOSE_GRACE_MS);
    await closed;
    clearTimeout(grace);
  }

  private accept(socket: net.Socket): void {
    socket.on('error', (e) => this.opts.log.warn(`client connection: ${e.message}`));
    if (this.closing || this.connections.size >= this.maxConnections) {
      const reason = this.closing ? 'helper is shutting down' : 'too many connections';
      finish(socket, encode(failure(null, 'busy', reason)));
      return;
    }
    const state = { pumping: false };
    this.connections.set(socket, state);
    socket.on('close', () => this.connections.delete(socket));

    const splitter = new LineSplitter(HELPER_MAX_MESSAGE_BYTES);
    // Lines waiting for their turn; `null` stands for a line that was too large.
    const pending: (Buffer | null)[] = [];
    let clientEnded = false;

    const pump = async (): Promise<void> => {
      if (state.pumping) return;
      state.pumping = true;
      socket.pause();
      for (let line = pending.shift(); line !== undefined; line = pending.shift()) {
        if (line === null) {
          const limit = `request line longer than ${HELPER_MAX_MESSAGE_BYTES} bytes; closing the connection`;
          finish(socket, encode(failure(null, 'too-large', limit)));
          return;
        }
        const response = await this.respond(line);
        if (!socket.writable) return;
        socket.write(encode(response));
      }
      state.pumping = false;
      if (clientEnded || this.closing) finish(socket);
      else socket.resume();
    };

    const onData = (chunk: Buffer): void => {
      const frames = splitter.push(chunk);
      for (const line of frames.lines) pending.push(line);
      if (frames.tooLarge) {
        pending.push(null);
        socket.off('data', onData);
      }
      void pump();
    };
    socket.on('data', onData);
    socket.on('end', () => {
      clientEnded = true;
      const last = splitter.finish();
      if (last !== null) pending.push(last);
      void pump();
    });
  }

  private async respond(line: Buffer): Promise<HelperResponse> {
    const { log } = this.opts;
    const parsed = this.parser.parse(line);
    if (!parsed.ok) {
      log.info(`refused request ${parsed.id ?? '(no id)'}: ${parsed.message}`);
      return failure(parsed.id, 'invalid-request', parsed.message);
    }
    const { request } = parsed;
    if (this.closing) return failure(request.id, 'busy', 'helper is shutting down');
    try {
      const status = await this.queue.run(() => this.execute(request));
      return { id: request.id, ok: true, status };
    } catch (e) {
      if (e instanceof BackendError) {
        log.warn(`${request.op} refused: ${e.message}`);
        return failure(request.id, e.code, e.message);
      }
      const message = e instanceof Error ? e.message : String(e);
      log.error(`${request.op} failed: ${message}`);
      return failure(request.id, 'os-error', message);
    }
  }

  private execute(request: HelperRequest): Promise<InterfaceStatus> {
    const { backend } = this.opts;
    switch (request.op) {
      case 'apply':
        return backend.apply(request.state);
      case 'status':
        return backend.status(request.interface);
      case 'down':
        return backend.down(request.interface);
    }
  }
}

function failure(id: number | null, code: z.infer<typeof HelperErrorCode>, message: string): HelperResponse {
  return { id, ok: false, error: { code, message } };
}

/** Sends the last bytes, then closes both directions (the socket is half-open otherwise). */
function finish(socket: net.Socket, last = ''): void {
  socket.end(last, () => socket.destroy());
}

function encode(response: HelperResponse): string {
  return `${JSON.stringify(response)}\n`;
}
