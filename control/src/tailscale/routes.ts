import type { ServerHttp2Session } from 'node:http2';
import { keyToTailscale } from '@weft/protocol';
import type { FastifyInstance } from 'fastify';
import type { ControlContext } from '../server/context.js';
import { handleNoiseRequest } from './noise-api.js';
import { routeTs2021Upgrades } from './ts2021.js';

// Where the Tailscale client protocol joins control's HTTP server: GET /key hands out the ts2021
// Noise key, and /ts2021 upgrades are taken before Weft's WebSocket upgrades see them.

const ZERO_MACHINE_KEY = `mkey:${'0'.repeat(64)}`;

export function registerTailscaleProtocol(app: FastifyInstance, ctx: ControlContext): void {
  // `v` is the client's capability version; every supported client gets the same key. The legacy
  // (pre-Noise) key is zero: that protocol is not spoken here.
  app.get('/key', async () => ({
    legacyPublicKey: ZERO_MACHINE_KEY,
    publicKey: keyToTailscale(ctx.tailscaleKey.publicKey, 'mkey'),
  }));

  const sessions = new Set<ServerHttp2Session>();
  routeTs2021Upgrades(app.server, {
    noisePrivateKey: new Uint8Array(Buffer.from(ctx.tailscaleKey.privateKey, 'base64')),
    handle: (caller, req, res) => handleNoiseRequest(ctx, caller, req, res),
    log: ctx.log,
    sessions,
  });
  app.addHook('preClose', (done) => {
    for (const session of sessions) session.destroy();
    done();
  });
}
