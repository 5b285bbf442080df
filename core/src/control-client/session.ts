import { EventEmitter } from 'node:events';
import {
  parseJsonAs,
  STREAM_RETRY,
  type StreamClientMessage,
  StreamServerMessage,
  streamHandshakeTimeoutMs,
  streamPath,
} from '@weft/protocol';
import WebSocket from 'ws';
import { WeftError } from '../errors.js';
import { describeError, type Logger } from '../log/logger.js';
import { Backoff, type BackoffOptions, sleep } from '../retry/backoff.js';
import { type ControlClient, controlHttpError, controlReason } from './client.js';

// The long-lived netmap stream: a signed WebSocket to control that delivers a full map, then
// deltas. It reconnects forever with back-off until stopped, and never touches the tunnel itself:
// while it is down the engine keeps the last map in force. Each connect gives the token of the map
// the engine holds, if any, so control can resume it (peers kept) rather than send a whole map.

export interface SessionEvents {
  /** A validated message from control. */
  message: [StreamServerMessage];
  /** The stream is open (a full map or a resume follows). */
  connected: [];
  /** An attempt failed or a live stream ended; a retry is scheduled unless stopped. */
  disconnected: [WeftError];
  /** Control refuses this node (deleted, expired): the session has stopped for good. */
  refused: [WeftError];
}

export interface SessionOptions {
  backoff?: BackoffOptions;
  /** How often to ping control; a ping unanswered by the next one drops the stream. */
  pingMs?: number;
  /** How long to wait for control to answer an upgrade after that many timeouts in a row; tests shorten it. */
  handshakeTimeoutMs?: (timeouts: number) => number;
  /** How long a stream must have carried its map for its break to be retried sooner; tests shorten it. */
  steadyMs?: number;
  /** The token of the map the engine holds now (see MapToken); null: none, a whole map is wanted. */
  mapToken?: () => string | null;
  log: Logger;
}

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Stream refusals that no retry can change: the node must log in again. */
const FINAL_REFUSALS = new Set(['node-key-expired', 'unknown-node']);

export class MapSession extends EventEmitter<SessionEvents> {
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private ws: WebSocket | null = null;
  private endpoints: string[] = [];
  private advertisedRoutes: string[] = [];
  /** The last message of each type sent on this stream, to send only changes. */
  private readonly sent = new Map<StreamClientMessage['type'], string>();
  private loop: Promise<void> | null = null;
  /** Upgrades in a row that control did not answer in time: each makes the next wait longer. */
  private handshakeTimeouts = 0;
  /** When the latest stream's map (whole or resumed) arrived; null: it has none. */
  private mapAt: number | null = null;

  constructor(
    private readonly client: ControlClient,
    private readonly opts: SessionOptions,
  ) {
    super();
    this.backoff = new Backoff({ ...STREAM_RETRY, ...opts.backoff });
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops reconnecting and closes the stream; resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.abort.abort();
    this.ws?.terminate();
    await this.loop;
  }

  /**
   * Drops the current stream and connects again (the network changed under it: a NAT that got a
   * new address forgets the TCP mapping without a word, and pings would notice only much later).
   */
  reconnect(): void {
    this.ws?.terminate();
  }

  /** Sets the endpoints to report; sent now if connected and changed, and on every reconnect. */
  setEndpoints(endpoints: string[]): void {
    this.endpoints = endpoints;
    this.sendReport();
  }

  /** Sets the routes this node offers (subnets, exit node); sent on every connect and when changed. */
  setAdvertisedRoutes(routes: string[]): void {
    this.advertisedRoutes = routes;
    this.sendReport();
  }

  /** Sends the endpoints and the routes, each if connected and changed since last sent. */
  private sendReport(): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const messages: StreamClientMessage[] = [
      { type: 'endpoints', endpoints: this.endpoints.slice(0, 64) },
      { type: 'routes', advertisedRoutes: this.advertisedRoutes.slice(0, 64) },
    ];
    for (const msg of messages) {
      const text = JSON.stringify(msg);
      if (text === this.sent.get(msg.type)) continue;
      this.sent.set(msg.type, text);
      ws.send(text);
    }
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    let refusals = 0;
    while (!signal.aborted) {
      let loggedOut = false;
      try {
        loggedOut = await this.connectOnce();
      } catch (err) {
        if (signal.aborted) break;
        const e =
          err instanceof WeftError
            ? err
            : new WeftError('control-unreachable', `control stream: ${describeError(err)}`);
        this.opts.log.warn(e.message);
        // One refusal may be a stale control key (fetched again for the retry); two in a row mean
        // control no longer accepts this node, as when it was deleted while we were away. An
        // expired key or an unknown machine is final at once.
        refusals = e.code === 'control-rejected' ? refusals + 1 : 0;
        if (refusals >= 2 || FINAL_REFUSALS.has(controlReason(e) ?? '')) {
          this.emit('refused', e);
          break;
        }
        this.emit('disconnected', e);
      }
      // After a logout control will not take us back with this key: stop until logged in again.
      if (loggedOut) break;
      // A stream that had carried its map for a while broke: its control went away (a killed
      // replica behind a balancer), it did not refuse us; the first try goes sooner.
      const steady =
        this.mapAt !== null &&
        performance.now() - this.mapAt >= (this.opts.steadyMs ?? STREAM_RETRY.steadyMs);
      this.mapAt = null;
      const delay = this.backoff.next(steady);
      this.opts.log.debug(`reconnecting to control in ${delay} ms`);
      await sleep(delay, signal);
    }
  }

  /** One stream connection; resolves true after a logout message, rejects when it ends otherwise. */
  private async connectOnce(): Promise<boolean> {
    const path = streamPath(this.opts.mapToken?.() ?? null);
    const headers = await this.client.signedHeaders('GET', path, '');
    if (this.abort.signal.aborted) return false;
    const ws = new WebSocket(this.client.streamUrl(path), {
      headers,
      maxPayload: MAX_MESSAGE_BYTES,
      followRedirects: false,
    });
    this.ws = ws;
    this.sent.clear();
    const patience = (this.opts.handshakeTimeoutMs ?? streamHandshakeTimeoutMs)(this.handshakeTimeouts);
    try {
      return await new Promise<boolean>((resolve, reject) => {
        let alive = true;
        let pinger: NodeJS.Timeout | undefined;
        const fail = (err: WeftError) => {
          clearTimeout(handshake);
          clearInterval(pinger);
          ws.terminate();
          reject(err);
        };
        let status: number | undefined;
        // Not ws's own handshakeTimeout: a give-up must be told from other failures to count it.
        const handshake = setTimeout(() => {
          const seconds = Math.round(patience / 1000);
          if (status !== undefined)
            return fail(
              new WeftError(
                'control-unreachable',
                `control answered the stream upgrade with ${status} but its body did not arrive in ${seconds} s`,
              ),
            );
          this.handshakeTimeouts++;
          fail(
            new WeftError('control-unreachable', `control did not answer the stream upgrade in ${seconds} s`),
          );
        }, patience);
        ws.on('upgrade', () => {
          clearTimeout(handshake);
          this.handshakeTimeouts = 0;
        });
        ws.on('unexpected-response', (_req, res) => {
          // An answer, even an error, ends the run of timeouts; the timer still bounds reading its body.
          status = res.statusCode ?? 0;
          this.handshakeTimeouts = 0;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let body: unknown;
            try {
              body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              body = undefined;
            }
            // A key mismatch after a control reinstall shows as 401: fetch its key again next time.
            if (res.statusCode === 401) this.client.forgetServerKey();
            fail(controlHttpError(res.statusCode ?? 0, body, 'the netmap stream'));
          });
        });
        ws.on('open', () => {
          this.opts.log.info(`netmap stream connected to ${this.client.baseUrl}`);
          this.emit('connected');
          this.sendReport();
          pinger = setInterval(() => {
            if (!alive)
              return fail(new WeftError('control-unreachable', 'control stream stopped answering pings'));
            alive = false;
            ws.ping();
          }, this.opts.pingMs ?? 15_000);
        });
        ws.on('pong', () => {
          alive = true;
        });
        ws.on('message', (data, isBinary) => {
          const msg = isBinary ? null : parseJsonAs(StreamServerMessage, data.toString());
          if (!msg) {
            // Skipping a message would leave the map silently wrong; a reconnect starts from a full map.
            ws.close(1008, 'invalid message');
            return fail(new WeftError('control-error', 'control sent an invalid stream message'));
          }
          alive = true;
          if (msg.type === 'full' || msg.type === 'resume') {
            this.backoff.reset();
            this.mapAt ??= performance.now();
          }
          this.emit('message', msg);
          if (msg.type === 'logout') {
            clearInterval(pinger);
            ws.close(1000);
            resolve(true);
          }
        });
        ws.on('error', (err) =>
          fail(
            new WeftError(
              'control-unreachable',
              `control unreachable at ${this.client.baseUrl}: ${describeError(err)}`,
            ),
          ),
        );
        ws.on('close', (code) =>
          fail(new WeftError('control-unreachable', `control stream closed (code ${code})`)),
        );
      });
    } finally {
      this.ws = null;
    }
  }
}
