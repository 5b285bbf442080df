import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { onCleanup } from './harness.js';

// Test support: the load balancer in front of control replicas, as small as one can be. Each TCP
// connection goes to the first backend that accepts it, so when a replica dies, new connections
// (a node reconnecting) reach the next one. Loopback only; closed at cleanup.

export async function startBalancer(backends: readonly string[]): Promise<{ url: string }> {
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  const server = createServer((client) => {
    track(client);
    client.pause();
    const tryBackend = (i: number) => {
      const backend = backends[i];
      if (backend === undefined) {
        client.destroy();
        return;
      }
      const { hostname, port } = new URL(backend);
      const upstream = connect(Number(port), hostname);
      track(upstream);
      upstream.once('error', () => tryBackend(i + 1));
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        client.pipe(upstream).pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        client.resume();
      });
    };
    tryBackend(0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}
