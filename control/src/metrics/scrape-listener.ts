import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import type { Registry } from 'prom-client';
import type { Listen } from '../config/config.js';

// The Prometheus endpoint on its own listener (--metrics-listen), never on the public port: metric
// values reveal the tailnet's size and activity, so who may scrape is decided by where this binds.

export interface ScrapeListener {
  /** e.g. http://127.0.0.1:9090/metrics */
  url: string;
  close(): Promise<void>;
}

export async function listenForScrapes(registry: Registry, listen: Listen): Promise<ScrapeListener> {
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  await app.listen({ host: listen.host, port: listen.port });
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { url: `http://${host}:${address.port}/metrics`, close: () => app.close() };
}
