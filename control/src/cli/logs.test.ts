import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/open.js';
import { Store } from '../db/store.js';
import { buildControl, controlBin, serveProcess } from '../testing/control-process.js';
import { cleanupAll, type TestControl, TestMachine, tempDir } from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';

// The real `weft-control serve` with --log-format json: every line is one JSON event, and no secret
// the run handled (the pre-auth key, control's private key, the database password) is in them.

beforeAll(() => {
  buildControl();
}, 120_000);
afterEach(cleanupAll);

const postgresSkip = await postgresAbsence();

function run(args: string[], cwd: string): Promise<string> {
  const child = spawn(process.execPath, [controlBin, ...args], { cwd, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve, reject) =>
    child.on('close', (code) =>
      code === 0 ? resolve(out.trim()) : reject(new Error(`${args.join(' ')}: ${code}`)),
    ),
  );
}

/** Serves `db` with JSON logs, registers and streams two nodes; returns the log and the secrets used. */
async function loggedRun(db: string): Promise<{ logs: string; secrets: string[] }> {
  const cwd = tempDir();
  const server = await serveProcess(['--db', db, '--log-format', 'json'], cwd);
  try {
    await run(['users', 'create', 'alice', '--db', db], cwd);
    const key = await run(['preauthkey', 'create', '--user', 'alice', '--reusable', '--db', db], cwd);
    const { publicKey } = (await (await fetch(`${server.url}/machine/key`)).json()) as { publicKey: string };
    const t = { control: { url: server.url }, controlPublicKey: publicKey } as unknown as TestControl;
    const a = new TestMachine(t);
    const b = new TestMachine(t);
    await a.join('a', key);
    await b.join('b', key);
    const sa = await a.stream();
    await sa.until('a sees b', (c) => c.peerNames().includes('b'));
    const store = new Store((await openDatabase(db)).db);
    const privateKey = (await store.setting('control_private_key')) as string;
    await store.destroy();
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
    return { logs: server.logs(), secrets: [key, privateKey] };
  } finally {
    server.child.kill('SIGKILL');
  }
}

function expectJsonEvents(logs: string): void {
  const lines = logs.trim().split('\n');
  expect(lines.length).toBeGreaterThan(3);
  for (const line of lines) {
    expect(JSON.parse(line)).toMatchObject({
      name: 'weft-control',
      level: expect.any(String),
      msg: expect.any(String),
    });
  }
  expect(logs).toMatch(/"msg":"registered a /);
}

describe('the server log', () => {
  it('is JSON events without the pre-auth key or control’s private key (SQLite)', async () => {
    const { logs, secrets } = await loggedRun(`${tempDir()}/control.db`);
    expectJsonEvents(logs);
    for (const secret of secrets) expect(logs).not.toContain(secret);
  });

  it.skipIf(postgresSkip !== null)('hides the password of the database URL (PostgreSQL)', async () => {
    const url = new URL(await tempPostgres());
    const password = 'pw-Q7f2-never-logged';
    url.password = password;
    const { logs, secrets } = await loggedRun(url.toString());
    expectJsonEvents(logs);
    expect(logs).toContain(':***@');
    for (const secret of [...secrets, password]) expect(logs).not.toContain(secret);
  });
});
