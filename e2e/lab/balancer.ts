import { type Host, waitFor } from './lab.js';

// A TCP load balancer on a lab host, as small as one can be: each connection goes to the first
// backend that accepts it, so when a control replica dies, a node's next connection reaches the
// next replica. A process of its own (in the host's namespace); the lab kills it at cleanup.

const SCRIPT = `
const net = require('node:net');
const [listen, ...backends] = process.argv.slice(1).map((a) => a.split(':'));
net.createServer((client) => {
  client.pause();
  const next = (i) => {
    if (i === backends.length) return client.destroy();
    const upstream = net.connect(Number(backends[i][1]), backends[i][0]);
    upstream.once('error', () => next(i + 1));
    upstream.once('connect', () => {
      upstream.removeAllListeners('error');
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
        a.pipe(b);
      }
      client.resume();
    });
  };
  next(0);
}).listen(Number(listen[1]), listen[0], () => console.log('balancing'));
`;

/** Balances `host.ip:port` over `backends` (HOST:PORT, first that accepts); resolves once it listens. */
export async function startBalancer(host: Host, port: number, backends: string[]): Promise<string> {
  const child = host.spawn(['node', '-e', SCRIPT, `${host.ip}:${port}`, ...backends]);
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  await waitFor('the balancer to listen', async () => {
    if (child.exitCode !== null) throw new Error(`balancer exited with ${child.exitCode}`);
    return out.includes('balancing');
  });
  return `http://${host.ip}:${port}`;
}
