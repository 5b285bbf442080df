import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

// Copies a whole control database into an empty one of either kind (SQLite → PostgreSQL when
// moving to replicas; back again works the same). Rows are copied as stored, so every node keeps
// its id, addresses and keys, and control keeps its own keys (nodes pin them). The target must be
// empty: merging two tailnets would clash on names and addresses, and a half-done earlier copy is
// better dropped than topped up. All of it is one transaction on the target: nothing or everything.

/** Parents before children, so every foreign key finds its row. */
export const COPY_ORDER = [
  'settings',
  'users',
  'preauth_keys',
  'nodes',
  'free_ipv4s',
  'pending_logins',
  'auth_attempts',
  'login_confirmations',
  'api_keys',
  'policies',
] as const satisfies readonly (keyof Database)[];

/** Live state of running servers, not the tailnet: a copy starts with every node offline. */
const NOT_COPIED: readonly (keyof Database)[] = ['node_streams', 'replicas'];

/** Rows per INSERT: well under PostgreSQL's 65,535 parameters for the widest table. */
const BATCH = 500;

export class CopyError extends Error {
  override name = 'CopyError';
}

/** Every table of the schema must be in COPY_ORDER, or a copy would silently leave one behind. */
async function checkTablesKnown(db: Kysely<Database>): Promise<void> {
  const known = new Set<string>([...COPY_ORDER, ...NOT_COPIED]);
  const unknown = (await db.introspection.getTables())
    .map((t) => t.name)
    .filter((name) => !name.startsWith('kysely_') && !known.has(name));
  if (unknown.length > 0)
    throw new CopyError(`cannot copy tables this version does not know: ${unknown.join(', ')}`);
}

export async function copyDatabase(
  from: Kysely<Database>,
  to: Kysely<Database>,
): Promise<Record<(typeof COPY_ORDER)[number], number>> {
  await checkTablesKnown(from);
  const counts = {} as Record<(typeof COPY_ORDER)[number], number>;
  await to.transaction().execute(async (trx) => {
    for (const table of COPY_ORDER) {
      const row = await trx
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirst();
      const n = Number(row?.n ?? 0);
      if (n > 0) {
        throw new CopyError(
          `the target database is not empty (table ${table} has ${n} row${n === 1 ? '' : 's'}); copy only into a new, empty database`,
        );
      }
    }
    for (const table of COPY_ORDER) {
      const rows = await from.selectFrom(table).selectAll().execute();
      for (let i = 0; i < rows.length; i += BATCH) {
        // Rows of `table` go back into `table` column for column; TS cannot see that across the union.
        await trx
          .insertInto(table)
          .values(rows.slice(i, i + BATCH) as never)
          .execute();
      }
      counts[table] = rows.length;
    }
  });
  return counts;
}
