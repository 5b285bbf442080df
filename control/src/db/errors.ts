// Which database errors mean "try the transaction again" or "that value is taken". Kept here so the
// codes of each dialect stay in the db layer (SQLite's error codes; PostgreSQL's SQLSTATEs).

function codeOf(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
}

export function isUniqueViolation(err: unknown): boolean {
  const code = codeOf(err);
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** Another writer got in first (another process, or another replica). */
export function isBusy(err: unknown): boolean {
  const code = codeOf(err);
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED') || code === '40001';
}

/**
 * Runs `fn` again when it lost a race with another writer: a busy database, or a unique value (name,
 * address) taken between our read and our insert. `fn` must be a whole transaction.
 */
export async function retryConflicts<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !(isBusy(err) || isUniqueViolation(err))) throw err;
      await new Promise((resolve) => setTimeout(resolve, 10 * i));
    }
  }
}
