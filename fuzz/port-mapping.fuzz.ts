import {
  decodeNatPmpAddressAnswer,
  decodeNatPmpMapAnswer,
  decodePcpMapAnswer,
  encodeNatPmpAddressAnswer,
  encodeNatPmpMapAnswer,
  encodePcpMapAnswer,
  parseAddr,
} from '@weft/protocol';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { addr } from './arbitraries.js';
import { accepted, crash, fuzzEntry, mutatedBytes, refused, type Verdict } from './run.js';

// Port-mapping answers as the gateway (or anyone on the LAN) sends them to the mapper's socket
// (protocol/src/port-mapping.ts): genuine NAT-PMP and PCP MAP answers, edited ones, raw bytes.
// Oracle: a decoder never throws; what it accepts is byte for byte the answer it reports (NAT-PMP
// has no reserved bytes; PCP's reserved bytes are the only ones it may ignore), of the right
// length, version and opcode, and for PCP carries our nonce.

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const answer = fc.record({
  result: fc.integer({ min: 0, max: 255 }),
  epoch: u32,
  internalPort: u16,
  externalPort: u16,
  lifetime: u32,
});
const v4 = addr.filter((a) => a.family === 4);
const NONCE = Uint8Array.from({ length: 12 }, (_, i) => 0xa0 + i);
const nonce = fc.oneof(fc.constant(NONCE), fc.uint8Array({ minLength: 12, maxLength: 12 }));

const genuine = fc.oneof(
  fc.tuple(answer, v4).map(([a, ext]) => encodeNatPmpAddressAnswer(a, ext)),
  answer.map((a) => encodeNatPmpMapAnswer(a)),
  fc.tuple(answer, nonce, addr).map(([a, n, ext]) => encodePcpMapAnswer(a, n, ext)),
);
const input = mutatedBytes(genuine);

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);
/** PCP reserved fields (RFC 6887 §7.2, §11.1): byte 2, bytes 12-23, 37-39. */
const unreserved = (m: Uint8Array) =>
  m.filter((_, i) => !(i === 2 || (i >= 12 && i < 24) || (i >= 37 && i < 40)));

function check(msg: Uint8Array): Verdict {
  let verdicts: Verdict[];
  try {
    const address = decodeNatPmpAddressAnswer(msg);
    const map = decodeNatPmpMapAnswer(msg);
    const pcp = decodePcpMapAnswer(msg, NONCE);
    verdicts = [
      address === null
        ? refused
        : same(
              encodeNatPmpAddressAnswer(
                address,
                parseAddr(address.externalAddress) ?? { family: 4, value: 0n },
              ),
              msg,
            )
          ? accepted()
          : accepted(`NAT-PMP address answer accepted as another: ${JSON.stringify(address)}`),
      map === null
        ? refused
        : same(encodeNatPmpMapAnswer(map), msg)
          ? accepted()
          : accepted(`NAT-PMP map answer accepted as another: ${JSON.stringify(map)}`),
      pcp === null
        ? refused
        : msg[0] === 2 &&
            same(
              unreserved(
                encodePcpMapAnswer(pcp, NONCE, parseAddr(pcp.externalAddress) ?? { family: 4, value: 0n }),
              ),
              unreserved(msg),
            )
          ? accepted()
          : accepted(`PCP answer accepted as another: ${JSON.stringify(pcp)}`),
    ];
  } catch (err) {
    return crash(`decoder threw: ${String(err)}`);
  }
  const found = verdicts.filter((v) => 'accepted' in v && v.accepted);
  if (found.length > 1) return accepted('one datagram accepted as two kinds of answer');
  return found[0] ?? refused;
}

it('port-mapping answers: only well-formed NAT-PMP and PCP answers (with our nonce) are accepted, as sent', async () => {
  const stats = await fuzzEntry('port-mapping', input, async (msg) => check(msg));
  expect(stats.acceptedInvalid + stats.crashes).toBe(0);
});
