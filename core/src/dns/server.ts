import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import type { Resolver } from './resolver.js';

// The resolver on the wire: UDP and TCP on one address and port (the engine picks a high port on its
// tunnel address; the helper redirects 100.100.100.100:53 there). Bounded everywhere: queries in
// flight over UDP and TCP together (a flood beyond it is dropped, as a busy resolver does), TCP
// connections, the queries each one may have waiting, their idle time and their message size.

const MAX_IN_FLIGHT = 1024;
const MAX_TCP_CONNECTIONS = 64;
const TCP_IDLE_MS = 10_000;
/** A TCP client may pipeline several queries; more bytes than this waiting unread closes it. */
const MAX_TCP_BUFFER = 2 * (65535 + 2);
/** Queries a TCP client may have waiting for their answers; pipelining more closes the connection. */
const MAX_TCP_WAITING = 16;
/** Free ports tried when the first one's TCP twin is taken. */
const LISTEN_ATTEMPTS = 5;

export interface DnsServerAddress {
  host: string;
  port: number;
}

export class DnsServer {
  private udp: Socket | null = null;
  private tcp: Server | null = null;
  private readonly connections = new Set<TcpSocket>();
  private inFlightCount = 0;
  dropped = 0;
  /** The most queries that were ever in flight at once. */
  peakInFlight = 0;

  constructor(
    private readonly resolver: Resolver,
    private readonly maxInFlight = MAX_IN_FLIGHT,
  ) {}

  /** Queries taken and not yet answered or dropped, UDP and TCP. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Takes one query into the in-flight bound; false (counted as dropped) when it is full. */
  private take(): boolean {
    if (this.inFlightCount >= this.maxInFlight) {
      this.dropped++;
      return false;
    }
    this.inFlightCount++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlightCount);
    return true;
  }

  /**
   * Listens on `host:port` (port 0: any free port, the same for UDP and TCP); returns where. With
   * port 0 the free UDP port's TCP twin may be taken: then another port is tried, a few times.
   */
  async listen(host: string, port: number): Promise<DnsServerAddress> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listenOnce(host, port);
      } catch (err) {
        const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
        if (port !== 0 || !inUse || attempt >= LISTEN_ATTEMPTS) throw err;
      }
    }
  }

  /** Binds UDP, then TCP on the same port; on failure nothing stays open. */
  private async listenOnce(host: string, port: number): Promise<DnsServerAddress> {
    const udp = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
    const tcp = createServer((socket) => this.serveTcp(socket));
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    let bound: number;
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      bound = udp.address().port;
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(bound, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      throw err;
    }
    udp.on('error', () => {});
    udp.on('message', (msg, rinfo) => {
      if (!this.take()) return;
      this.resolver
        .handle(msg, 'udp')
        .then((answer) => {
          if (answer) udp.send(answer, rinfo.port, rinfo.address);
        })
        .catch(() => {})
        .finally(() => {
          this.inFlightCount--;
        });
    });
    this.udp = udp;
    this.tcp = tcp;
    return { host, port: bound };
  }

  private serveTcp(socket: TcpSocket): void {
    let buffered = Buffer.alloc(0);
    let chain = Promise.resolve();
    let waiting = 0;
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length > MAX_TCP_BUFFER) return socket.destroy();
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const query = Buffer.from(buffered.subarray(2, 2 + length));
        buffered = buffered.subarray(2 + length);
        if (waiting >= MAX_TCP_WAITING) return socket.destroy();
        if (!this.take()) continue;
        waiting++;
        // Answers go back in the order the queries came; none is worked on once the client is gone.
        chain = chain.then(async () => {
          try {
            if (socket.destroyed) return;
            const answer = await this.resolver.handle(query, 'tcp').catch(() => null);
            if (answer === null || socket.destroyed) return;
            const prefix = Buffer.alloc(2);
            prefix.writeUInt16BE(answer.length);
            socket.write(Buffer.concat([prefix, answer]));
          } finally {
            waiting--;
            this.inFlightCount--;
          }
        });
      }
    });
  }

  async close(): Promise<void> {
    this.udp?.close();
    this.udp = null;
    const tcp = this.tcp;
    this.tcp = null;
    // The server's close waits for open connections: an idle client would hold it for good.
    for (const socket of this.connections) socket.destroy();
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }
}
