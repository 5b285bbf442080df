import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { Migrator } from 'kysely';
import { COPY_ORDER, copyDatabase } from '../db/copy.js';
import { isPostgresUrl } from '../db/location.js';
import { migrationProvider } from '../db/migrations.js';
import { type OpenDatabase, openDatabase } from '../db/open.js';
import { CliError } from './admin.js';
import type { CliIo } from './program.js';

// `weft-control db migrate` brings a database's schema up to date (what `serve` also does at
// start), for upgrades run before the replicas restart. `db copy` moves a tailnet from one database
// to an empty one, typically from the SQLite file to PostgreSQL when going to several replicas.

/** `sqlite:PATH`, a plain path (both relative to `cwd`), or a postgres:// URL. */
export function databaseArgument(text: string, cwd: string): string {
  if (isPostgresUrl(text)) return text;
  return resolve(cwd, text.startsWith('sqlite:') ? text.slice('sqlite:'.length) : text);
}

async function withDatabase<T>(location: string, fn: (db: OpenDatabase) => Promise<T>): Promise<T> {
  const db = await openDatabase(location);
  try {
    return await fn(db);
  } finally {
    await db.db.destroy();
  }
}

export function registerDbCommands(program: Command, io: CliIo, dbLocation: (cmd: Command) => string): void {
  const db = program.command('db').description('database schema and moving a tailnet between databases');
  db.command('migrate')
    .description('apply every schema migration the database lacks (serve does it too at start)')
    .action((_opts, cmd: Command) =>
      withDatabase(dbLocation(cmd), async (opened) => {
        const applied = (await new Migrator({ db: opened.db, provider: migrationProvider }).getMigrations())
          .filter((m) => m.executedAt !== undefined)
          .map((m) => m.name);
        io.err(`${opened.shown}: schema up to date (${applied.length} migrations, last ${applied.at(-1)})\n`);
      }),
    );
  db.command('copy')
    .description('copy every user, node, key, policy and setting into an empty database')
    .requiredOption('--from <db>', 'source: sqlite:PATH, a file path, or postgres://…')
    .requiredOption('--to <db>', 'target (must be empty): postgres://USER:PASSWORD@HOST/DB, sqlite:PATH')
    .action((opts: { from: string; to: string }) => {
      const source = databaseArgument(opts.from, io.cwd);
      // Opening a SQLite path creates it: a mistyped source would "copy" an empty tailnet.
      if (!isPostgresUrl(source) && !existsSync(source)) throw new CliError(`no database at ${source}`);
      return withDatabase(source, (from) =>
        withDatabase(databaseArgument(opts.to, io.cwd), async (to) => {
          const counts = await copyDatabase(from.db, to.db);
          const summary = COPY_ORDER.map((t) => `${counts[t]} ${t}`).join(', ');
          io.err(`copied ${from.shown} to ${to.shown}: ${summary}\n`);
        }),
      );
    });
}
