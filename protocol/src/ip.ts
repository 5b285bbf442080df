// Strict IP, prefix and endpoint parsing with bigint arithmetic.
// Hand-written because every boundary needs a strict parser (no octal, hex or short IPv4 forms,
// no zone ids) and the policy compiler needs range arithmetic over both families, which the
// usual libraries (ipaddr.js, node:net) do not offer together. Pure: runs in Node and browsers.

export type Family = 4 | 6;

export interface Addr {
  family: Family;
  /** The address as an unsigned integer (32 or 128 bits). */
  value: bigint;
}

export interface Prefix {
  addr: Addr;
  bits: number;
}

const V4_PART = /^(0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

export function parseIPv4(text: string): bigint | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!V4_PART.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

export function parseIPv6(text: string): bigint | null {
  if (text.length > 45 || text.length < 2) return null;
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groupsOf = (s: string): bigint[] | null => {
    if (s === '') return [];
    const out: bigint[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as string;
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIPv4(p);
        if (v4 === null) return null;
        out.push(v4 >> 16n, v4 & 0xffffn);
      } else if (HEX_GROUP.test(p)) {
        out.push(BigInt(`0x${p}`));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] as string);
  const tail = halves.length === 2 ? groupsOf(halves[1] as string) : [];
  if (head === null || tail === null) return null;
  let groups: bigint[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return null;
    groups = [...head, ...new Array<bigint>(missing).fill(0n), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return null;
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

export function parseAddr(text: string): Addr | null {
  if (text.includes(':')) {
    const v = parseIPv6(text);
    return v === null ? null : { family: 6, value: v };
  }
  const v = parseIPv4(text);
  return v === null ? null : { family: 4, value: v };
}

export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

export function formatAddr(addr: Addr): string {
  if (addr.family === 4) {
    const v = addr.value;
    return [24n, 16n, 8n, 0n].map((s) => ((v >> s) & 0xffn).toString()).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((addr.value >> BigInt(i * 16)) & 0xffffn));
  // Compress the longest run of two or more zero groups (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses `addr/bits`. With `strict`, host bits set after the prefix are an error (as in a route). */
export function parsePrefix(text: string, opts: { strict?: boolean } = {}): Prefix | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const addr = parseAddr(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  if (addr === null || !/^(0|[1-9][0-9]{0,2})$/.test(bitsText)) return null;
  const bits = Number(bitsText);
  if (bits > familyBits(addr.family)) return null;
  if (opts.strict && maskAddr(addr, bits).value !== addr.value) return null;
  return { addr, bits };
}

export function maskAddr(addr: Addr, bits: number): Addr {
  const total = familyBits(addr.family);
  const hostBits = BigInt(total - bits);
  return { family: addr.family, value: (addr.value >> hostBits) << hostBits };
}

export function formatPrefix(p: Prefix): string {
  return `${formatAddr(p.addr)}/${p.bits}`;
}

/** Canonical form of a prefix text (host bits cleared, compressed IPv6), or null when invalid. */
export function canonicalPrefix(text: string): string | null {
  const p = parsePrefix(text);
  return p === null ? null : formatPrefix({ addr: maskAddr(p.addr, p.bits), bits: p.bits });
}

export function prefixContains(p: Prefix, a: Addr): boolean {
  return p.addr.family === a.family && maskAddr(a, p.bits).value === maskAddr(p.addr, p.bits).value;
}

/** Parses `ip:port` or `[ipv6]:port`. */
export function parseEndpoint(text: string): { addr: Addr; port: number } | null {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']:');
    if (close < 0) return null;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!host.includes(':')) return null;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return null;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return null;
  }
  const addr = parseAddr(host);
  if (addr === null || !/^[1-9][0-9]{0,4}$/.test(portText)) return null;
  const port = Number(portText);
  if (port > 65535) return null;
  return { addr, port };
}

export function formatEndpoint(addr: Addr, port: number): string {
  return addr.family === 6 ? `[${formatAddr(addr)}]:${port}` : `${formatAddr(addr)}:${port}`;
}

/** An inclusive run of addresses of one family, as the policy compiler's set arithmetic uses. */
export interface AddrRange {
  family: Family;
  first: bigint;
  last: bigint;
}

export function prefixRange(p: Prefix): AddrRange {
  const hostBits = BigInt(familyBits(p.addr.family) - p.bits);
  const first = (p.addr.value >> hostBits) << hostBits;
  return { family: p.addr.family, first, last: first | ((1n << hostBits) - 1n) };
}

/** An inclusive run of integers (addresses of one family, or ports). */
export interface Span {
  first: bigint;
  last: bigint;
}

/** The union of spans as sorted, disjoint, non-adjacent spans. */
export function mergeSpans(spans: readonly Span[]): Span[] {
  const sorted = [...spans].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const out: Span[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && s.first <= last.last + 1n) {
      if (s.last > last.last) last.last = s.last;
    } else {
      out.push({ ...s });
    }
  }
  return out;
}

/** Parses `a-b` as Tailscale writes address ranges: both ends in one family, a ≤ b. */
export function parseAddrRange(text: string): AddrRange | null {
  const dash = text.indexOf('-');
  if (dash < 0) return null;
  const first = parseAddr(text.slice(0, dash));
  const last = parseAddr(text.slice(dash + 1));
  if (first === null || last === null || first.family !== last.family || first.value > last.value)
    return null;
  return { family: first.family, first: first.value, last: last.value };
}

/** The fewest prefixes that cover exactly the range. */
export function rangeToPrefixes(r: AddrRange): Prefix[] {
  const total = familyBits(r.family);
  const out: Prefix[] = [];
  let start = r.first;
  while (start <= r.last) {
    // Grow the block while it stays aligned on `start` and inside the range.
    let hostBits = 0;
    while (hostBits < total) {
      const size = 1n << BigInt(hostBits + 1);
      if (start % size !== 0n || start + size - 1n > r.last) break;
      hostBits++;
    }
    out.push({ addr: { family: r.family, value: start }, bits: total - hostBits });
    start += 1n << BigInt(hostBits);
  }
  return out;
}
