import { formatAddr } from '@weft/protocol';
import {
  encodeRootDescription,
  encodeSoapFault,
  encodeSoapResponse,
  encodeSsdpAnswer,
  IGD_SEARCH_TARGET,
  type PortMappingEntry,
  parsePortMappingEntry,
  parseRootDescription,
  parseSoapAnswer,
  parseSsdpAnswer,
  type SoapAnswer,
  UPNP_MAX_BYTES,
  WAN_CONNECTION_SERVICES,
  type WanConnectionService,
} from '@weft/protocol/upnp';
import fc from 'fast-check';
import { XMLValidator } from 'fast-xml-parser';
import { expect, it } from 'vitest';
import { addr } from './arbitraries.js';
import { accepted, crash, fuzzEntry, mutatedBytes, refused, type Verdict } from './run.js';

// UPnP IGD answers as anyone on the LAN can send them to the mapper (protocol/src/upnp.ts): SSDP
// answers to an M-SEARCH, root descriptions and SOAP answers, genuine, edited and raw. Oracle: a
// parser never throws; what it accepts is what the text says (one LOCATION, an http URL without
// credentials, a search target for an IGD or WAN connection; a WAN connection service named in
// a well-formed description without DOCTYPE, within 64 KiB; the answer to the action asked, or a
// fault's code; a mapping entry's IPv4 internal client and port 1-65535); genuine messages are
// read back as sent.

const textOf = (b: Uint8Array) => new TextDecoder('latin1').decode(b);
const utf8 = (s: string) => new TextEncoder().encode(s);
const LOCATION = 'http://198.51.100.1:5000/rootDesc.xml';
const TARGETS = /^urn:schemas-upnp-org:(device:InternetGatewayDevice|service:WAN(IP|PPP)Connection):\d+$/;

const host = addr.map((a) => (a.family === 4 ? formatAddr(a) : `[${formatAddr(a)}]`));
const path = fc.stringMatching(/^\/[A-Za-z0-9._~/-]{0,20}$/);
const url = fc.oneof(
  fc.tuple(host, fc.integer({ min: 1, max: 65535 }), path).map(([h, p, s]) => `http://${h}:${p}${s}`),
  fc.tuple(host, path).map(([h, s]) => `https://${h}${s}`),
  fc.tuple(host, path).map(([h, s]) => `http://user:pw@${h}${s}`),
  path,
  fc.string({ maxLength: 30 }),
);
const searchTarget = fc.oneof(
  fc.constantFrom(IGD_SEARCH_TARGET, ...WAN_CONNECTION_SERVICES, 'urn:schemas-upnp-org:device:MediaServer:1'),
  fc.string({ maxLength: 40 }),
);

/** Input and, for an unedited genuine message, what reading it must give. */
interface Case<T> {
  input: Uint8Array;
  sent?: T;
}
const withEdits = <T>(genuine: fc.Arbitrary<{ input: Uint8Array; sent: T }>): fc.Arbitrary<Case<T>> =>
  fc.oneof(
    genuine,
    mutatedBytes(genuine.map((g) => g.input)).map((input) => ({ input })),
  );
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function run<T>(parse: () => T | null, sent: T | undefined, verdict: (value: T) => Verdict): Verdict {
  let value: T | null;
  try {
    value = parse();
  } catch (err) {
    return crash(`parser threw: ${String(err)}`);
  }
  if (value === null) return refused;
  if (sent !== undefined && !same(value, sent))
    return accepted(`genuine message read as another: ${JSON.stringify(value)}`);
  return verdict(value);
}

// SSDP answers.
const ssdp = withEdits(
  fc.tuple(searchTarget, url).map(([st, location]) => ({
    input: encodeSsdpAnswer({ st, location }),
    sent: validSsdp(st, location),
  })),
).map((c) => (c.sent === null ? { input: c.input } : c));

function validSsdp(st: string, location: string) {
  if (!TARGETS.test(st) || /[\r\n]/.test(location)) return null;
  try {
    const u = new URL(location.trim());
    return u.protocol === 'http:' && !u.username && !u.password ? { location: u.href, st } : null;
  } catch {
    return null;
  }
}

function checkSsdp(c: Case<{ location: string; st: string } | null>): Verdict {
  return run(
    () => parseSsdpAnswer(c.input),
    c.sent ?? undefined,
    (a) => {
      const lines = textOf(c.input).split('\r\n');
      const header = (name: string) =>
        lines
          .filter((l) => l.slice(0, l.indexOf(':')).trim().toLowerCase() === name)
          .map((l) => l.slice(l.indexOf(':') + 1).trim());
      if (c.input.length > 8192) return accepted('oversized datagram accepted');
      if (!/^HTTP\/1\.[01] 200 OK$/i.test(lines[0] ?? '')) return accepted('not a 200 answer');
      const locations = header('location');
      if (locations.length !== 1) return accepted(`${locations.length} LOCATION headers`);
      const u = new URL(a.location);
      if (u.protocol !== 'http:' || u.username || u.password) return accepted(`LOCATION ${a.location}`);
      if (new URL(locations[0] as string).href !== a.location)
        return accepted('LOCATION is not the one sent');
      if (!TARGETS.test(a.st) || !header('st').includes(a.st)) return accepted(`search target ${a.st}`);
      return accepted();
    },
  );
}

// Root descriptions.
const serviceType = fc.oneof(
  fc.constantFrom(...WAN_CONNECTION_SERVICES, 'urn:schemas-upnp-org:service:Layer3Forwarding:1'),
  fc.string({ maxLength: 30 }),
);
const description = withEdits(
  fc.tuple(serviceType, url).map(([type, controlUrl]) => {
    const xml = encodeRootDescription({
      serviceType: type as WanConnectionService['serviceType'],
      controlUrl,
    });
    return { input: utf8(xml), sent: validService(type, controlUrl) };
  }),
).map((c) => (c.sent === null ? { input: c.input } : c));

function validService(type: string, controlUrl: string) {
  if (!(WAN_CONNECTION_SERVICES as readonly string[]).includes(type)) return null;
  if (controlUrl.trim() === '' || controlUrl !== controlUrl.trim()) return null;
  try {
    const u = new URL(controlUrl, LOCATION);
    return u.protocol === 'http:' && !u.username && !u.password
      ? { serviceType: type, controlUrl: u.href }
      : null;
  } catch {
    return null;
  }
}

function checkDescription(c: Case<{ serviceType: string; controlUrl: string } | null>): Verdict {
  const xml = new TextDecoder().decode(c.input);
  return run(
    () => parseRootDescription(xml, LOCATION),
    c.sent ?? undefined,
    (s) => {
      if (xml.length > UPNP_MAX_BYTES || /<!DOCTYPE/i.test(xml))
        return accepted('DOCTYPE or oversized accepted');
      if (XMLValidator.validate(xml) !== true) return accepted('malformed XML accepted');
      if (
        !(WAN_CONNECTION_SERVICES as readonly string[]).includes(s.serviceType) ||
        !xml.includes(s.serviceType)
      )
        return accepted(`service ${s.serviceType}`);
      const u = new URL(s.controlUrl);
      if (u.protocol !== 'http:' || u.username || u.password) return accepted(`control URL ${s.controlUrl}`);
      return accepted();
    },
  );
}

// SOAP answers to GetExternalIPAddress.
const ACTION = 'GetExternalIPAddress';
const argName = fc.stringMatching(/^New[A-Za-z]{1,12}$/);
const argValue = fc.stringMatching(/^[A-Za-z0-9.:<>&'" -]{0,20}$/).map((s) => s.trim());
const soap = withEdits(
  fc.oneof(
    fc
      .tuple(fc.constantFrom(ACTION, 'AddPortMapping'), fc.dictionary(argName, argValue, { maxKeys: 3 }))
      .map(([action, values]) => ({
        input: utf8(encodeSoapResponse(WAN_CONNECTION_SERVICES[1], action, values)),
        sent: action === ACTION ? ({ ok: true, values } as SoapAnswer | null) : null,
      })),
    fc.integer({ min: 0, max: 9999 }).map((code) => ({
      input: utf8(encodeSoapFault(code, 'error')),
      sent: { ok: false, errorCode: code } as SoapAnswer | null,
    })),
  ),
).map((c) => (c.sent === null ? { input: c.input } : c));

function checkSoap(c: Case<SoapAnswer | null>): Verdict {
  const xml = new TextDecoder().decode(c.input);
  return run(
    () => parseSoapAnswer(xml, ACTION),
    c.sent ?? undefined,
    (a) => {
      if (XMLValidator.validate(xml) !== true) return accepted('malformed XML accepted');
      if (!a.ok)
        return new RegExp(`<errorCode>\\s*0*${a.errorCode}\\s*</errorCode>`).test(xml)
          ? accepted()
          : accepted(`fault code ${a.errorCode} is not in the answer`);
      if (!xml.includes(`${ACTION}Response`)) return accepted('another action’s answer accepted');
      const missing = Object.keys(a.values).find((k) => !xml.includes(`<${k}>`) && !xml.includes(`<${k}/>`));
      return missing === undefined ? accepted() : accepted(`value ${missing} is not in the answer`);
    },
  );
}

it('UPnP SSDP answers: only 200 answers of an IGD with one http LOCATION are accepted, as sent', async () => {
  const stats = await fuzzEntry('upnp-ssdp', ssdp, async (c) => checkSsdp(c));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

it('UPnP root descriptions: only a WAN connection service in well-formed XML is accepted, as sent', async () => {
  const stats = await fuzzEntry('upnp-description', description, async (c) => checkDescription(c));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

it('UPnP SOAP answers: only the answer to the action asked, or a fault, is accepted, as sent', async () => {
  const stats = await fuzzEntry('upnp-soap', soap, async (c) => checkSoap(c));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});

// GetSpecificPortMappingEntry answers: whom a mapping forwards to.
const ENTRY = 'GetSpecificPortMappingEntry';
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const isIpv4 = (s: string) =>
  IPV4.exec(s)
    ?.slice(1)
    .every((o) => Number(o) <= 255) ?? false;
const isPort = (s: string) => /^\d{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535;
// Mostly genuine entries, so the edits start from answers the parser accepts.
const entryClient = fc.oneof(
  { arbitrary: addr.filter((a) => a.family === 4).map(formatAddr), weight: 4 },
  host,
  fc.string({ maxLength: 20 }),
);
const entryPort = fc.oneof(
  { arbitrary: fc.integer({ min: 1, max: 65535 }).map(String), weight: 4 },
  fc.integer({ min: 0, max: 70000 }).map(String),
  fc.constantFrom('-1', '0x10', '4164 1', ''),
  fc.string({ maxLength: 8 }),
);
const entry = withEdits(
  fc
    .tuple(entryClient, entryPort, fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, fc.constant(false)))
    .map(([client, port, withClient]) => {
      const values: Record<string, string> = { NewInternalPort: port, NewEnabled: '1' };
      if (withClient) values.NewInternalClient = client;
      const valid = withClient && isIpv4(client) && isPort(port);
      return {
        input: utf8(encodeSoapResponse(WAN_CONNECTION_SERVICES[1], ENTRY, values)),
        sent: valid ? ({ internalClient: client, internalPort: Number(port) } as PortMappingEntry) : null,
      };
    }),
).map((c) => (c.sent === null ? { input: c.input } : c));

function checkEntry(c: Case<PortMappingEntry | null>): Verdict {
  const xml = new TextDecoder().decode(c.input);
  return run(
    () => {
      const answer = parseSoapAnswer(xml, ENTRY);
      return answer?.ok ? parsePortMappingEntry(answer.values) : null;
    },
    c.sent ?? undefined,
    (e) => {
      if (XMLValidator.validate(xml) !== true) return accepted('malformed XML accepted');
      if (!xml.includes(`${ENTRY}Response`)) return accepted('another action’s answer accepted');
      if (
        !isIpv4(e.internalClient) ||
        !new RegExp(`<NewInternalClient>\\s*${e.internalClient.replaceAll('.', '\\.')}\\s*<`).test(xml)
      )
        return accepted(`internal client ${e.internalClient}`);
      if (
        !isPort(String(e.internalPort)) ||
        !new RegExp(`<NewInternalPort>\\s*0*${e.internalPort}\\s*<`).test(xml)
      )
        return accepted(`internal port ${e.internalPort}`);
      return accepted();
    },
  );
}

it('UPnP mapping entries: only an IPv4 internal client and a port 1-65535 are accepted, as sent', async () => {
  const stats = await fuzzEntry('upnp-entry', entry, async (c) => checkEntry(c));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
