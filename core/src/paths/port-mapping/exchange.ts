import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

// One request/answer exchange with the gateway over a connected UDP socket: the kernel then
// delivers only datagrams from the gateway's address and port (RFC 6886 §3.1 asks clients to
// check the source), and an ICMP "port unreachable" ends the wait at once instead of timing out.

/** RFC 6886/6887 retransmit from 250 ms, doubling; three tries keep a silent gateway to 1.75 s. */
export const RETRY_MS = [250, 500, 1000];

export interface GatewaySocket {
  socket: Socket;
  /** Our source address towards the gateway (PCP's client address). */
  localAddress: string;
}

export async function openGatewaySocket(gateway: string, port: number): Promise<GatewaySocket | null> {
  const socket = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, gateway, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return { socket, localAddress: socket.address().address };
  } catch {
    socket.close();
    return null;
  }
}

/** Sends one request (on an unconnected socket, to several destinations) and reports an error. */
export type Send = (onError: (err: Error | null) => void) => void;

/**
 * Sends `request` until `decode` accepts an answer (or returns 'stop'), at most once per retry
 * step. Anything `decode` maps to null is ignored: garbage from the gateway never ends the wait
 * early and never throws.
 */
export function exchange<T>(
  socket: Socket,
  request: Uint8Array | Send,
  decode: (msg: Uint8Array, from: RemoteInfo) => T | 'stop' | null,
  retryMs: readonly number[] = RETRY_MS,
): Promise<T | null> {
  return new Promise((resolve) => {
    let step = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (value: T | null) => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      socket.off('error', onError);
      resolve(value);
    };
    const onMessage = (msg: Buffer, from: RemoteInfo) => {
      let answer: T | 'stop' | null = null;
      try {
        answer = decode(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), from);
      } catch {
        answer = null; // a decoder bug must not take the engine down; the answer is ignored
      }
      if (answer === 'stop') finish(null);
      else if (answer !== null) finish(answer);
    };
    // ECONNREFUSED (nothing listens on 5351) and any other socket error: no answer.
    const onError = () => finish(null);
    const send = () => {
      const wait = retryMs[step++];
      if (wait === undefined) return finish(null);
      const onSent = (err: Error | null) => {
        if (err) finish(null);
      };
      if (typeof request === 'function') request(onSent);
      else socket.send(request, onSent);
      timer = setTimeout(send, wait);
    };
    socket.on('message', onMessage);
    socket.on('error', onError);
    send();
  });
}
