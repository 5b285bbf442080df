import type { Socket } from 'node:net';
import type WebSocket from 'ws';

/**
 * Pings `socket` every `intervalMs` and ends it (after `onDead`) when the ping before went
 * unanswered and the peer took none of our bytes meanwhile. The verdict waits for the event loop's
 * next read of the sockets (setImmediate runs after the I/O poll): after a busy stretch, overdue
 * timers run before any socket is read, so pongs already waiting in the kernel would count as
 * missing. A restarted control at 6,000 nodes, busy with a herd, dropped 1,748 live streams in 0.3 s
 * that way, and every drop made it busier.
 *
 * A ping queued behind a whole map (3 MB at 10,000 nodes) is answered only once the peer has read
 * the map: at 10,000 nodes 5,833 streams still being read were dropped for "no pong". So a ping
 * sent while our bytes were waiting for the kernel (`tcp`, the WebSocket's TCP socket: its send
 * buffer full) counts as answered if the kernel has taken more since: it frees room only as the peer
 * acknowledges. Bytes the kernel takes into room it had prove nothing (a vanished peer's kernel
 * takes pings too): a ping that went straight in needs its pong (or an earlier one's, still coming).
 * Returns the function that stops it (call it when the socket closes).
 */
export function keepAlive(
  socket: WebSocket,
  tcp: Socket,
  intervalMs: number,
  onDead: () => void,
): () => void {
  let alive = true;
  socket.on('pong', () => {
    alive = true;
  });
  // Where the kernel is in our bytes: the writes it has taken whole, and what is left of the one it
  // is taking. Node writes one at a time, and the one after a backlog holds every frame queued
  // behind it (megabytes after a whole map), its length counted only once it is all taken; libuv's
  // write queue size, which Node's own socket time-out reads for the same reason, moves with each part.
  const handle = (tcp as unknown as { _handle: { writeQueueSize: number } | null })._handle;
  const position = () => `${tcp.bytesWritten - tcp.writableLength}/${handle?.writeQueueSize}`;
  // Where it was when the last ping went, if bytes were then waiting behind a full send buffer.
  let atPing: string | null = null;
  let verdict: NodeJS.Immediate | null = null;
  const timer = setInterval(() => {
    verdict ??= setImmediate(() => {
      verdict = null;
      const took = atPing !== null && position() !== atPing;
      if (!alive && !took) {
        onDead();
        socket.terminate();
        return;
      }
      alive = false;
      socket.ping();
      atPing = tcp.writableLength > 0 ? position() : null;
    });
  }, intervalMs);
  return () => {
    clearInterval(timer);
    if (verdict !== null) clearImmediate(verdict);
  };
}
