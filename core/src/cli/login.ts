import type { Status } from '@weft/protocol';
import { type LocalApiClient, LocalApiError } from '../localapi/client.js';
import { formatDuration } from './duration.js';

// `weft up` without a pre-auth key: print the sign-in link and wait for the person to use it.

export interface LoginIo {
  /** stdout: the link, alone on its line, so scripts and the desktop app's tests can read it. */
  out(line: string): void;
  /** stderr: words for the person. */
  err(line: string): void;
  /** Aborted on Ctrl-C (SIGINT) or SIGTERM. */
  interrupt?: AbortSignal;
}

/**
 * Prints the sign-in URL and follows the daemon's status until Running. Rejects when the link
 * expires or is cancelled elsewhere; on timeout or interrupt it cancels the sign-in (the printed
 * link stops working) and rejects.
 */
export async function waitForLogin(
  api: LocalApiClient,
  authUrl: string,
  timeoutMs: number,
  io: LoginIo,
): Promise<Status> {
  io.err('To log in, open this URL in a browser:');
  io.out(authUrl);
  const abort = new AbortController();
  let last: Status | null = null;
  let shown = authUrl;
  let why: 'running' | 'ended' | 'timeout' | 'interrupted' | null = null;
  const finish = (reason: NonNullable<typeof why>) => {
    why ??= reason;
    abort.abort();
  };
  const timer = setTimeout(() => finish('timeout'), timeoutMs);
  const interrupted = () => finish('interrupted');
  if (io.interrupt?.aborted) interrupted();
  io.interrupt?.addEventListener('abort', interrupted, { once: true });
  try {
    await api.watch((ev) => {
      const st = ev.status;
      last = st;
      if (st.backendState === 'Running') return finish('running');
      if (st.backendState === 'NeedsLogin' && !st.authUrl) return finish('ended');
      if (st.authUrl && st.authUrl !== shown) {
        // Control handed out a new link (the old one no longer works).
        shown = st.authUrl;
        io.out(st.authUrl);
      }
    }, abort.signal);
  } finally {
    clearTimeout(timer);
    io.interrupt?.removeEventListener('abort', interrupted);
  }
  const st = last as Status | null;
  if (why === 'running' && st) return st;
  if (why === 'ended' || why === null) {
    throw new LocalApiError('login-ended', `not logged in: ${st?.health.join('; ') || 'the sign-in ended'}`);
  }
  // Timed out or interrupted: give the link up so that nobody can use it later.
  let cancelled = false;
  if (st === null || st.backendState === 'NeedsLogin') {
    try {
      await api.cancelLogin();
      cancelled = true;
    } catch (err) {
      io.err(`weft: could not cancel the sign-in: ${(err as Error).message}`);
    }
  }
  const what =
    why === 'timeout'
      ? `not logged in within ${formatDuration(timeoutMs)}`
      : 'interrupted before the sign-in finished';
  const after = cancelled
    ? '; the sign-in was cancelled'
    : st && st.backendState !== 'NeedsLogin'
      ? ` (signed in, but ${st.backendState}${st.health.length ? `: ${st.health.join('; ')}` : ''})`
      : '';
  throw new LocalApiError(why, `${what}${after}`);
}
