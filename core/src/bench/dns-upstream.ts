import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import dnsPacket, { type Answer } from 'dns-packet';

// A small authoritative DNS server for the dns benchmark and the resolver tests, on loopback or a lab host: A
// records from a table, NXDOMAIN otherwise, and one "big" name whose answer does not fit in UDP (so
// the resolver's TCP fallback is exercised). It counts what it was asked, over which transport.

export interface TestUpstream {
  port: number;
  /** Every question asked: the name, the transport and the asker's address. */
  queries: { name: string; transport: 'udp' | 'tcp'; from: string }[];
  close(): Promise<void>;
}

/** 60 TXT records of 100 bytes: about 6.6 KB, more than any UDP answer the resolver sends. */
export const BIG_NAME = 'big.upstream.example';

function answerTo(wire: Buffer, records: Record<string, string>, transport: 'udp' | 'tcp'): Buffer | null {
  let query: ReturnType<typeof dnsPacket.decode>;
  try {
    query = dnsPacket.decode(wire);
  } catch {
    return null;
  }
  const q = query.questions?.[0];
  if (!q) return null;
  const name = q.name.toLowerCase();
  const answers: Answer[] = [];
  let flags = dnsPacket.AUTHORITATIVE_ANSWER;
  if (name === BIG_NAME) {
    for (let i = 0; i < 60; i++) answers.push({ name: q.name, type: 'TXT', ttl: 30, data: 'x'.repeat(100) });
  } else if (records[name] && q.type === 'A') {
    answers.push({ name: q.name, type: 'A', ttl: 30, data: records[name] });
  } else if (!records[name]) {
    flags |= 3; // NXDOMAIN
  }
  const answer = dnsPacket.encode({ type: 'response', id: query.id, flags, questions: [q], answers });
  if (transport === 'udp' && answer.length > 512) {
    return dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: flags | dnsPacket.TRUNCATED_RESPONSE,
      questions: [q],
    });
  }
  return answer;
}

export async function startTestUpstream(
  records: Record<string, string>,
  host = '127.0.0.1',
  port = 0,
  /** Also told every question (a lab host's resolver prints them for the test to read). */
  onQuery: (q: TestUpstream['queries'][number]) => void = () => {},
): Promise<TestUpstream> {
  // With port 0 the free UDP port's TCP twin may be taken (by any outgoing connection's port):
  // then another one is tried, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(records, host, port, onQuery);
    } catch (err) {
      if (port !== 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw err;
    }
  }
}

async function startOnce(
  records: Record<string, string>,
  host: string,
  port: number,
  onQuery: (q: TestUpstream['queries'][number]) => void,
): Promise<TestUpstream> {
  const queries: TestUpstream['queries'] = [];
  const record = (q: TestUpstream['queries'][number]) => {
    queries.push(q);
    onQuery(q);
  };
  const udp: Socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => udp.bind(port, host, resolve));
  udp.on('message', (msg, rinfo) => {
    const q = safeName(msg);
    if (q) record({ name: q, transport: 'udp', from: rinfo.address });
    const answer = answerTo(msg, records, 'udp');
    if (answer) udp.send(answer, rinfo.port, rinfo.address);
  });
  const bound = udp.address().port;
  const tcp: Server = createServer((socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + msg.length);
        const q = safeName(msg);
        if (q) record({ name: q, transport: 'tcp', from: socket.remoteAddress ?? '' });
        const answer = answerTo(Buffer.from(msg), records, 'tcp');
        if (answer) {
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(answer.length);
          socket.write(Buffer.concat([prefix, answer]));
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(bound, host, () => {
      tcp.off('error', reject);
      resolve();
    });
  }).catch((err) => {
    udp.close();
    throw err;
  });
  return {
    port: bound,
    queries,
    close: async () => {
      udp.close();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}

function safeName(msg: Buffer): string | null {
  try {
    return dnsPacket.decode(msg).questions?.[0]?.name.toLowerCase() ?? null;
  } catch {
    return null;
  }
}
