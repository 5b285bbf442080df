import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanupAll, onCleanup, tempDir } from '../testing/harness.js';
import { openDatabase } from './open.js';
import { openSqliteConnection } from './sqlite.js';
import { Store } from './store.js';

// The SQLite change feed hears other processes' commits (the admin CLI) and not the server's own:
// those are applied already, and hearing them reloaded every node after each registration.

afterEach(async () => {
  vi.useRealTimers();
  await cleanupAll();
});

describe('SqliteChangeFeed', () => {
  it('fires for another connection’s commit, never for the server’s own', async () => {
    const path = join(tempDir(), 'control.db');
    const database = await openDatabase(path);
    onCleanup(() => database.db.destroy());
    const store = new Store(database.db);
    const feed = database.changeFeed({ info() {}, warn() {}, error() {} }, 50);
    vi.useFakeTimers();
    let changes = 0;
    await feed.start(() => changes++);
    onCleanup(() => feed.close());

    await store.putSetting('own', 'write');
    vi.advanceTimersByTime(50);
    expect(changes).toBe(0);

    const other = openSqliteConnection(path);
    other.prepare("insert into settings (key, value) values ('cli', 'write')").run();
    other.close();
    vi.advanceTimersByTime(50);
    expect(changes).toBe(1);
  });
});
