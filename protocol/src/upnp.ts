import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { z } from 'zod';
import { parseAddr } from './ip.js';

// UPnP IGD port mapping wire formats: SSDP discovery (HTTP-over-UDP on port 1900), the gateway's
// root description (XML over HTTP) and SOAP actions on its WANIPConnection/WANPPPConnection
// service. Everything that arrives is read strictly and bounded: a parser returns null (ignored)
// for anything else, never throws, since anyone on the LAN can answer an M-SEARCH.

export const SSDP_PORT = 1900;
export const SSDP_MULTICAST = '239.255.255.250';
/** The search target: IGD:2 devices answer the :1 search too (UPnP versioning rules). */
export const IGD_SEARCH_TARGET = 'urn:schemas-upnp-org:device:InternetGatewayDevice:1';
/** Largest description or SOAP answer read; a real IGD's are a few KiB. */
export const UPNP_MAX_BYTES = 64 * 1024;
/** An SSDP answer fits one datagram; anything larger is not one. */
const SSDP_MAX_BYTES = 8 * 1024;
/** Device nesting followed in a description (IGD → WANDevice → WANConnectionDevice). */
const MAX_DEVICE_DEPTH = 8;

/** The connection services that map ports, best first. */
export const WAN_CONNECTION_SERVICES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
] as const;

const SEARCH_TARGETS =
  /^urn:schemas-upnp-org:(device:InternetGatewayDevice|service:WAN(IP|PPP)Connection):\d+$/;

export function encodeMSearch(host: string): Uint8Array {
  return new TextEncoder().encode(
    [
      'M-SEARCH * HTTP/1.1',
      `HOST: ${host}:${SSDP_PORT}`,
      'MAN: "ssdp:discover"',
      'MX: 1',
      `ST: ${IGD_SEARCH_TARGET}`,
      '',
      '',
    ].join('\r\n'),
  );
}

export interface SsdpAnswer {
  /** The root description's URL. */
  location: string;
  st: string;
}

/**
 * An SSDP answer to our M-SEARCH: `HTTP/1.1 200 OK`, headers one per line, an IGD or WAN
 * connection search target, and an http LOCATION. Null for anything else.
 */
export function parseSsdpAnswer(msg: Uint8Array): SsdpAnswer | null {
  if (msg.length > SSDP_MAX_BYTES) return null;
  const lines = new TextDecoder('latin1').decode(msg).split('\r\n');
  if (!/^HTTP\/1\.[01] 200 OK$/i.test(lines[0] ?? '')) return null;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === '') break;
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (headers.has(name)) return null; // two LOCATIONs: which one would be meant?
    headers.set(name, line.slice(colon + 1).trim());
  }
  const st = headers.get('st');
  const location = headers.get('location');
  if (!st || !SEARCH_TARGETS.test(st) || !location) return null;
  const url = parseHttpUrl(location);
  return url ? { location: url.href, st } : null;
}

export function encodeSsdpAnswer(a: SsdpAnswer): Uint8Array {
  return new TextEncoder().encode(
    [
      'HTTP/1.1 200 OK',
      'CACHE-CONTROL: max-age=120',
      `ST: ${a.st}`,
      'EXT:',
      `LOCATION: ${a.location}`,
      '',
      '',
    ].join('\r\n'),
  );
}

/** The service that maps ports, as the root description names it. */
export interface WanConnectionService {
  serviceType: (typeof WAN_CONNECTION_SERVICES)[number];
  /** Absolute URL of the SOAP endpoint. */
  controlUrl: string;
}

const ServiceEntry = z.object({ serviceType: z.string(), controlURL: z.string().min(1) });
const DeviceEntry = z.object({
  serviceList: z.object({ service: z.array(z.unknown()).optional() }).optional(),
  deviceList: z.object({ device: z.array(z.unknown()).optional() }).optional(),
});
const RootDescription = z.object({
  root: z.object({ URLBase: z.string().optional(), device: z.array(z.unknown()).length(1) }),
});

/**
 * The best WAN connection service in a root description fetched from `location`, with its
 * control URL made absolute (against URLBase, else `location`); null when there is none or the
 * XML is malformed.
 */
export function parseRootDescription(xml: string, location: string): WanConnectionService | null {
  const doc = RootDescription.safeParse(parseXml(xml));
  if (!doc.success) return null;
  const found: Array<z.infer<typeof ServiceEntry>> = [];
  const walk = (device: unknown, depth: number): void => {
    const d = DeviceEntry.safeParse(device);
    if (!d.success || depth > MAX_DEVICE_DEPTH) return;
    for (const s of d.data.serviceList?.service ?? []) {
      const service = ServiceEntry.safeParse(s);
      if (service.success) found.push(service.data);
    }
    for (const child of d.data.deviceList?.device ?? []) walk(child, depth + 1);
  };
  walk(doc.data.root.device[0], 0);
  const base = doc.data.root.URLBase ?? location;
  for (const type of WAN_CONNECTION_SERVICES) {
    const service = found.find((s) => s.serviceType === type);
    if (!service) continue;
    const url = parseHttpUrl(service.controlURL, base);
    return url ? { serviceType: type, controlUrl: url.href } : null;
  }
  return null;
}

/** A root description with one WAN connection service (for the lab's test gateway). */
export function encodeRootDescription(service: WanConnectionService): string {
  const connection = {
    serviceList: { service: [{ serviceType: service.serviceType, controlURL: service.controlUrl }] },
  };
  return xmlDocument({
    root: {
      '@_xmlns': 'urn:schemas-upnp-org:device-1-0',
      specVersion: { major: 1, minor: 0 },
      device: {
        deviceType: IGD_SEARCH_TARGET,
        friendlyName: 'Weft lab gateway',
        deviceList: {
          device: {
            deviceType: 'urn:schemas-upnp-org:device:WANDevice:1',
            deviceList: {
              device: { deviceType: 'urn:schemas-upnp-org:device:WANConnectionDevice:1', ...connection },
            },
          },
        },
      },
    },
  });
}

const SOAP_ENVELOPE = 'http://schemas.xmlsoap.org/soap/envelope/';
const SOAP_ENCODING = 'http://schemas.xmlsoap.org/soap/encoding/';

/** Arguments and results of the IGD actions Weft uses; all travel as text. */
export type SoapArgs = Record<string, string>;

export function encodeSoapRequest(serviceType: string, action: string, args: SoapArgs): string {
  return soapEnvelope({ [`u:${action}`]: { '@_xmlns:u': serviceType, ...args } });
}

export function encodeSoapResponse(serviceType: string, action: string, values: SoapArgs): string {
  return soapEnvelope({ [`u:${action}Response`]: { '@_xmlns:u': serviceType, ...values } });
}

export function encodeSoapFault(errorCode: number, description: string): string {
  return soapEnvelope({
    's:Fault': {
      faultcode: 's:Client',
      faultstring: 'UPnPError',
      detail: {
        UPnPError: {
          '@_xmlns': 'urn:schemas-upnp-org:control-1-0',
          errorCode,
          errorDescription: description,
        },
      },
    },
  });
}

export type SoapAnswer = { ok: true; values: SoapArgs } | { ok: false; errorCode: number };

const SoapBody = z.object({ Envelope: z.object({ Body: z.record(z.string(), z.unknown()) }) });
/** Argument elements by name; text beside them (the parser's `#text`) is not an argument. */
const SoapValues = z.record(z.string().regex(/^[A-Za-z_][\w.-]*$/), z.string());
const SoapFault = z.object({
  detail: z.object({ UPnPError: z.object({ errorCode: z.string().regex(/^\d{1,4}$/) }) }),
});

/**
 * The answer to `action`: its `<actionResponse>` values (text only), or a UPnP error code from a
 * SOAP fault; null for anything else (another action's answer, nested values, malformed XML).
 */
export function parseSoapAnswer(xml: string, action: string): SoapAnswer | null {
  const doc = SoapBody.safeParse(parseXml(xml));
  if (!doc.success) return null;
  const body = doc.data.Envelope.Body;
  const keys = Object.keys(body);
  if (keys.length !== 1) return null;
  if (keys[0] === 'Fault') {
    const fault = SoapFault.safeParse(body.Fault);
    return fault.success ? { ok: false, errorCode: Number(fault.data.detail.UPnPError.errorCode) } : null;
  }
  if (keys[0] !== `${action}Response`) return null;
  const content = body[keys[0]] === '' ? {} : body[keys[0]];
  const values = SoapValues.safeParse(content);
  return values.success ? { ok: true, values: values.data } : null;
}

/** Who a port mapping forwards to, as GetSpecificPortMappingEntry says. */
export interface PortMappingEntry {
  internalClient: string;
  internalPort: number;
}

/** The two values that say whose a mapping is; other values (lease, description) are not read. */
const PortMappingEntryValues = z.object({
  NewInternalClient: z.string().refine((a) => parseAddr(a)?.family === 4, 'an IPv4 address'),
  NewInternalPort: z
    .string()
    .regex(/^\d{1,5}$/)
    .transform(Number)
    .pipe(z.number().int().min(1).max(65535)),
});

/**
 * The internal client and port of a GetSpecificPortMappingEntry answer's values (from
 * parseSoapAnswer), or null when either is missing or not an IPv4 address and a port.
 */
export function parsePortMappingEntry(values: SoapArgs): PortMappingEntry | null {
  const entry = PortMappingEntryValues.safeParse(values);
  return entry.success
    ? { internalClient: entry.data.NewInternalClient, internalPort: entry.data.NewInternalPort }
    : null;
}

/** A SOAP request as the test gateway reads it: the action and its arguments. */
export function parseSoapRequest(xml: string): { action: string; args: SoapArgs } | null {
  const doc = SoapBody.safeParse(parseXml(xml));
  if (!doc.success) return null;
  const [action, ...rest] = Object.keys(doc.data.Envelope.Body);
  if (!action || rest.length > 0) return null;
  const content = doc.data.Envelope.Body[action] === '' ? {} : doc.data.Envelope.Body[action];
  const args = SoapValues.safeParse(content);
  return args.success ? { action, args: args.data } : null;
}

/**
 * An absolute http URL (relative to `base` when given), or null. Credentials and other schemes
 * are refused: the client fetches only plain http on the gateway.
 */
export function parseHttpUrl(text: string, base?: string): URL | null {
  try {
    const url = base === undefined ? new URL(text) : new URL(text, base);
    if (url.protocol !== 'http:' || url.username !== '' || url.password !== '') return null;
    return url;
  } catch {
    return null;
  }
}

const parser = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: true,
  isArray: (name) => name === 'device' || name === 'service',
});

/**
 * Parsed XML, or null when it is not well-formed or larger than UPNP_MAX_BYTES. A DOCTYPE is
 * refused before parsing: no IGD sends one, and its entities could expand a small answer into a
 * huge string.
 */
function parseXml(xml: string): unknown {
  if (xml.length > UPNP_MAX_BYTES || /<!DOCTYPE/i.test(xml)) return null;
  try {
    return parser.parse(xml, true);
  } catch {
    return null;
  }
}

const builder = new XMLBuilder({ ignoreAttributes: false, suppressEmptyNode: false });

function xmlDocument(content: object): string {
  return `<?xml version="1.0"?>\n${builder.build(content)}`;
}

function soapEnvelope(body: object): string {
  return xmlDocument({
    's:Envelope': { '@_xmlns:s': SOAP_ENVELOPE, '@_s:encodingStyle': SOAP_ENCODING, 's:Body': body },
  });
}
