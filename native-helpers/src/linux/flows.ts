import { type Family, parseAddr } from '@weft/protocol';
import { z } from 'zod';

// The tunnel table's flow sets (replies to this machine's own UDP, `renderReplies` in nft.ts) are
// filled by the packet path, and replacing the table empties them: a flow quiet in this machine's
// direction (a stream it only receives) would have its replies dropped until it sent again. So a
// replacement carries each flow over with the time it had left, in the same transaction.

/**
 * A flow as `nft -j list set` shows it: where this machine sent (address and port), from which of its
 * addresses and ports, and the time left.
 */
export interface Flow {
  addr: string;
  dport: number;
  local: string;
  sport: number;
  /** Seconds left; a flow with less than one is not carried. */
  expires: number;
}

const port = z.number().int().min(0).max(65_535);

const listing = z.object({
  // Other entries (the metainfo) have no `set`.
  nftables: z.array(
    z.object({
      set: z
        .object({
          elem: z
            .array(
              z.object({
                elem: z.object({
                  val: z.object({ concat: z.tuple([z.string(), port, z.string(), port]) }),
                  expires: z.number().int().nonnegative().optional(),
                }),
              }),
            )
            .optional(),
        })
        .optional(),
    }),
  ),
});

/** The flows in one set's listing; throws on a listing of another shape or a foreign address. */
export function parseFlows(json: string, family: Family): Flow[] {
  const flows: Flow[] = [];
  for (const item of listing.parse(JSON.parse(json)).nftables) {
    for (const { elem } of item.set?.elem ?? []) {
      const [addr, dport, local, sport] = elem.val.concat;
      for (const a of [addr, local]) {
        if (parseAddr(a)?.family !== family)
          throw new Error(`not an IPv${family} address in a flow set: ${JSON.stringify(a)}`);
      }
      if (elem.expires !== undefined && elem.expires >= 1)
        flows.push({ addr, dport, local, sport, expires: elem.expires });
    }
  }
  return flows;
}

/** The `nft -f` line that puts the flows back into the new table's set; empty when there are none. */
export function renderFlows(family: string, table: string, set: string, flows: readonly Flow[]): string {
  if (flows.length === 0) return '';
  const elements = flows.map((f) => `${f.addr} . ${f.dport} . ${f.local} . ${f.sport} expires ${f.expires}s`);
  return `add element ${family} ${table} ${set} { ${elements.join(', ')} }\n`;
}
