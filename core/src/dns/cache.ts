import dnsPacket from 'dns-packet';

// Forwarded answers, kept for as long as their records say (at most MAX_TTL_S) and at most
// `capacity` of them: the least recently used goes first, so a flood of distinct names cannot grow
// memory. Answers are served as they were received (their TTLs are not counted down).

const MAX_TTL_S = 300;

interface Entry {
  answer: Buffer;
  expires: number;
}

export class AnswerCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly capacity: number,
    private readonly now: () => number,
  ) {}

  get(key: string): Buffer | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    if (entry.expires <= this.now()) return undefined;
    this.entries.set(key, entry); // most recently used last
    return entry.answer;
  }

  put(key: string, answer: Buffer): void {
    const ttl = minTtl(answer);
    if (ttl <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { answer, expires: this.now() + Math.min(ttl, MAX_TTL_S) * 1000 });
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * The smallest TTL among an answer's records, read by dns-packet; an answer that does not decode,
 * or has no records (a negative answer without SOA), is not kept.
 */
function minTtl(answer: Buffer): number {
  try {
    const packet = dnsPacket.decode(answer);
    if (packet.flag_tc) return 0;
    const ttls = [...(packet.answers ?? []), ...(packet.authorities ?? [])]
      .map((r) => (r as { ttl?: number }).ttl)
      .filter((t): t is number => t !== undefined);
    return ttls.length === 0 ? 0 : Math.min(...ttls);
  } catch {
    return 0;
  }
}
