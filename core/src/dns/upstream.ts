import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { formatAddr, parseAddr, parseEndpoint } from '@weft/protocol';

// Asking an upstream resolver: one UDP exchange from a fresh socket (a random source port and a
// random query id, so a spoofed answer has to guess both), and the same question over TCP when the
// UDP answer comes back truncated. Answers are bytes: the resolver passes them on as they came.

export interface Upstream {
  host: string;
  port: number;
}

/**
 * A nameserver setting ("198.51.100.53", "198.51.100.53:5353", "[fd00::53]:53") as host and port;
 * null for anything else (the OS's resolvers are not schema-checked as control's settings are).
 */
export function upstreamOf(nameserver: string): Upstream | null {
  const addr = parseAddr(nameserver);
  if (addr !== null) return { host: formatAddr(addr), port: 53 };
  const ep = parseEndpoint(nameserver);
  return ep === null ? null : { host: formatAddr(ep.addr), port: ep.port };
}

export const upstreamText = (u: Upstream) =>
  u.host.includes(':') ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`;

/** The query with a fresh random id; returns the copy and the id. */
function withFreshId(query: Buffer): { wire: Buffer; id: number } {
  const wire = Buffer.from(query);
  const id = randomInt(0, 0x10000);
  wire.writeUInt16BE(id, 0);
  return { wire, id };
}

type Finish = (err: Error | null, answer?: Buffer) => void;

/**
 * One exchange's promise: settled once, by `run`'s `finish` or with `timeoutText` after `timeoutMs`;
 * `cleanup` (closing the socket) runs exactly once, whichever comes first.
 */
function oneExchange(
  timeoutMs: number,
  timeoutText: string,
  cleanup: () => void,
  run: (finish: Finish) => void,
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let done = false;
    const finish: Finish = (err, answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      cleanup();
      if (err) reject(err);
      else resolve(answer as Buffer);
    };
    const timer = setTimeout(() => finish(new Error(timeoutText)), timeoutMs);
    run(finish);
  });
}

/** One UDP exchange; rejects on time-out or a socket error. Answers with another id are ignored. */
export function exchangeUdp(query: Buffer, upstream: Upstream, timeoutMs: number): Promise<Buffer> {
  const { wire, id } = withFreshId(query);
  const socket = createSocket(upstream.host.includes(':') ? 'udp6' : 'udp4');
  const timeoutText = `no answer from ${upstreamText(upstream)} in ${timeoutMs} ms`;
  return oneExchange(
    timeoutMs,
    timeoutText,
    () => socket.close(),
    (finish) => {
      socket.on('error', (err) => finish(err));
      socket.on('message', (msg, rinfo) => {
        const from = parseAddr(rinfo.address);
        if (from === null || formatAddr(from) !== upstream.host || rinfo.port !== upstream.port) return;
        if (msg.length < 12 || msg.readUInt16BE(0) !== id) return;
        finish(null, msg);
      });
      socket.send(wire, upstream.port, upstream.host, (err) => {
        if (err) finish(err);
      });
    },
  );
}

/** The most a TCP answer may be (its length is a 16-bit field). */
const MAX_TCP_MESSAGE = 65535;

/** One exchange over TCP (RFC 7766 framing: a 2-byte length before each message). */
export function exchangeTcp(query: Buffer, upstream: Upstream, timeoutMs: number): Promise<Buffer> {
  const { wire, id } = withFreshId(query);
  const socket = connect({ host: upstream.host, port: upstream.port });
  const timeoutText = `no TCP answer from ${upstreamText(upstream)} in ${timeoutMs} ms`;
  return oneExchange(
    timeoutMs,
    timeoutText,
    () => socket.destroy(),
    (finish) => {
      let received = Buffer.alloc(0);
      socket.on('error', (err) => finish(err));
      socket.on('connect', () => {
        const length = Buffer.alloc(2);
        length.writeUInt16BE(wire.length);
        socket.write(Buffer.concat([length, wire]));
      });
      socket.on('data', (chunk) => {
        received = Buffer.concat([received, chunk]);
        if (received.length > MAX_TCP_MESSAGE + 2) return finish(new Error('TCP answer too long'));
        if (received.length < 2) return;
        const length = received.readUInt16BE(0);
        if (received.length < 2 + length) return;
        const answer = received.subarray(2, 2 + length);
        if (answer.length < 12 || answer.readUInt16BE(0) !== id)
          return finish(new Error('TCP answer to another query'));
        finish(null, Buffer.from(answer));
      });
      socket.on('end', () => finish(new Error(`${upstreamText(upstream)} closed the TCP connection`)));
    },
  );
}
