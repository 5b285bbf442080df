import type WebSocket from 'ws';

/**
 * Pings `socket` every `intervalMs` and ends it (after `onDead`) when the ping before went
 * unanswered. The verdict waits for the event loop's next read of the sockets (setImmediate runs
 * after the I/O poll): after a busy stretch, overdue timers run before any socket is read, so pongs
 * already waiting in the kernel would count as missing. A restarted control at 6,000 nodes, busy
 * with a herd, dropped 1,748 live streams in 0.3 s that way, and every drop made it busier.
 * Returns the function that stops it (call it when the socket closes).
 */
export function keepAlive(socket: WebSocket, intervalMs: number, onDead: () => void): () => void {
  let alive = true;
  socket.on('pong', () => {
    alive = true;
  });
  let verdict: NodeJS.Immediate | null = null;
  const timer = setInterval(() => {
    verdict ??= setImmediate(() => {
      verdict = null;
      if (!alive) {
        onDead();
        socket.terminate();
        return;
      }
      alive = false;
      socket.ping();
    });
  }, intervalMs);
  return () => {
    clearInterval(timer);
    if (verdict !== null) clearImmediate(verdict);
  };
}
