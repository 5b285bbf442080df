import type { DnsSettings } from '@weft/protocol';
import dnsPacket, { type Answer, type DecodedPacket, type Packet } from 'dns-packet';
import { AnswerCache } from './cache.js';
import { canonicalName, type NameRecord, type TailnetNames } from './names.js';
import { exchangeTcp, exchangeUdp, type Upstream, upstreamOf } from './upstream.js';

// The engine's resolver, without sockets: one query's bytes in, the answer's bytes out. Tailnet
// names (and their reverse names) are answered from the netmap; every other name is forwarded, a
// split domain to its own resolvers, the rest to the tailnet's nameservers or else the ones the OS
// had before Weft took over. Every packet is decoded by dns-packet; one that does not decode gets
// FORMERR (or nothing, when not even its header is there), never an exception.

/** Classic DNS over UDP without EDNS: larger answers are truncated (RFC 1035). */
const CLASSIC_UDP_SIZE = 512;
/** The most we send over UDP even if a client offers more (the DNS flag day 2020 figure). */
const MAX_UDP_SIZE = 1232;
/** Tailnet names change with the netmap: short enough that an OS cache follows a rename soon. */
const TAILNET_TTL = 60;
export const UPSTREAM_TIMEOUT_MS = 2000;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface ResolverOptions {
  /** The resolvers the OS had before (from the helper); used when the tailnet sets none. */
  osResolvers: () => readonly string[];
  timeoutMs?: number;
  cacheEntries?: number;
  now?: () => number;
}

export interface ResolverStats {
  queries: number;
  answeredLocally: number;
  forwarded: number;
  cacheHits: number;
  malformed: number;
  failed: number;
}

export class Resolver {
  private names: TailnetNames | null = null;
  private readonly cache: AnswerCache;
  readonly stats: ResolverStats = {
    queries: 0,
    answeredLocally: 0,
    forwarded: 0,
    cacheHits: 0,
    malformed: 0,
    failed: 0,
  };

  constructor(private readonly options: ResolverOptions) {
    this.cache = new AnswerCache(options.cacheEntries ?? 4096, options.now ?? Date.now);
  }

  /** A new netmap: its names answer from now on, and forwarded answers are asked again. */
  setNames(names: TailnetNames | null): void {
    this.names = names;
    this.cache.clear();
  }

  get settings(): DnsSettings | null {
    return this.names?.settings ?? null;
  }

  records(): NameRecord[] {
    return this.names?.records() ?? [];
  }

  /**
   * The answer to `wire`, or null for nothing to send (not a query). `udp`: the client asked over
   * UDP, so an answer larger than it can take goes back truncated (it then asks over TCP).
   */
  async handle(wire: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | null> {
    this.stats.queries++;
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(wire);
    } catch {
      this.stats.malformed++;
      return headerOnly(wire, RCODE.FORMERR);
    }
    if (query.type !== 'query') return null;
    if ((query as { opcode?: string }).opcode !== 'QUERY') return reply(query, RCODE.NOTIMP);
    const question = query.questions?.[0];
    if (question === undefined || query.questions?.length !== 1) return reply(query, RCODE.FORMERR);

    const name = canonicalName(question.name);
    const found = this.names?.lookup(name) ?? { kind: 'forward' as const };
    if (found.kind !== 'forward') this.stats.answeredLocally++;
    switch (found.kind) {
      case 'nxdomain':
        return reply(query, RCODE.NXDOMAIN, [], true);
      case 'ptr':
        return reply(
          query,
          RCODE.NOERROR,
          question.type === 'PTR'
            ? [{ name: question.name, type: 'PTR', ttl: TAILNET_TTL, data: found.fqdn }]
            : [],
          true,
        );
      case 'name': {
        const answers: Answer[] = [];
        // dns-packet names type 255 "ANY" at run time; its types leave it out.
        const any = (question.type as string) === 'ANY';
        if (question.type === 'A' || any)
          for (const a of found.record.v4)
            answers.push({ name: question.name, type: 'A', ttl: TAILNET_TTL, data: a });
        if (question.type === 'AAAA' || any)
          for (const a of found.record.v6)
            answers.push({ name: question.name, type: 'AAAA', ttl: TAILNET_TTL, data: a });
        return reply(query, RCODE.NOERROR, answers, true);
      }
      case 'forward':
        return this.forward(wire, query, name, question.type, transport);
    }
  }

  /** The resolvers for `name`: its split domain's (longest match), else the tailnet's, else the OS's. */
  upstreamsFor(name: string): Upstream[] {
    const settings = this.names?.settings;
    let best: string | null = null;
    for (const domain of Object.keys(settings?.splitDns ?? {})) {
      if (
        (name === domain || name.endsWith(`.${domain}`)) &&
        (best === null || domain.length > best.length)
      ) {
        best = domain;
      }
    }
    const servers =
      best !== null && settings
        ? (settings.splitDns[best] as string[])
        : settings && settings.nameservers.length > 0
          ? settings.nameservers
          : this.options.osResolvers();
    // One entry in an unexpected form must not take the others (and every forwarded name) with it.
    return servers.flatMap((s) => upstreamOf(s) ?? []);
  }

  private async forward(
    wire: Buffer,
    query: DecodedPacket,
    name: string,
    type: string,
    transport: 'udp' | 'tcp',
  ): Promise<Buffer> {
    this.stats.forwarded++;
    const key = `${name}/${type}/${query.questions?.[0]?.class ?? 'IN'}`;
    const id = query.id ?? 0;
    let answer = this.cache.get(key) ?? null;
    if (answer) this.stats.cacheHits++;
    else {
      answer = await this.ask(wire, name);
      if (answer === null) {
        this.stats.failed++;
        return reply(query, RCODE.SERVFAIL);
      }
      // Kept only as the answer to the question asked: an upstream answering another question must
      // not have that served for this name until its TTL runs out.
      if (answersQuestion(answer, name, type, query.questions?.[0]?.class ?? 'IN'))
        this.cache.put(key, answer);
    }
    const out = Buffer.from(answer);
    out.writeUInt16BE(id, 0);
    if (transport === 'udp' && out.length > udpLimitOf(query)) return truncated(query, out);
    return out;
  }

  /** Asks each resolver in turn until one answers; TCP when the UDP answer was truncated. */
  private async ask(wire: Buffer, name: string): Promise<Buffer | null> {
    const timeout = this.options.timeoutMs ?? UPSTREAM_TIMEOUT_MS;
    for (const upstream of this.upstreamsFor(name)) {
      try {
        const answer = await exchangeUdp(wire, upstream, timeout);
        if ((answer.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) === 0) return answer;
        return await exchangeTcp(wire, upstream, timeout);
      } catch {
        // Try the next one: a resolver that is down must not take the names with it.
      }
    }
    return null;
  }
}

/** Whether `answer` carries exactly the one question `name` (any case), `type`, `cls`. */
function answersQuestion(answer: Buffer, name: string, type: string, cls: string): boolean {
  try {
    const questions = dnsPacket.decode(answer).questions ?? [];
    const q = questions[0];
    return (
      questions.length === 1 &&
      q !== undefined &&
      canonicalName(q.name) === name &&
      q.type === type &&
      (q.class ?? 'IN') === cls
    );
  } catch {
    return false;
  }
}

/** The largest UDP answer the client takes: its EDNS payload size (bounded), else 512. */
function udpLimitOf(query: DecodedPacket): number {
  const opt = query.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
  if (opt?.udpPayloadSize === undefined) return CLASSIC_UDP_SIZE;
  return Math.min(Math.max(opt.udpPayloadSize, CLASSIC_UDP_SIZE), MAX_UDP_SIZE);
}

function reply(query: DecodedPacket, rcode: number, answers: Answer[] = [], authoritative = false): Buffer {
  const flags =
    ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
    dnsPacket.RECURSION_AVAILABLE |
    (authoritative ? dnsPacket.AUTHORITATIVE_ANSWER : 0) |
    rcode;
  const packet: Packet = {
    type: 'response',
    id: query.id ?? 0,
    flags,
    questions: query.questions ?? [],
    answers,
  };
  return dnsPacket.encode(packet);
}

/** The answer's header and question with TC set and no records: the client asks again over TCP. */
function truncated(query: DecodedPacket, answer: Buffer): Buffer {
  const flags = (answer.readUInt16BE(2) & 0x7fff) | dnsPacket.TRUNCATED_RESPONSE;
  return dnsPacket.encode({ type: 'response', id: query.id ?? 0, flags, questions: query.questions ?? [] });
}

/** A header-only error answer to a packet that does not decode; nothing when it has no header. */
function headerOnly(wire: Buffer, rcode: number): Buffer | null {
  if (wire.length < 12) return null;
  if ((wire.readUInt16BE(2) & 0x8000) !== 0) return null; // a response: never answer one
  const out = Buffer.alloc(12);
  wire.copy(out, 0, 0, 2);
  out.writeUInt16BE(0x8000 | dnsPacket.RECURSION_AVAILABLE | rcode, 2);
  return out;
}
