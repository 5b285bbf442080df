import { EventEmitter } from 'node:events';
import { request } from 'node:http';
import type { Socket } from 'node:net';
import {
  DERP_KEY_BYTES,
  DERP_MAGIC,
  DERP_MAX_PACKET_BYTES,
  DERP_NONCE_BYTES,
  DERP_PROTOCOL_VERSION,
  type DerpClientInfo,
  DerpFrameType,
  DerpServerInfo,
  type KeyPair,
  parseJsonAs,
} from '@weft/protocol';
import { openBox, sealBox } from './box.js';
import { DerpFrameReader, encodeDerpFrame } from './frames.js';

// A minimal DERP client over plain HTTP (tests and benchmarks; Tailscale's own clients are the
// real users): upgrade, log in, send packets, and report what the server sends.

export interface DerpClientEvents {
  /** Logged in: the server's ServerInfo arrived. */
  serverInfo: [info: DerpServerInfo];
  packet: [source: Uint8Array, packet: Buffer];
  /** Every other frame, as it came. */
  frame: [type: number, payload: Buffer];
  close: [];
}

export class DerpClient extends EventEmitter<DerpClientEvents> {
  readonly serverKey: Uint8Array;
  private readonly reader = new DerpFrameReader(() => DERP_KEY_BYTES + DERP_MAX_PACKET_BYTES);

  private constructor(
    private readonly socket: Socket,
    private readonly privateKey: Uint8Array,
    serverKey: Uint8Array,
  ) {
    super();
    this.serverKey = serverKey;
  }

  /**
   * Connects to `url` (http://HOST:PORT/derp) as `keyPair` and sends its ClientInfo. Resolves
   * once that is sent; the login is done at the `serverInfo` event (or refused: `close`).
   */
  static connect(url: string, keyPair: KeyPair, info: DerpClientInfo = {}): Promise<DerpClient> {
    const privateKey = new Uint8Array(Buffer.from(keyPair.privateKey, 'base64'));
    const publicKey = new Uint8Array(Buffer.from(keyPair.publicKey, 'base64'));
    return new Promise((resolve, reject) => {
      const req = request(url, { headers: { connection: 'Upgrade', upgrade: 'DERP' } });
      req.once('error', reject);
      req.once('response', (res) => reject(new Error(`DERP upgrade refused: ${res.statusCode}`)));
      req.once('upgrade', (_res, socket, head) => {
        // The first frame is the ServerKey: magic and the server's key.
        const greeting = new DerpFrameReader(() => 1024);
        const onData = (chunk: Buffer) => {
          greeting.push(chunk);
          const f = greeting.next();
          if (f === null) return;
          socket.off('data', onData);
          if (f.type !== DerpFrameType.serverKey || !f.payload.subarray(0, 8).equals(DERP_MAGIC)) {
            socket.destroy();
            reject(new Error('not a DERP server greeting'));
            return;
          }
          const serverKey = new Uint8Array(f.payload.subarray(8, 8 + DERP_KEY_BYTES));
          const client = new DerpClient(socket, privateKey, serverKey);
          const sealed = sealBox(
            privateKey,
            serverKey,
            Buffer.from(JSON.stringify({ version: DERP_PROTOCOL_VERSION, CanAckPings: true, ...info })),
          );
          socket.write(encodeDerpFrame(DerpFrameType.clientInfo, publicKey, sealed));
          socket.on('data', (c: Buffer) => client.onData(c));
          socket.on('error', () => socket.destroy());
          socket.once('close', () => client.emit('close'));
          const rest = greeting.rest();
          if (rest.length > 0) client.onData(rest);
          resolve(client);
        };
        socket.on('data', onData);
        if (head.length > 0) onData(head);
      });
      req.end();
    });
  }

  /** Resolves at login, rejects if the server closes the connection first. */
  loggedIn(): Promise<DerpServerInfo> {
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new Error('the server closed the connection'));
      this.once('close', onClose);
      this.once('serverInfo', (info) => {
        this.off('close', onClose);
        resolve(info);
      });
    });
  }

  send(destination: Uint8Array, packet: Uint8Array): boolean {
    return this.socket.write(encodeDerpFrame(DerpFrameType.sendPacket, destination, packet));
  }

  /** Writes raw bytes (tests of malformed input). */
  writeRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  pause(): void {
    this.socket.pause();
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.reader.push(chunk);
    for (let f = this.reader.next(); f !== null; f = this.reader.next()) {
      if (f.type === DerpFrameType.recvPacket && f.payload.length >= DERP_KEY_BYTES) {
        this.emit('packet', f.payload.subarray(0, DERP_KEY_BYTES), f.payload.subarray(DERP_KEY_BYTES));
      } else if (f.type === DerpFrameType.serverInfo && f.payload.length >= DERP_NONCE_BYTES) {
        const opened = openBox(this.privateKey, this.serverKey, f.payload);
        const info = opened && parseJsonAs(DerpServerInfo, Buffer.from(opened).toString('utf8'));
        if (info) this.emit('serverInfo', info);
        else this.socket.destroy();
      } else {
        if (f.type === DerpFrameType.ping) this.socket.write(encodeDerpFrame(DerpFrameType.pong, f.payload));
        this.emit('frame', f.type, f.payload);
      }
    }
  }
}
