import { appState, NOW, runningEngine, STATES } from '@weft/core/bridge/testing';
import { describe, expect, it } from 'vitest';
import { keyWarningDue, notificationsFor } from './notifications.js';

const now = new Date(NOW);
const ids = (prev: Parameters<typeof notificationsFor>[0], next: Parameters<typeof notificationsFor>[1]) =>
  notificationsFor(prev, next, now).map((n) => n.id);

const expiringIn = (days: number) =>
  appState({
    engine: runningEngine({
      self: {
        ...(runningEngine().self as NonNullable<ReturnType<typeof runningEngine>['self']>),
        keyExpiry: new Date(NOW + days * 86_400_000).toISOString(),
      },
    }),
  });

describe('notifications', () => {
  it('connected / disconnected on transitions only', () => {
    expect(ids(STATES.connecting(), STATES.connected())).toEqual(['connected']);
    expect(ids(STATES.connected(), STATES.connected())).toEqual([]);
    expect(ids(STATES.connected(), STATES.disconnected())).toEqual(['disconnected']);
    expect(ids(STATES.connected(), STATES['exit-node']())).toEqual([]);
    expect(ids(null, STATES.connected())).toEqual([]); // not at start-up
    const n = notificationsFor(STATES.disconnected(), STATES['exit-node'](), now)[0];
    expect(n?.body).toBe('Your internet traffic goes through exit-a.');
  });

  it('losing the login or the engine while connected says so', () => {
    expect(notificationsFor(STATES.connected(), STATES['needs-login'](), now)[0]?.body).toBe(
      'Sign in again to reconnect.',
    );
    expect(notificationsFor(STATES.connected(), STATES['error-engine'](), now)[0]?.body).toBe(
      'the Weft engine is not running',
    );
  });

  it('helper failure once', () => {
    expect(ids(STATES.connected(), STATES['error-helper']())).toEqual(['disconnected', 'helper-failed']);
    expect(ids(STATES['error-helper'](), STATES['error-helper']())).toEqual([]);
  });

  it('key expiry: once on entering the 7-day window, with a re-auth action; expired once', () => {
    expect(ids(expiringIn(8), expiringIn(6.5))).toEqual(['key-expiring']);
    const n = notificationsFor(expiringIn(8), expiringIn(6.5), now)[0];
    expect(n).toMatchObject({
      body: 'This device’s key expires in 7 days. Sign in again to renew it.',
      action: { type: 'login' },
    });
    expect(ids(expiringIn(6.5), expiringIn(6))).toEqual([]);
    expect(ids(null, expiringIn(3))).toEqual(['key-expiring']);
    expect(ids(expiringIn(1), expiringIn(-0.1))).toEqual(['key-expired']);
  });

  it('nothing when notifications are off', () => {
    const off = STATES.connected();
    off.prefs.notifications = false;
    expect(ids(STATES.disconnected(), off)).toEqual([]);
  });

  it('daily reminder inside the window', () => {
    expect(keyWarningDue(expiringIn(3), now, null)).toBe(true);
    expect(keyWarningDue(expiringIn(3), now, NOW - 3_600_000)).toBe(false);
    expect(keyWarningDue(expiringIn(3), now, NOW - 86_400_000)).toBe(true);
    expect(keyWarningDue(expiringIn(30), now, null)).toBe(false);
  });
});
