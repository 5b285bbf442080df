import { describe, expect, it } from 'vitest';
import {
  encodeMSearch,
  encodeRootDescription,
  encodeSoapFault,
  encodeSoapRequest,
  encodeSoapResponse,
  encodeSsdpAnswer,
  IGD_SEARCH_TARGET,
  parsePortMappingEntry,
  parseRootDescription,
  parseSoapAnswer,
  parseSoapRequest,
  parseSsdpAnswer,
  UPNP_MAX_BYTES,
} from './upnp.js';

const text = (s: string) => new TextEncoder().encode(s);
const LOCATION = 'http://198.51.100.1:5000/rootDesc.xml';
const WANIP1 = 'urn:schemas-upnp-org:service:WANIPConnection:1';
const WANIP2 = 'urn:schemas-upnp-org:service:WANIPConnection:2';

describe('SSDP', () => {
  it('searches for an IGD', () => {
    expect(new TextDecoder().decode(encodeMSearch('239.255.255.250'))).toBe(
      `M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ${IGD_SEARCH_TARGET}\r\n\r\n`,
    );
  });

  it('reads an IGD answer, headers in any case', () => {
    expect(parseSsdpAnswer(encodeSsdpAnswer({ st: IGD_SEARCH_TARGET, location: LOCATION }))).toEqual({
      st: IGD_SEARCH_TARGET,
      location: LOCATION,
    });
    const lower = `HTTP/1.1 200 OK\r\nst: ${WANIP2}\r\nlocation:  ${LOCATION} \r\n\r\n`;
    expect(parseSsdpAnswer(text(lower))).toEqual({ st: WANIP2, location: LOCATION });
  });

  it.each([
    ['not 200', `HTTP/1.1 404 Not Found\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION: ${LOCATION}\r\n\r\n`],
    [
      'another device',
      `HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\nLOCATION: ${LOCATION}\r\n\r\n`,
    ],
    ['no LOCATION', `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\n\r\n`],
    [
      'two LOCATIONs',
      `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION: ${LOCATION}\r\nLocation: http://198.51.100.9/\r\n\r\n`,
    ],
    ['https', `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION: https://198.51.100.1/d.xml\r\n\r\n`],
    [
      'credentials',
      `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION: http://u:p@198.51.100.1/d.xml\r\n\r\n`,
    ],
    ['a header without colon', `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION ${LOCATION}\r\n\r\n`],
    [
      'oversized',
      `HTTP/1.1 200 OK\r\nST: ${IGD_SEARCH_TARGET}\r\nLOCATION: ${LOCATION}\r\nX: ${'a'.repeat(9000)}\r\n\r\n`,
    ],
  ])('ignores an answer with %s', (_, answer) => {
    expect(parseSsdpAnswer(text(answer))).toBeNull();
  });
});

describe('root description', () => {
  it('finds the WAN connection service in nested devices, relative to LOCATION', () => {
    const xml = encodeRootDescription({ serviceType: WANIP1, controlUrl: '/ctl/IPConn' });
    expect(parseRootDescription(xml, LOCATION)).toEqual({
      serviceType: WANIP1,
      controlUrl: 'http://198.51.100.1:5000/ctl/IPConn',
    });
  });

  it('prefers WANIPConnection:2 and resolves against URLBase', () => {
    const xml = `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://198.51.100.1:49000/</URLBase>
<device><serviceList>
<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>/ppp</controlURL></service>
<service><serviceType>${WANIP2}</serviceType><controlURL>ip2</controlURL></service>
</serviceList></device></root>`;
    expect(parseRootDescription(xml, LOCATION)).toEqual({
      serviceType: WANIP2,
      controlUrl: 'http://198.51.100.1:49000/ip2',
    });
  });

  it('refuses descriptions without a usable service, malformed, with a DOCTYPE or too large', () => {
    const good = encodeRootDescription({ serviceType: WANIP1, controlUrl: '/ctl' });
    expect(parseRootDescription(good.replaceAll('WANIPConnection', 'Layer3Forwarding'), LOCATION)).toBeNull();
    expect(parseRootDescription(good.replace('</root>', ''), LOCATION)).toBeNull();
    expect(
      parseRootDescription(
        encodeRootDescription({ serviceType: WANIP1, controlUrl: 'ftp://198.51.100.1/' }),
        LOCATION,
      ),
    ).toBeNull();
    const doctype = good.replace('<root', '<!DOCTYPE root [<!ENTITY a "aaaa">]><root');
    expect(parseRootDescription(doctype, LOCATION)).toBeNull();
    const large = good.replace('<friendlyName>', `<friendlyName>${'x'.repeat(UPNP_MAX_BYTES)}`);
    expect(parseRootDescription(large, LOCATION)).toBeNull();
    expect(parseRootDescription('', LOCATION)).toBeNull();
  });
});

describe('SOAP', () => {
  it('round-trips a request, escaping its arguments', () => {
    const xml = encodeSoapRequest(WANIP1, 'AddPortMapping', {
      NewRemoteHost: '',
      NewPortMappingDescription: 'a<b&c',
    });
    expect(xml).toContain('a&lt;b&amp;c');
    expect(parseSoapRequest(xml)).toEqual({
      action: 'AddPortMapping',
      args: { NewRemoteHost: '', NewPortMappingDescription: 'a<b&c' },
    });
  });

  it('reads the answer to the action asked, or the UPnP error code of a fault', () => {
    const ip = encodeSoapResponse(WANIP1, 'GetExternalIPAddress', { NewExternalIPAddress: '203.0.113.7' });
    expect(parseSoapAnswer(ip, 'GetExternalIPAddress')).toEqual({
      ok: true,
      values: { NewExternalIPAddress: '203.0.113.7' },
    });
    expect(parseSoapAnswer(encodeSoapResponse(WANIP1, 'AddPortMapping', {}), 'AddPortMapping')).toEqual({
      ok: true,
      values: {},
    });
    expect(parseSoapAnswer(encodeSoapFault(718, 'ConflictInMappingEntry'), 'AddPortMapping')).toEqual({
      ok: false,
      errorCode: 718,
    });
  });

  it('refuses another action’s answer, nested values, malformed XML', () => {
    const ip = encodeSoapResponse(WANIP1, 'GetExternalIPAddress', { NewExternalIPAddress: '203.0.113.7' });
    expect(parseSoapAnswer(ip, 'AddPortMapping')).toBeNull();
    expect(
      parseSoapAnswer(ip.replace('203.0.113.7', '<a>203.0.113.7</a>'), 'GetExternalIPAddress'),
    ).toBeNull();
    expect(parseSoapAnswer(ip.replace('</s:Envelope>', ''), 'GetExternalIPAddress')).toBeNull();
    // Text beside the values (here a NUL byte) is not a value of its own.
    expect(
      parseSoapAnswer(
        ip.replace('</NewExternalIPAddress>', '</NewExternalIPAddress>\u0000'),
        'GetExternalIPAddress',
      ),
    ).toBeNull();
    expect(parseSoapAnswer(encodeSoapFault(718, 'x').replace('718', 'seven'), 'AddPortMapping')).toBeNull();
  });
});

describe('GetSpecificPortMappingEntry', () => {
  const entry = {
    NewInternalPort: '41641',
    NewInternalClient: '198.51.100.20',
    NewEnabled: '1',
    NewPortMappingDescription: 'weft 41641',
    NewLeaseDuration: '7200',
  };

  it('reads whom a mapping forwards to from the answer', () => {
    const xml = encodeSoapResponse(WANIP1, 'GetSpecificPortMappingEntry', entry);
    const answer = parseSoapAnswer(xml, 'GetSpecificPortMappingEntry');
    expect(answer?.ok && parsePortMappingEntry(answer.values)).toEqual({
      internalClient: '198.51.100.20',
      internalPort: 41641,
    });
  });

  it('refuses a missing value, a name for an address, a port out of range', () => {
    const { NewInternalClient: _, ...noClient } = entry;
    expect(parsePortMappingEntry(noClient)).toBeNull();
    expect(parsePortMappingEntry({ ...entry, NewInternalClient: 'gateway.lan' })).toBeNull();
    expect(parsePortMappingEntry({ ...entry, NewInternalClient: 'fd00::20' })).toBeNull();
    for (const port of ['0', '65536', '-1', '4164 1', '', '0x10'])
      expect(parsePortMappingEntry({ ...entry, NewInternalPort: port })).toBeNull();
  });
});
