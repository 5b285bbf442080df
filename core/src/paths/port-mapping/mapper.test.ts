import { afterEach, expect, it } from 'vitest';
import { waitUntil } from '../../testing/wait.js';
import { PortMapper } from './mapper.js';
import {
  type GatewayMode,
  type GrantedMapping,
  type PortMappingGatewayOptions,
  startPortMappingGateway,
} from './test-gateway.js';

// The mapper against a port-mapping daemon on loopback (the gateway is 127.0.0.1). Short retry
// steps keep the "no answer" cases quick; nothing asserts on time.

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const LISTEN_PORT = 41641;
const RETRY = [50, 100];

async function setup(
  mode: GatewayMode,
  lifetime?: number,
  requestedLifetime?: number,
  gateway: Partial<PortMappingGatewayOptions> = {},
) {
  const granted: GrantedMapping[] = [];
  const gw = await startPortMappingGateway({
    host: '127.0.0.1',
    port: 0,
    externalAddress: '203.0.113.7',
    mode,
    lifetime,
    externalPortFor: () => 50000,
    onMapping: (m) => granted.push(m),
    ...gateway,
  });
  cleanups.push(() => gw.close());
  const changes: Array<string | null> = [];
  const mapper = new PortMapper({
    listenPort: LISTEN_PORT,
    gateway: async () => '127.0.0.1',
    gatewayPort: gw.port,
    ssdpPort: gw.ssdpPort,
    retryMs: RETRY,
    ...(requestedLifetime ? { lifetime: requestedLifetime } : {}),
    onChange: (m) => changes.push(m ? `${m.protocol} ${m.endpoint}` : null),
  });
  cleanups.push(() => mapper.stop());
  return { gw, granted, mapper, changes };
}

/** External ports the gateway still forwards after the grants and deletes it reported. */
function held(granted: readonly GrantedMapping[]): number[] {
  const last = new Map(granted.map((g) => [g.externalPort, g.lifetime]));
  return [...last].filter(([, lifetime]) => lifetime > 0).map(([port]) => port);
}

it('maps with PCP first, then deletes the mapping on stop', async () => {
  const { gw, granted, mapper, changes } = await setup('pcp');
  expect(await mapper.start()).toEqual({ protocol: 'pcp', endpoint: '203.0.113.7:50000', lifetime: 7200 });
  expect(mapper.answered).toBe('pcp');
  expect(gw.requests.map((r) => `${r.protocol} ${r.op}`)).toEqual(['pcp map']);
  await mapper.stop();
  expect(mapper.mapping).toBeNull();
  expect(granted.map((g) => g.lifetime)).toEqual([7200, 0]);
  expect(changes).toEqual(['pcp 203.0.113.7:50000', null]);
});

it('falls back to NAT-PMP at once when the gateway refuses PCP', async () => {
  const { gw, granted, mapper } = await setup('nat-pmp');
  expect(await mapper.start()).toEqual({
    protocol: 'nat-pmp',
    endpoint: '203.0.113.7:50000',
    lifetime: 7200,
  });
  expect(mapper.answered).toBe('nat-pmp');
  // One PCP try (answered "unsupported version"), then NAT-PMP's two requests.
  expect(gw.requests.map((r) => `${r.protocol} ${r.op}`)).toEqual([
    'pcp map',
    'nat-pmp address',
    'nat-pmp map',
  ]);
  await mapper.stop();
  expect(granted.map((g) => [g.internalPort, g.lifetime])).toEqual([
    [LISTEN_PORT, 7200],
    [LISTEN_PORT, 0],
  ]);
});

it('renews at half the granted lifetime, keeping the same port', async () => {
  const { granted, mapper, changes } = await setup('pcp', 2);
  expect((await mapper.start())?.lifetime).toBe(2);
  await waitUntil('a renewal', () => granted.length >= 2);
  expect(granted[1]).toEqual({
    internalPort: LISTEN_PORT,
    externalPort: 50000,
    lifetime: 2,
    client: '127.0.0.1',
  });
  expect(changes).toEqual(['pcp 203.0.113.7:50000']);
});

it('maps with UPnP IGD when nothing answers PCP or NAT-PMP, and deletes the mapping on stop', async () => {
  const { gw, granted, mapper, changes } = await setup('upnp');
  // AddPortMapping asks for the WireGuard port itself: the gateway maps that one or none.
  expect(await mapper.start()).toEqual({ protocol: 'upnp', endpoint: '203.0.113.7:41641', lifetime: 7200 });
  expect(mapper.answered).toBe('upnp');
  expect(gw.requests.map((r) => `${r.protocol} ${r.op}`)).toEqual([
    'upnp search',
    'upnp description',
    'upnp GetExternalIPAddress',
    'upnp AddPortMapping',
  ]);
  expect(granted[0]).toEqual({
    internalPort: LISTEN_PORT,
    externalPort: LISTEN_PORT,
    lifetime: 7200,
    client: '127.0.0.1',
  });
  await mapper.stop();
  expect(gw.requests.at(-1)).toEqual({ protocol: 'upnp', op: 'DeletePortMapping' });
  expect(granted.map((g) => [g.externalPort, g.lifetime])).toEqual([
    [LISTEN_PORT, 7200],
    [LISTEN_PORT, 0],
  ]);
  expect(changes).toEqual(['upnp 203.0.113.7:41641', null]);
});

it('renews a UPnP mapping at half its lease, asking for the same port', async () => {
  // An IGD does not say what lease it granted: the mapper renews at half what it asked for.
  const { granted, mapper } = await setup('upnp', undefined, 2);
  expect((await mapper.start())?.lifetime).toBe(2);
  await waitUntil('a renewal', () => granted.length >= 2);
  expect(granted[1]).toEqual({
    internalPort: LISTEN_PORT,
    externalPort: LISTEN_PORT,
    lifetime: 2,
    client: '127.0.0.1',
  });
});

it('deletes the UPnP mapping once the gateway maps by PCP instead', async () => {
  const { gw: upnp, granted, mapper } = await setup('upnp');
  expect((await mapper.start())?.protocol).toBe('upnp');
  // PCP now answers on the port that was unreachable (a gateway turning it on).
  const pcp = await startPortMappingGateway({
    host: '127.0.0.1',
    port: upnp.port,
    externalAddress: '203.0.113.7',
    mode: 'pcp',
  });
  cleanups.push(() => pcp.close());
  expect((await mapper.start())?.protocol).toBe('pcp');
  expect(upnp.requests.at(-1)).toEqual({ protocol: 'upnp', op: 'DeletePortMapping' });
  expect(granted.map((g) => g.lifetime)).toEqual([7200, 0]);
});

it('ignores malformed answers of every kind and reports none', async () => {
  const { gw, mapper } = await setup('garbage');
  expect(await mapper.start()).toBeNull();
  expect(mapper.answered).toBe('none');
  // Every try of each request was sent: no garbage answer ended a wait early. The one SSDP answer
  // that points at the gateway leads to a description to refuse.
  expect(gw.requests.map((r) => `${r.protocol} ${r.op}`)).toEqual([
    'pcp map',
    'pcp map',
    'nat-pmp address',
    'nat-pmp address',
    'upnp search',
    'upnp description',
  ]);
});

it('refuses every kind of malformed UPnP description and SOAP answer, one probe each', async () => {
  const { gw, mapper } = await setup('garbage');
  // 8 kinds of description, then 6 of SOAP answers (test-upnp-gateway.ts), in turn.
  for (let probe = 0; probe < 14; probe++) {
    expect(await mapper.start()).toBeNull();
    expect(mapper.answered).toBe('none');
  }
  const upnp = gw.requests.filter((r) => r.protocol === 'upnp').map((r) => r.op);
  expect(upnp.filter((op) => op === 'search')).toHaveLength(14);
  expect(upnp.filter((op) => op === 'GetExternalIPAddress')).toHaveLength(6);
  expect(upnp.filter((op) => op === 'AddPortMapping')).toHaveLength(1);
});

it('reports none when nothing answers on the gateway, or there is no gateway', async () => {
  const { gw } = await setup('pcp');
  await gw.close();
  cleanups.length = 0;
  const closed = new PortMapper({
    listenPort: LISTEN_PORT,
    gateway: async () => '127.0.0.1',
    gatewayPort: gw.port,
    ssdpPort: gw.ssdpPort,
    retryMs: RETRY,
  });
  expect(await closed.start()).toBeNull();
  expect(closed.answered).toBe('none');
  await closed.stop();
  const none = new PortMapper({ listenPort: LISTEN_PORT, gateway: async () => null, retryMs: RETRY });
  expect(await none.start()).toBeNull();
  expect(none.answered).toBe('none');
  await none.stop();
});

it('deletes a UPnP mapping the gateway grants while the mapper stops', async () => {
  let stopping: Promise<void> | undefined;
  const { gw, granted, mapper, changes } = await setup('upnp', undefined, undefined, {
    onRequest: (req) => {
      if (req.protocol === 'upnp' && req.op === 'AddPortMapping') stopping ??= mapper.stop();
    },
  });
  expect(await mapper.start()).toBeNull();
  await stopping;
  expect(gw.requests.at(-1)).toEqual({ protocol: 'upnp', op: 'DeletePortMapping' });
  expect(granted.map((g) => g.lifetime)).toEqual([7200, 0]);
  expect(held(granted)).toEqual([]);
  expect(changes).toEqual([]);
});

it('deletes a PCP mapping the gateway grants while the mapper stops', async () => {
  let stopping: Promise<void> | undefined;
  const { granted, mapper } = await setup('pcp', undefined, undefined, {
    onRequest: (req) => {
      if (req.protocol === 'pcp') stopping ??= mapper.stop();
    },
  });
  expect(await mapper.start()).toBeNull();
  await stopping;
  expect(granted.map((g) => g.lifetime)).toEqual([7200, 0]);
});

it('does not probe UPnP once stopped before the probe gets there', async () => {
  const { gw, granted, mapper } = await setup('upnp');
  const started = mapper.start();
  await mapper.stop();
  expect(await started).toBeNull();
  expect(gw.requests.filter((r) => r.protocol === 'upnp')).toEqual([]);
  expect(held(granted)).toEqual([]);
});

it('deletes a UPnP mapping it refuses for an unusable external address', async () => {
  // Routers answer 0.0.0.0 while their WAN is down; AddPortMapping is granted all the same.
  const { gw, granted, mapper } = await setup('upnp', undefined, undefined, { externalAddress: '0.0.0.0' });
  expect(await mapper.start()).toBeNull();
  expect(mapper.answered).toBe('none');
  expect(gw.requests.at(-1)).toEqual({ protocol: 'upnp', op: 'DeletePortMapping' });
  expect(held(granted)).toEqual([]);
});

/** Waits until a renewal moved the mapping off the WireGuard port; returns the new port. */
async function movedPort(mapper: PortMapper): Promise<number> {
  await waitUntil('a renewal on another port', () => {
    const endpoint = mapper.mapping?.endpoint;
    return endpoint !== undefined && !endpoint.endsWith(`:${LISTEN_PORT}`);
  });
  return Number(mapper.mapping?.endpoint.split(':')[1]);
}

it('deletes the old UPnP port when a renewal gets a conflict, maps another, and the old is still ours', async () => {
  const { gw, granted, mapper } = await setup('upnp', undefined, 2, { conflictOnRenew: true });
  expect((await mapper.start())?.endpoint).toBe('203.0.113.7:41641');
  const moved = await movedPort(mapper);
  expect(held(granted)).toEqual([moved]);
  // Asked whose the old port is before deleting it.
  const ops = gw.requests.map((r) => r.op);
  expect(ops.indexOf('GetSpecificPortMappingEntry')).toBeGreaterThan(-1);
  expect(ops.indexOf('GetSpecificPortMappingEntry')).toBeLessThan(ops.indexOf('DeletePortMapping'));
});

it('leaves the old UPnP port alone when the conflict means another client holds it now', async () => {
  const other = '198.51.100.20';
  const { granted, mapper } = await setup('upnp', undefined, 2, { handOverOnRenew: other });
  expect((await mapper.start())?.endpoint).toBe('203.0.113.7:41641');
  const moved = await movedPort(mapper);
  // The gateway lets anyone delete: had the mapper deleted the old port, the other client's would be gone.
  expect(held(granted).sort()).toEqual([LISTEN_PORT, moved].sort());
  expect(granted.filter((g) => g.externalPort === LISTEN_PORT).at(-1)).toMatchObject({
    client: other,
    lifetime: 2,
  });
});
