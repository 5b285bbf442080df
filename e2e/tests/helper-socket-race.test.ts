import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, removeScratch, run, scratchDir, waitFor } from '../lab/index.js';
import { withTimeout } from './helper-harness.js';

// Issue 10, item 3: a member of the helper's group must not be able to turn the helper's socket set-up
// against root. The attacker is a real unprivileged user (made for this run, in the group) running a
// bounded loop that plants symlinks where the socket goes, or binds the socket first; the real helper
// and engine run as root. No network: only files and unix sockets in a scratch folder.

const USER = `wsr${randomBytes(3).toString('hex')}`;
let uid = 0;
let gid = 0;
let base = '';
let victim = '';
const children: ChildProcess[] = [];

/** The attacker, as USER: plants symlinks to the victim at `sock`, or binds `sock` and counts callers. */
const ATTACKER = `
  const fs = require('node:fs'), net = require('node:net');
  const [mode, sock, victim, stop] = process.argv.slice(1);
  const counts = { planted: 0, refused: 0, other: 0, connections: 0 };
  const done = () => { fs.writeSync(1, JSON.stringify(counts) + '\\n'); process.exit(0); };
  fs.writeSync(1, 'started\\n');
  if (mode === 'bind') {
    net.createServer((c) => { counts.connections++; c.destroy(); }).listen(sock);
    let polls = 0;
    setInterval(() => { if (fs.existsSync(stop) || ++polls > 3000) done(); }, 20);
  } else {
    // Bounded: at most 2,000,000 attempts, or until the test drops the stop file.
    for (let i = 0; i < 40000 && !fs.existsSync(stop); i++) {
      for (let k = 0; k < 50; k++) {
        try { fs.symlinkSync(victim, sock); counts.planted++; }
        catch (e) { if (e.code === 'EACCES' || e.code === 'EPERM') counts.refused++; else counts.other++; }
        try { fs.unlinkSync(sock); } catch {}
      }
    }
    done();
  }`;

/** Starts the attacker and waits until it runs; `counts` resolves with what it managed once stopped. */
async function attacker(
  mode: 'swap' | 'bind',
  sock: string,
  stop: string,
): Promise<{ counts: Promise<Record<string, number>> }> {
  const child = spawn(
    'setpriv',
    [
      '--reuid',
      String(uid),
      '--regid',
      String(gid),
      '--init-groups',
      process.execPath,
      '-e',
      ATTACKER,
      mode,
      sock,
      victim,
      stop,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (t: string) => {
    out += t;
  });
  const exited = new Promise<string>((resolve) => child.once('exit', () => resolve(out)));
  await waitFor(`the attacker (${mode}) to start`, async () => out.includes('started'));
  // Killed before it could report (a failed test), it reports nothing.
  const counts = exited.then((text) => {
    const last = text.trim().split('\n').at(-1) ?? '';
    return last.startsWith('{') ? JSON.parse(last) : {};
  });
  return { counts: withTimeout(counts, 30_000, 'the attacker to stop') };
}

/** Runs the built helper as root until it exits on its own (or is stopped), with its stderr. */
function helper(args: string[]): { child: ChildProcess; stderr: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN.helper, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => {
    stderr += t;
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exit };
}

function fileFacts(path: string): string {
  const st = lstatSync(path);
  return `${st.ino} ${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;
}

beforeAll(async () => {
  const made = await run([
    'useradd',
    '--system',
    '--user-group',
    '--no-create-home',
    '--shell',
    '/usr/sbin/nologin',
    USER,
  ]);
  if (made.code !== 0) throw new Error(`useradd ${USER}: ${made.stderr}`);
  uid = Number((await run(['id', '-u', USER])).stdout.trim());
  gid = Number((await run(['id', '-g', USER])).stdout.trim());
  base = scratchDir('sockrace');
  chmodSync(base, 0o755);
  victim = join(base, 'victim');
  writeFileSync(victim, 'root only\n', { mode: 0o600 });
});

afterAll(async () => {
  // By PID only: the attackers and helpers this file started. ChildProcess.kill, not process.kill:
  // a child that exited on its own since (ESRCH) is not an error here.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await run(['userdel', USER]);
  await run(['groupdel', USER]);
  if (base !== '') removeScratch(base);
});

describe('helper socket against a member of its group', () => {
  it('the old layout (a group-writable directory): a symlink-swap race loop changes no file, the helper refuses', async () => {
    // /run/weft as it was: 0770 root:weft, no sticky bit.
    const dir = join(base, 'run-old');
    await run(['install', '-d', '-m', '0770', '-o', 'root', '-g', String(gid), dir]);
    const before = { victim: fileFacts(victim), dir: fileFacts(dir) };
    const stop = join(base, 'stop-swap');
    const swap = await attacker('swap', join(dir, 'helper.sock'), stop);
    const refusals: string[] = [];
    for (let i = 0; i < 10; i++) {
      const h = helper([
        '--socket',
        join(dir, 'helper.sock'),
        '--group',
        USER,
        '--state-dir',
        join(base, 'state-old'),
      ]);
      expect(await withTimeout(h.exit, 15_000, 'the helper to refuse')).toBe(1);
      refusals.push(h.stderr());
    }
    writeFileSync(stop, '');
    const counts = await swap.counts;
    // The race was live: the member could plant symlinks in that directory all along.
    expect(counts.planted).toBeGreaterThan(0);
    for (const stderr of refusals) {
      expect(stderr).toContain(`${dir} is writable by its group or others (mode 0770)`);
    }
    expect(fileFacts(victim)).toBe(before.victim);
    expect(fileFacts(dir)).toBe(before.dir);
    expect(readFileSync(victim, 'utf8')).toBe('root only\n');
  });

  it('the new layout (root-only directory): the member can plant nothing; every helper opens its socket to the group', async () => {
    const dir = join(base, 'run-helper');
    await run(['install', '-d', '-m', '0755', '-o', 'root', '-g', 'root', dir]);
    const sock = join(dir, 'helper.sock');
    const before = fileFacts(victim);
    const stop = join(base, 'stop-new');
    const swap = await attacker('swap', sock, stop);
    for (let i = 0; i < 5; i++) {
      const h = helper(['--socket', sock, '--group', USER, '--state-dir', join(base, 'state-new')]);
      const st = await waitFor('the socket open to the group', async () => {
        if (h.child.exitCode !== null) throw new Error(`helper exited: ${h.stderr()}`);
        const s = existsSync(sock) ? lstatSync(sock) : null;
        return s?.isSocket() && (s.mode & 0o777) === 0o660 ? s : false;
      });
      expect([st.uid, st.gid]).toEqual([0, gid]);
      h.child.kill('SIGINT');
      expect(await withTimeout(h.exit, 15_000, 'the helper to stop')).toBe(0);
    }
    writeFileSync(stop, '');
    const counts = await swap.counts;
    expect(counts.planted).toBe(0);
    expect(counts.refused).toBeGreaterThan(0);
    expect(fileFacts(victim)).toBe(before);
  });

  it('a socket the member bound first is refused by the helper and by the engine, which sends it nothing', async () => {
    const dir = join(base, 'run-prebound');
    await run(['install', '-d', '-m', '0770', '-o', 'root', '-g', String(gid), dir]);
    const sock = join(dir, 'helper.sock');
    const stop = join(base, 'stop-bind');
    const bind = await attacker('bind', sock, stop);
    await waitFor('the member to bind the socket', async () => existsSync(sock));
    const h = helper(['--socket', sock, '--state-dir', join(base, 'state-pre')]);
    expect(await withTimeout(h.exit, 15_000, 'the helper to refuse')).toBe(1);
    expect(h.stderr()).toContain('is writable by its group or others');

    const engineDir = scratchDir('sockrace-engine');
    try {
      const weftd = spawn(
        process.execPath,
        [
          BIN.weftd,
          '--state-dir',
          join(engineDir, 'state'),
          '--socket',
          join(engineDir, 'weftd.sock'),
          '--helper-socket',
          sock,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(weftd);
      let log = '';
      for (const s of [weftd.stdout, weftd.stderr])
        s?.setEncoding('utf8').on('data', (t: string) => {
          log += t;
        });
      await waitFor('the engine to refuse the socket', async () =>
        log.includes(`${sock} is owned by uid ${uid}, not by root or this user: refusing to talk to it`),
      );
      // It may already have exited after refusing; ChildProcess.kill then does nothing.
      weftd.kill('SIGKILL');
    } finally {
      removeScratch(engineDir);
    }
    writeFileSync(stop, '');
    expect((await bind.counts).connections).toBe(0);
  });
});
