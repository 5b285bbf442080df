import { createSocket } from 'node:dgram';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  encodeRootDescription,
  encodeSoapFault,
  encodeSoapResponse,
  encodeSsdpAnswer,
  IGD_SEARCH_TARGET,
  parseSoapRequest,
  SSDP_MULTICAST,
  UPNP_MAX_BYTES,
  WAN_CONNECTION_SERVICES,
  type WanConnectionService,
} from '@weft/protocol/upnp';
import type { GrantedMapping } from './test-gateway.js';

// The UPnP IGD half of the test gateway (test-gateway.ts): answers SSDP M-SEARCH with the
// address of its root description, serves it over HTTP, and answers the SOAP actions
// GetExternalIPAddress, AddPortMapping, GetSpecificPortMappingEntry and DeletePortMapping. With `garbage`, each probe gets
// one kind of malformed answer in turn (SSDP, description, then SOAP), which a client must
// ignore.

/** A UPnP request as the gateway saw it: the search, the description, or a SOAP action. */
export interface UpnpRequest {
  protocol: 'upnp';
  op: string;
}

export interface UpnpGatewayOptions {
  host: string;
  /** 0 for a free port (loopback tests); 1900 on a lab router, which also joins the group. */
  ssdpPort: number;
  externalAddress: string;
  garbage: boolean;
  /** Answer 718 to a client re-adding a port it holds. */
  conflictOnRenew: boolean;
  /**
   * The first time a client re-adds a port it holds, give that port to this other LAN client and
   * answer 718: the client's old port now forwards elsewhere.
   */
  handOverOnRenew?: string;
  lifetime?: number;
  onRequest: (req: UpnpRequest) => void;
  onMapping: (grant: GrantedMapping) => void;
}

export interface UpnpGateway {
  ssdpPort: number;
  close(): Promise<void>;
}

const SERVICE_TYPE = WAN_CONNECTION_SERVICES[1]; // WANIPConnection:1, what most routers offer
const UNRELATED = '198.51.100.9'; // a LAN device the client must not be pointed at

export async function startUpnpGateway(opts: UpnpGatewayOptions): Promise<UpnpGateway> {
  /** Mappings by external port. */
  const mappings = new Map<number, GrantedMapping>();
  /** Which kind of garbage the current probe gets (advanced at each search). */
  let probe = -1;
  let handOver = opts.handOverOnRenew;
  const http = createServer((req, res) => {
    void serve(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => http.listen(0, opts.host, resolve));
  const base = `http://${opts.host}:${(http.address() as AddressInfo).port}`;
  const service: WanConnectionService = { serviceType: SERVICE_TYPE, controlUrl: `${base}/ctl/IPConn` };
  const kinds = opts.garbage ? garbageKinds(base) : [];
  const current = () => kinds[probe % kinds.length];

  const ssdp = createSocket({ type: 'udp4', reuseAddr: true });
  ssdp.on('message', (msg, from) => {
    if (!msg.toString('latin1').startsWith('M-SEARCH * HTTP/1.1\r\n')) return;
    opts.onRequest({ protocol: 'upnp', op: 'search' });
    probe++;
    const good = encodeSsdpAnswer({ st: IGD_SEARCH_TARGET, location: `${base}/rootDesc.xml` });
    const answers = opts.garbage ? [...ssdpGarbage(base), good] : [good];
    for (const a of answers) ssdp.send(a, from.port, from.address);
  });
  await new Promise<void>((resolve) => ssdp.bind(opts.ssdpPort, opts.host, resolve));
  if (opts.ssdpPort !== 0) ssdp.addMembership(SSDP_MULTICAST, opts.host);

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const client = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    if (req.method === 'GET' && req.url === '/rootDesc.xml') {
      opts.onRequest({ protocol: 'upnp', op: 'description' });
      const garbage = current()?.description;
      if (garbage?.redirect) {
        res.writeHead(302, { location: garbage.redirect }).end();
        return;
      }
      send(res, 200, garbage ? garbage.body : encodeRootDescription(service));
      return;
    }
    const call = req.method === 'POST' && req.url === '/ctl/IPConn' ? parseSoapRequest(body) : null;
    if (!call) {
      send(res, 404, 'not found');
      return;
    }
    opts.onRequest({ protocol: 'upnp', op: call.action });
    const garbage = current()?.soap?.(call.action) ?? null;
    if (garbage !== null) {
      send(res, 200, garbage);
      return;
    }
    const [status, answer] = act(call.action, call.args, client);
    send(res, status, answer);
  }

  function act(action: string, args: Record<string, string>, client: string): [number, string] {
    const fault = (code: number, text: string): [number, string] => [500, encodeSoapFault(code, text)];
    const ok = (values: Record<string, string> = {}): [number, string] => [
      200,
      encodeSoapResponse(SERVICE_TYPE, action, values),
    ];
    if (action === 'GetExternalIPAddress') return ok({ NewExternalIPAddress: opts.externalAddress });
    const externalPort = Number(args.NewExternalPort);
    if (!Number.isInteger(externalPort) || args.NewProtocol !== 'UDP') return fault(402, 'Invalid Args');
    if (action === 'GetSpecificPortMappingEntry') {
      const m = mappings.get(externalPort);
      if (!m) return fault(714, 'NoSuchEntryInArray');
      return ok({
        NewInternalPort: String(m.internalPort),
        NewInternalClient: m.client,
        NewEnabled: '1',
        NewPortMappingDescription: `weft ${m.internalPort}`,
        NewLeaseDuration: String(m.lifetime),
      });
    }
    if (action === 'DeletePortMapping') {
      // As many IGDv1 routers: any LAN client may delete any mapping, its own or another's.
      const m = mappings.get(externalPort);
      if (!m) return fault(714, 'NoSuchEntryInArray');
      mappings.delete(externalPort);
      opts.onMapping({ ...m, lifetime: 0 });
      return ok();
    }
    if (action !== 'AddPortMapping') return fault(401, 'Invalid Action');
    const internalPort = Number(args.NewInternalPort);
    const lease = Number(args.NewLeaseDuration);
    // As miniupnpd's secure mode: a client maps only to itself.
    if (!Number.isInteger(internalPort) || !Number.isInteger(lease) || args.NewInternalClient !== client)
      return fault(606, 'Action not authorized');
    const port = externalPort; // AddPortMapping maps the port asked for, or fails
    const held = mappings.get(port);
    if (held && handOver !== undefined && held.client === client) {
      const other = { ...held, client: handOver };
      handOver = undefined;
      mappings.set(port, other);
      opts.onMapping(other);
      return fault(718, 'ConflictInMappingEntry');
    }
    if (held && (opts.conflictOnRenew || held.client !== client || held.internalPort !== internalPort))
      return fault(718, 'ConflictInMappingEntry');
    const grant = {
      internalPort,
      externalPort: port,
      lifetime: Math.min(lease, opts.lifetime ?? lease),
      client,
    };
    mappings.set(port, grant);
    opts.onMapping(grant);
    return ok();
  }

  return {
    ssdpPort: ssdp.address().port,
    close: async () => {
      await new Promise<void>((resolve) => ssdp.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > UPNP_MAX_BYTES) throw new Error('request too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/xml; charset="utf-8"' }).end(body);
}

/** SSDP answers to ignore: not 200, a LOCATION off the gateway, two LOCATIONs, oversized. */
function ssdpGarbage(base: string): Uint8Array[] {
  const text = (lines: string[]) => new TextEncoder().encode(`${lines.join('\r\n')}\r\n\r\n`);
  return [
    text(['HTTP/1.1 404 Not Found', `ST: ${IGD_SEARCH_TARGET}`, `LOCATION: ${base}/rootDesc.xml`]),
    text(['HTTP/1.1 200 OK', `ST: ${IGD_SEARCH_TARGET}`, `LOCATION: http://${UNRELATED}/rootDesc.xml`]),
    text([
      'HTTP/1.1 200 OK',
      `ST: ${IGD_SEARCH_TARGET}`,
      `LOCATION: ${base}/rootDesc.xml`,
      `LOCATION: http://${UNRELATED}/rootDesc.xml`,
    ]),
    text([
      'HTTP/1.1 200 OK',
      `ST: ${IGD_SEARCH_TARGET}`,
      `LOCATION: ${base}/rootDesc.xml`,
      `X: ${'a'.repeat(9000)}`,
    ]),
    text([
      'HTTP/1.1 200 OK',
      'ST: urn:schemas-upnp-org:device:MediaServer:1',
      `LOCATION: ${base}/rootDesc.xml`,
    ]),
    new Uint8Array([0xff, 0x00, 0x0d, 0x0a]),
  ];
}

const good = (controlUrl: string) => encodeRootDescription({ serviceType: SERVICE_TYPE, controlUrl });

interface Garbage {
  /** A root description to refuse (or a redirect off the gateway); none: a good one. */
  description?: { body: string; redirect?: string };
  /** SOAP answers to refuse, by action; null: a good answer. */
  soap?: (action: string) => string | null;
}

/** One kind of garbage per probe, in turn: descriptions first, then SOAP answers. */
function garbageKinds(base: string): Garbage[] {
  const answer = (action: string, values: Record<string, string>) =>
    encodeSoapResponse(SERVICE_TYPE, action, values);
  const external = { NewExternalIPAddress: '203.0.113.7' };
  return [
    { description: { body: good(`http://${UNRELATED}/ctl/IPConn`) } },
    { description: { body: good('/ctl/IPConn').replace('</root>', '') } },
    {
      description: {
        body: `<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "${'a'.repeat(1000)}">]>${good('/ctl/IPConn')
          .replace('<?xml version="1.0"?>', '')
          .replace('<friendlyName>Weft lab gateway', `<friendlyName>${'&a;'.repeat(5000)}`)}`,
      },
    },
    {
      description: {
        body: good('/ctl/IPConn').replace('<friendlyName>', `<friendlyName>${'x'.repeat(UPNP_MAX_BYTES)}`),
      },
    },
    { description: { body: good('/ctl/IPConn').replaceAll('WANIPConnection', 'Layer3Forwarding') } },
    { description: { body: good('ftp://user@/ctl') } },
    { description: { body: '', redirect: `http://${UNRELATED}/rootDesc.xml` } },
    { description: { body: `${base}/rootDesc.xml` } },
    { soap: (a) => answer(a, { NewExternalIPAddress: '0.0.0.0' }).replace('</s:Envelope>', '') },
    { soap: (a) => answer(`${a}X`, external) },
    { soap: (a) => answer(a, { NewExternalIPAddress: 'not an address' }) },
    { soap: (a) => answer(a, external).replace('203.0.113.7', '<a>203.0.113.7</a>') },
    { soap: () => encodeSoapFault(501, 'Action Failed') },
    {
      soap: (a) => (a === 'GetExternalIPAddress' ? null : answer(a, {}).replace('Response', 'Response><x/')),
    },
  ];
}
