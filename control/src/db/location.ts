// Where the database is: a SQLite file path, or a postgres:// URL. Kept apart from the drivers so
// configuration can tell the two without loading either.

export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//.test(location);
}

/** The location without any password, for logs and messages. */
export function withoutPassword(location: string): string {
  if (!isPostgresUrl(location)) return location;
  try {
    const u = new URL(location);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return location;
  }
}
