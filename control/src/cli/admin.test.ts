import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hashApiKey } from '../auth/api-keys.js';
import { hashPreauthKey } from '../auth/preauth-keys.js';
import { cleanupAll, runCliCaptured, tempDir } from '../testing/harness.js';

afterEach(cleanupAll);

describe('admin commands', () => {
  it('manage users and print only the new pre-auth key, storing only its hash', async () => {
    const dir = tempDir();
    const cli = (...args: string[]) => runCliCaptured(args, {}, dir);
    expect(await cli('users', 'create', 'alice', '--email', 'alice@example.com')).toMatchObject({
      code: 0,
      out: '',
    });
    const dup = await cli('users', 'create', 'alice');
    expect(dup).toMatchObject({ code: 1, out: '' });
    expect(dup.err).toMatch(/already exists/);
    expect((await cli('users', 'create', 'bad name')).err).toMatch(/invalid user name/);
    expect((await cli('users', 'create', 'bob', '--email', 'nope')).err).toMatch(/invalid email/);

    const users = JSON.parse((await cli('users', 'list', '--json')).out);
    expect(users).toEqual([expect.objectContaining({ name: 'alice', email: 'alice@example.com' })]);
    expect((await cli('users', 'list')).out).toMatch(
      /^NAME +EMAIL +PROVIDER +GROUPS +CREATED\nalice +alice@example\.com +- +- /,
    );

    const made = await cli(
      'preauthkey',
      'create',
      '--user',
      'alice',
      '--tags',
      'tag:web,tag:web',
      '--expiration',
      '2h',
    );
    expect(made.code).toBe(0);
    expect(made.out).toMatch(/^weftkey-[A-Za-z0-9_-]{43}\n$/);
    const key = made.out.trim();
    // Default database in the working directory; the key itself is nowhere in it, its hash is.
    const file = readFileSync(join(dir, 'weft-control.db')).toString('latin1') + readWal(dir);
    expect(file.includes(key)).toBe(false);
    expect(file.includes(hashPreauthKey(key))).toBe(true);

    expect((await cli('preauthkey', 'create', '--user', 'alice', '--tags', 'web')).err).toMatch(
      /invalid tag "web"/,
    );
    expect((await cli('preauthkey', 'create', '--user', 'alice', '--expiration', 'soon')).err).toMatch(
      /invalid expiration/,
    );
    expect((await cli('preauthkey', 'create')).code).toBe(1);
  });

  it('list nodes as a table or JSON and refuse to delete an unknown one', async () => {
    const dir = tempDir();
    const cli = (...args: string[]) => runCliCaptured(args, {}, dir);
    expect((await cli('nodes', 'list')).out).toBe(
      'NAME  IPV4  IPV6  OWNER  OS  KIND  VERSION  LAST SEEN  KEY EXPIRY\n',
    );
    expect(JSON.parse((await cli('nodes', 'list', '--json')).out)).toEqual([]);
    const r = await cli('nodes', 'delete', 'ghost');
    expect(r).toMatchObject({ code: 1, out: '' });
    expect(r.err).toMatch(/no node named ghost/);
    expect((await cli('nodes', 'expire', 'ghost')).err).toMatch(/no node named ghost/);
  });

  it('create API keys printing only the key, list them by prefix, store only the hash, revoke them', async () => {
    const dir = tempDir();
    const cli = (...args: string[]) => runCliCaptured(args, {}, dir);
    const made = await cli('apikey', 'create', '--expiration', '30d');
    expect(made.code).toBe(0);
    expect(made.out).toMatch(/^weftapi-[0-9a-f]{8}-[A-Za-z0-9_-]{43}\n$/);
    const key = made.out.trim();
    const prefix = key.slice('weftapi-'.length, 'weftapi-'.length + 8);
    const file = readFileSync(join(dir, 'weft-control.db')).toString('latin1') + readWal(dir);
    expect(file.includes(key)).toBe(false);
    expect(file.includes(hashApiKey(key))).toBe(true);

    const listed = JSON.parse((await cli('apikey', 'list', '--json')).out) as Record<string, unknown>[];
    expect(listed).toEqual([expect.objectContaining({ prefix, lastUsedAt: null })]);
    expect(JSON.stringify(listed)).not.toMatch(/hash/i);
    const days = (Date.parse(listed[0]?.expiresAt as string) - Date.now()) / 86_400_000;
    expect(Math.round(days)).toBe(30);

    expect(await cli('apikey', 'revoke', prefix)).toMatchObject({ code: 0 });
    expect((await cli('apikey', 'revoke', prefix)).err).toMatch(/no API key with prefix/);
    expect(JSON.parse((await cli('apikey', 'list', '--json')).out)).toEqual([]);
    expect((await cli('apikey', 'create', '--expiration', 'forever')).err).toMatch(/invalid expiration/);
  });
});

function readWal(dir: string): string {
  try {
    return readFileSync(join(dir, 'weft-control.db-wal')).toString('latin1');
  } catch {
    return '';
  }
}
