import { type DesiredState, HelperRequest } from '@weft/protocol';
import { describe, expect, it, vi } from 'vitest';
import { parseRequestLine, RequestParser } from './validate.js';

// Item 5 of issue 10: outside the exit-node path, nothing may route, address or exempt from the kill
// switch more than 1/64 of an address space, however it is split.

const key = (n: number) => Buffer.alloc(32, n).toString('base64');

function state(fields: Partial<DesiredState>, addresses = ['100.64.0.1/32']): DesiredState {
  return {
    interface: { name: 'wg0', privateKey: key(1), listenPort: 0, addresses, mtu: 1280 },
    peers: [{ publicKey: key(2), allowedIPs: ['0.0.0.0/0', '::/0'] }],
    routes: ['100.64.0.0/10'],
    ...fields,
  };
}

function refusal(s: DesiredState): string {
  const parsed = parseRequestLine(Buffer.from(JSON.stringify({ id: 1, op: 'apply', state: s })));
  if (parsed.ok) throw new Error('accepted');
  return parsed.message;
}

function accepted(s: DesiredState): boolean {
  return parseRequestLine(Buffer.from(JSON.stringify({ id: 1, op: 'apply', state: s }))).ok;
}

describe('exit routes outside the exit-node path', () => {
  it('refuses 0.0.0.0/1 + 128.0.0.0/1 in routes, naming the field', () => {
    expect(refusal(state({ routes: ['0.0.0.0/1', '128.0.0.0/1'] }))).toBe(
      'state.routes[0]: covers more than 1/64 of the IPv4 address space, which makes it an exit route; ' +
        'the default route goes through the tunnel with exitNode; state.routes[1]: covers more than 1/64 ' +
        'of the IPv4 address space, which makes it an exit route; the default route goes through the ' +
        'tunnel with exitNode',
    );
  });

  it('refuses routes that are an exit route only together', () => {
    const sixes = ['::/6', '400::/6'];
    expect(refusal(state({ routes: sixes }))).toBe(
      'state.routes: together covers more than 1/64 of the IPv6 address space, which makes it an exit ' +
        'route; the default route goes through the tunnel with exitNode',
    );
  });

  it('refuses a /1 interface address', () => {
    expect(refusal(state({}, ['100.64.0.1/32', '128.0.0.1/1']))).toBe(
      'state.interface.addresses[1]: covers more than 1/64 of the IPv4 address space, which makes it an exit route',
    );
  });

  it('refuses /1 allowedLan and bypass pairs that would switch the kill switch off', () => {
    const lan = state({ exitNode: { allowedLan: ['0.0.0.0/1', '128.0.0.0/1'], bypass: [] } });
    expect(refusal(lan)).toContain('state.exitNode.allowedLan[0]: covers more than 1/64 of the IPv4');
    const bypass = state({ exitNode: { allowedLan: [], bypass: ['::/1', '8000::/1'] } });
    expect(refusal(bypass)).toContain('state.exitNode.bypass[1]: covers more than 1/64 of the IPv6');
    const split = state({ exitNode: { allowedLan: ['64.0.0.0/6'], bypass: ['68.0.0.0/6'] } });
    expect(refusal(split)).toBe(
      'state.exitNode: bypass and allowedLan together covers more than 1/64 of the IPv4 address space, ' +
        'which makes it an exit route',
    );
  });

  it('refuses an exit node that also offers /1 halves as a router', () => {
    const s = state({
      exitNode: { allowedLan: [], bypass: [] },
      router: { routes: ['0.0.0.0/1', '128.0.0.0/1'], masquerade: true },
    });
    expect(refusal(s)).toBe('state.exitNode: a node that offers itself as exit node cannot use one');
  });

  it('accepts the exit-node path and ordinary prefixes', () => {
    expect(
      accepted(
        state(
          {
            routes: ['100.64.0.0/10', '198.18.0.0/15', 'fd7a:115c:a1e0::/48', '4.0.0.0/8'],
            exitNode: { allowedLan: ['198.18.0.0/15', 'fd00::/8'], bypass: ['192.0.2.7/32'] },
          },
          ['100.64.0.1/10', 'fd7a:115c:a1e0::1/48'],
        ),
      ),
    ).toBe(true);
    // An exit node offers /0 as a router: that forwards for others and routes nothing here.
    expect(accepted(state({ router: { routes: ['0.0.0.0/0', '::/0'], masquerade: true } }))).toBe(true);
  });
});

describe('the DNS redirect', () => {
  const dns = (ipv4: string, ipv6?: string): Partial<DesiredState> => ({
    dns: { resolver: { ipv4, ...(ipv6 === undefined ? {} : { ipv6 }), port: 40053 }, searchDomains: [] },
  });
  const addresses = ['100.64.0.1/32', 'fd00:64::1/128'];

  it("points only at the interface's own addresses", () => {
    expect(accepted(state(dns('100.64.0.1', 'fd00:64::1'), addresses))).toBe(true);
    // The same address written another way is still ours.
    expect(accepted(state(dns('100.64.0.1', 'fd00:64:0::0:1'), addresses))).toBe(true);
    expect(refusal(state(dns('198.51.100.53'), addresses))).toBe(
      'state.dns.resolver.ipv4: must be one of state.interface.addresses',
    );
    expect(refusal(state(dns('100.64.0.1', 'fd00:64::53'), addresses))).toBe(
      'state.dns.resolver.ipv6: must be one of state.interface.addresses',
    );
  });
});

describe('an apply sent again unchanged (the engine does every 30 s)', () => {
  const line = (id: number, s: DesiredState, extra: object = {}) =>
    Buffer.from(JSON.stringify({ id, op: 'apply', state: s, ...extra }));

  it('is not checked again, but the request around it is, and a changed state is in full', () => {
    const parser = new RequestParser();
    const checks = vi.spyOn(HelperRequest, 'safeParse');
    const s = state({});
    expect(parser.parse(line(1, s))).toEqual({ ok: true, request: { id: 1, op: 'apply', state: s } });
    expect(parser.parse(line(2, s))).toEqual({ ok: true, request: { id: 2, op: 'apply', state: s } });
    expect(checks).toHaveBeenCalledTimes(1);
    expect(parser.parse(line(-1, s))).toMatchObject({ ok: false, id: null });
    expect(parser.parse(line(3, s, { extra: true }))).toMatchObject({ ok: false, id: 3 });
    const exitRoutes = state({ routes: ['0.0.0.0/1', '128.0.0.0/1'] });
    expect(parser.parse(line(4, exitRoutes))).toMatchObject({ ok: false, id: 4 });
    expect(parser.parse(line(5, exitRoutes))).toMatchObject({ ok: false, id: 5 });
    checks.mockRestore();
  });

  it('gives each request a state of its own', () => {
    const parser = new RequestParser();
    const s = state({});
    const first = parser.parse(line(1, s));
    if (first.ok && first.request.op === 'apply') first.request.state.routes.push('198.51.100.0/24');
    expect(parser.parse(line(2, s))).toEqual({ ok: true, request: { id: 2, op: 'apply', state: s } });
  });
});
