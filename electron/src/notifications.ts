import { type AppState, connectionPhase, exitNodeOptions, keyExpiresInDays } from '@weft/protocol';

// Which desktop notifications a state change deserves: a pure function of (before, after).

export interface NotificationSpec {
  id: 'connected' | 'disconnected' | 'key-expiring' | 'key-expired' | 'helper-failed';
  title: string;
  body: string;
  /** A button/click that re-authenticates. */
  action?: { label: string; type: 'login' };
}

export const KEY_WARNING_DAYS = 7;

export function notificationsFor(prev: AppState | null, next: AppState, now: Date): NotificationSpec[] {
  if (!next.prefs.notifications) return [];
  const out: NotificationSpec[] = [];
  const before = prev ? connectionPhase(prev) : null;
  const after = connectionPhase(next);
  const wasUp = before === 'connected' || before === 'exit-node';
  const isUp = after === 'connected' || after === 'exit-node';
  if (before !== null && !wasUp && isUp) {
    const exit = exitNodeOptions(next).current;
    out.push({
      id: 'connected',
      title: 'Weft connected',
      body: exit
        ? `Your internet traffic goes through ${exit.name}.`
        : 'You can reach the devices in your network.',
    });
  }
  if (wasUp && (after === 'disconnected' || after === 'needs-login' || after === 'error')) {
    out.push({
      id: 'disconnected',
      title: 'Weft disconnected',
      body:
        after === 'needs-login'
          ? 'Sign in again to reconnect.'
          : after === 'error'
            ? (next.engineError ?? next.helper.message ?? 'Something stopped working.')
            : 'Devices in your network are no longer reachable from here.',
    });
  }
  if (next.helper.phase === 'failed' && prev?.helper.phase !== 'failed') {
    out.push({
      id: 'helper-failed',
      title: 'Weft cannot set up the network',
      body: next.helper.message ?? 'The network helper could not start.',
    });
  }
  const daysNow = keyExpiresInDays(next, now);
  const daysBefore = prev ? keyExpiresInDays(prev, now) : null;
  const crossed = (limit: number) =>
    daysNow !== null && daysNow <= limit && (daysBefore === null || daysBefore > limit || prev === null);
  if (crossed(0)) {
    out.push({
      id: 'key-expired',
      title: 'Weft: sign in again',
      body: 'This device’s key has expired.',
      action: { label: 'Sign in', type: 'login' },
    });
  } else if (crossed(KEY_WARNING_DAYS)) {
    out.push({
      id: 'key-expiring',
      title: 'Weft: key expires soon',
      body: `This device’s key expires in ${Math.max(1, Math.ceil(daysNow ?? 0))} days. Sign in again to renew it.`,
      action: { label: 'Sign in', type: 'login' },
    });
  }
  return out;
}

/** Warns again once a day while the key is within the warning window (the check runs on a timer). */
export function keyWarningDue(s: AppState, now: Date, lastWarnedAt: number | null): boolean {
  const days = keyExpiresInDays(s, now);
  if (days === null || days > KEY_WARNING_DAYS || !s.prefs.notifications) return false;
  return lastWarnedAt === null || now.getTime() - lastWarnedAt >= 86_400_000;
}
