import { describe, expect, it } from 'vitest';
import type { LinkSnapshot, RouteSnapshot } from './ip.js';
import { planAddresses, planLink, planRoutes } from './plan.js';

const link = (addresses: string[], mtu = 1280, up = true): LinkSnapshot => ({
  name: 'wg0',
  kind: 'tun',
  mtu,
  up,
  addresses,
});
const route = (dst: string, kernel = false): RouteSnapshot => ({ dst, kernel, manageable: !kernel });

describe('planAddresses', () => {
  it('adds what is missing (IPv6 without DAD) and deletes what is extra, deletions first', () => {
    expect(
      planAddresses('wg0', link(['100.64.0.9/10', 'fd00::1/64']), [
        '100.64.0.1/10',
        'fd00::1/64',
        'fd00:1::1/64',
      ]),
    ).toEqual([
      ['ip', 'address', 'del', '100.64.0.9/10', 'dev', 'wg0'],
      ['ip', 'address', 'add', '100.64.0.1/10', 'dev', 'wg0'],
      ['ip', 'address', 'add', 'fd00:1::1/64', 'dev', 'wg0', 'nodad'],
    ]);
  });

  it('is empty when the addresses match, however they are spelled', () => {
    expect(
      planAddresses('wg0', link(['100.64.0.1/10', 'fd00::1/64']), [
        'fd00:0:0::1/64',
        '100.64.0.1/10',
        '100.64.0.1/10',
      ]),
    ).toEqual([]);
  });

  it('treats a new prefix length as a different address', () => {
    expect(planAddresses('wg0', link(['100.64.0.1/10']), ['100.64.0.1/32'])).toEqual([
      ['ip', 'address', 'del', '100.64.0.1/10', 'dev', 'wg0'],
      ['ip', 'address', 'add', '100.64.0.1/32', 'dev', 'wg0'],
    ]);
  });
});

describe('planLink', () => {
  it('sets MTU and up only when either differs', () => {
    expect(planLink('wg0', link([], 1280, true), 1280)).toEqual([]);
    expect(planLink('wg0', link([], 1420, true), 1280)).toEqual([
      ['ip', 'link', 'set', 'wg0', 'mtu', '1280', 'up'],
    ]);
    expect(planLink('wg0', link([], 1280, false), 1280)).toEqual([
      ['ip', 'link', 'set', 'wg0', 'mtu', '1280', 'up'],
    ]);
  });
});

describe('planRoutes', () => {
  it('adds missing routes of both families and deletes extra ones', () => {
    const current = [route('100.64.0.5/32'), route('fd00:9::/64'), route('198.18.0.0/15')];
    expect(planRoutes('wg0', current, ['100.64.0.5/32', '100.64.0.6/32', 'fd00:7::/64', '::/0'])).toEqual([
      ['ip', '-6', 'route', 'del', 'fd00:9::/64', 'dev', 'wg0'],
      ['ip', 'route', 'del', '198.18.0.0/15', 'dev', 'wg0'],
      ['ip', 'route', 'add', '100.64.0.6/32', 'dev', 'wg0'],
      ['ip', '-6', 'route', 'add', 'fd00:7::/64', 'dev', 'wg0'],
      ['ip', '-6', 'route', 'add', '::/0', 'dev', 'wg0'],
    ]);
  });

  it('counts a kernel route for an address as present and never deletes it', () => {
    const current = [route('100.64.0.0/10', true), route('fd00::/64', true)];
    expect(planRoutes('wg0', current, ['100.64.0.0/10'])).toEqual([]);
  });

  it('leaves routes it does not manage alone', () => {
    const current: RouteSnapshot[] = [{ dst: 'fe80::/64', kernel: false, manageable: false }];
    expect(planRoutes('wg0', current, [])).toEqual([]);
  });

  it('is empty when the routes match, however they are spelled', () => {
    expect(
      planRoutes('wg0', [route('fd00:1::/64'), route('0.0.0.0/0')], ['fd00:1:0::/64', '0.0.0.0/0']),
    ).toEqual([]);
  });
});
