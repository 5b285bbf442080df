// Machine names are unique in the tailnet: the second "laptop" becomes "laptop-1", then "laptop-2".
// A name stays a valid hostname label (at most 63 characters, no trailing dash).

const MAX_LABEL = 63;
/** Room kept for a `-N` suffix when the hostname is long. */
const SUFFIX_ROOM = 11;

/** The part of `hostname` that suffixed names start with. */
export function nameStem(hostname: string): string {
  return hostname.slice(0, MAX_LABEL - SUFFIX_ROOM).replace(/-+$/, '');
}

/**
 * The name without a `-N` suffix (`laptop-2` → `laptop`; `laptop` → itself). Stored beside each
 * name and indexed: the names a new one could clash with are its hostname and those whose base is
 * its stem, an equality lookup (a LIKE on the prefix read every name: SQLite's LIKE cannot use the
 * index, nor can PostgreSQL's outside the "C" collation).
 */
export function nameBase(name: string): string {
  return /^(.+)-\d+$/.exec(name)?.[1] ?? name;
}

/** The first free name for `hostname`, given every taken name that equals it or starts with its stem. */
export function uniqueName(hostname: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  if (!used.has(hostname)) return hostname;
  const stem = nameStem(hostname);
  for (let i = 1; ; i++) {
    const candidate = `${stem}-${i}`;
    if (!used.has(candidate)) return candidate;
  }
}

/**
 * A hostname label made from whatever a client reports ("Alice's MacBook Pro" → alices-macbook-pro):
 * lower case, runs of other characters as one dash, at most 63 characters; `node` if nothing is left.
 */
export function hostnameLabel(raw: string): string {
  const label = raw
    .toLowerCase()
    .replace(/['’]/g, '')
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, MAX_LABEL)
    .replace(/^-+|-+$/g, '');
  return label === '' ? 'node' : label;
}
