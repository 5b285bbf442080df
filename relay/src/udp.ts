import { createSocket, type Socket } from 'node:dgram';
import { parseAddr } from '@weft/protocol';

/** A UDP socket bound to `host` (an IP address literal) and `port` (0: a free one); `what` names it in errors. */
export function bindUdp(what: string, host: string, port: number): Promise<Socket> {
  const family = parseAddr(host)?.family;
  if (family === undefined) throw new Error(`${what}: not an IP address: ${host}`);
  const socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: false });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}
