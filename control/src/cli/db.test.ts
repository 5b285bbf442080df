import { existsSync } from 'node:fs';
import { CONTROL_KEY_PATH } from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, runCliCaptured, startTestControl, TestMachine } from '../testing/harness.js';
import { postgresAbsence, tempPostgres } from '../testing/postgres.js';

// `db copy` from a tailnet's SQLite file to PostgreSQL, checked the way a user would: the same
// nodes, users, keys and policy listed, the same control key served, and a node that joined before
// the move streams its map from the PostgreSQL-backed server with the addresses it had.

afterEach(cleanupAll);

const noPostgres = await postgresAbsence();

const POLICY = `{ "acls": [{ "action": "accept", "src": ["alice@"], "dst": ["*:22"] }] }`;

describe.skipIf(noPostgres !== null)('weft-control db', () => {
  it('copy moves every node, user, key, policy and setting from SQLite to PostgreSQL', async () => {
    const before = await startTestControl();
    const key = await before.key('--reusable');
    const a = new TestMachine(before);
    const b = new TestMachine(before);
    const aNode = await a.join('a', key);
    await b.join('b', key);
    const { writeFileSync } = await import('node:fs');
    const { join, dirname } = await import('node:path');
    const policyFile = join(dirname(before.db), 'policy.hujson');
    writeFileSync(policyFile, POLICY);
    expect((await before.cli('policy', 'set', policyFile)).code).toBe(0);
    expect((await before.cli('apikey', 'create')).code).toBe(0);
    const listed = async (cli: typeof before.cli) =>
      Promise.all(
        [
          ['nodes', 'list', '--json'],
          ['users', 'list', '--json'],
          ['apikey', 'list', '--json'],
          ['policy', 'get'],
        ].map(async (args) => (await cli(...args)).out),
      );
    const was = await listed(before.cli);
    await before.control.close();

    const url = await tempPostgres();
    const copied = await runCliCaptured(['db', 'copy', '--from', `sqlite:${before.db}`, '--to', url]);
    expect(copied).toMatchObject({ code: 0 });
    expect(copied.err).toMatch(/copied .* 2 nodes/);

    const after = await startTestControl({ config: { db: url } });
    expect(await listed(after.cli)).toEqual(was);
    expect(after.controlPublicKey).toBe(before.controlPublicKey);
    const served = await (await fetch(`${after.control.url}${CONTROL_KEY_PATH}`)).json();
    expect(served).toEqual({ publicKey: before.controlPublicKey });

    // The node's keys moved with it: its signed stream is accepted, with its old addresses.
    const moved = new TestMachine(after);
    Object.assign(moved, { machine: a.machine, node: a.node });
    const stream = await moved.stream();
    await stream.until('the map', (c) => c.netmap !== null);
    expect(stream.netmap?.self).toMatchObject({ id: aNode.id, addresses: aNode.addresses });
  });

  it('copy refuses a target that is not empty, and changes nothing there', async () => {
    const t = await startTestControl();
    await t.key();
    await t.control.close();
    const url = await tempPostgres();
    expect((await runCliCaptured(['db', 'copy', '--from', t.db, '--to', url])).code).toBe(0);
    const again = await runCliCaptured(['db', 'copy', '--from', t.db, '--to', url]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/the target database is not empty \(table settings has \d+ rows\)/);
    const users = await runCliCaptured(['users', 'list', '--json', '--db', url]);
    expect(JSON.parse(users.out)).toHaveLength(1);
    // A mistyped source is refused, not created and copied as an empty tailnet.
    const missing = `${t.db}.typo`;
    const typo = await runCliCaptured(['db', 'copy', '--from', missing, '--to', await tempPostgres()]);
    expect(typo).toMatchObject({ code: 1, err: expect.stringContaining(`no database at ${missing}`) });
    expect(existsSync(missing)).toBe(false);
  });

  it('migrate brings a new database up to date and says where it is', async () => {
    const url = await tempPostgres();
    const r = await runCliCaptured(['db', 'migrate', '--db', url]);
    expect(r).toMatchObject({ code: 0 });
    expect(r.err).toMatch(/schema up to date \(\d+ migrations, last \d{4}_\w+\)/);
    const bad = await runCliCaptured(['db', 'migrate', '--db', 'postgres://']);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/--db: must be a file path or a postgres:/);
    const away = await runCliCaptured(['db', 'migrate', '--db', 'postgres://weft:secret@127.0.0.1:1/weft']);
    expect(away.code).toBe(1);
    expect(away.err).toMatch(
      /cannot reach PostgreSQL at postgres:\/\/weft:\*\*\*@127\.0\.0\.1:1\/weft: .*ECONNREFUSED/,
    );
  });
});
