import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { HelperResponse } from '@weft/protocol';
import type { HelperHandle } from './supervisor.js';

// How the app reaches the privileged helper. Installed (deb/rpm): a systemd service owns it and
// restarts it; the app only probes its socket. Development: the app starts it as a child
// (WEFT_HELPER_COMMAND, e.g. "sudo -n node native-helpers/dist/main.js --socket …").

/** Probes the helper: one status request on its socket; any well-formed answer means alive. */
export function probeHelper(socketPath: string, iface = 'weft0', timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(socketPath);
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write(`${JSON.stringify({ id: 1, op: 'status', interface: iface })}\n`));
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl === -1) {
        if (buf.length > 1_000_000) done(false);
        return;
      }
      try {
        done(HelperResponse.safeParse(JSON.parse(buf.slice(0, nl))).success);
      } catch {
        done(false);
      }
    });
    sock.on('end', () => done(false));
  });
}

/** The installed service: nothing to start or stop (systemd restarts it); only probed. */
export function serviceHandle(): HelperHandle {
  return { exited: new Promise(() => {}), stop: async () => {} };
}

/** Starts a development helper as a child process, argument vector only (no shell). */
export function spawnHelper(argv: readonly string[], spawnFn: typeof spawn = spawn): HelperHandle {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty helper command');
  const child: ChildProcess = spawnFn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: 'spawn-error' }));
  });
  return {
    exited,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Splits WEFT_HELPER_COMMAND on whitespace (no shell, no quoting: paths with spaces need a wrapper). */
export function helperCommandFromEnv(value: string | undefined): string[] | null {
  const parts = (value ?? '').split(/\s+/).filter(Boolean);
  return parts.length ? parts : null;
}
