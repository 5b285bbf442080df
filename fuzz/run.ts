import { appendFileSync } from 'node:fs';
import fc from 'fast-check';
import { inject } from 'vitest';

// The fuzz runner: fast-check drives one entry point with FUZZ_RUNS generated inputs (default
// 10,000) from FUZZ_SEED (random unless given, always printed), and checks two oracles on every
// input: what the entry point accepted must satisfy the schema and invariants ("accepted but
// invalid"), and nothing may crash (a 5xx, an unhandled rejection, a server that stops answering).
// Either fails the property, so fast-check prints the seed, the replay path and the (shrunk) input.

export const RUNS = positiveInt('FUZZ_RUNS', 10_000);
export const SEED = process.env.FUZZ_SEED ? integer('FUZZ_SEED', 0) : Date.now() % 2 ** 31;

/** What one input did: accepted (and whether that was right), refused, or a crash. */
export type Verdict = { accepted: true; invalid?: string } | { accepted: false } | { crash: string };

export const accepted = (invalid?: string): Verdict =>
  invalid === undefined ? { accepted: true } : { accepted: true, invalid };
export const refused: Verdict = { accepted: false };
export const crash = (what: string): Verdict => ({ crash: what });

export interface EntryStats {
  entry: string;
  tried: number;
  accepted: number;
  acceptedInvalid: number;
  crashes: number;
  ms: number;
}

class FuzzFailure extends Error {}

/**
 * Runs `check` on `RUNS` inputs from `arb` (valid messages, mutations of them and raw bytes mixed
 * by the caller) and records the counts for the closing table. Throws on the first failure.
 */
export async function fuzzEntry<T>(
  entry: string,
  arb: fc.Arbitrary<T>,
  check: (input: T) => Promise<Verdict>,
  runs = RUNS,
): Promise<EntryStats> {
  const stats: EntryStats = { entry, tried: 0, accepted: 0, acceptedInvalid: 0, crashes: 0, ms: 0 };
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  process.on('unhandledRejection', onRejection);
  // Shrinking re-runs the property on smaller inputs; only the search counts as inputs tried.
  let failed = false;
  const started = performance.now();
  console.log(`fuzz ${entry}: ${runs} inputs, FUZZ_SEED=${SEED}`);
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (input) => {
        const count = (field: 'tried' | 'accepted' | 'acceptedInvalid' | 'crashes') => {
          if (!failed) stats[field]++;
        };
        const fail = (what: string) => {
          failed = true;
          throw new FuzzFailure(`${what}\ninput: ${render(input)}`);
        };
        count('tried');
        const verdict = await check(input);
        const rejection = rejections.shift();
        if (rejection !== undefined) {
          count('crashes');
          fail(`crash: unhandled rejection: ${String(rejection)}`);
        }
        if ('crash' in verdict) {
          count('crashes');
          fail(`crash: ${verdict.crash}`);
        } else if (verdict.accepted) {
          count('accepted');
          if (verdict.invalid !== undefined) {
            count('acceptedInvalid');
            fail(`accepted but invalid: ${verdict.invalid}`);
          }
        }
      }),
      { numRuns: runs, seed: SEED },
    );
  } finally {
    process.off('unhandledRejection', onRejection);
    stats.ms = Math.round(performance.now() - started);
    report(stats);
  }
  return stats;
}

/** The input as JSON, bytes shown as text (with escapes) so a failing line can be read and replayed. */
function render(input: unknown): string {
  return JSON.stringify(input, (_k, v) =>
    v instanceof Uint8Array || (v && v.type === 'Buffer' && Array.isArray(v.data))
      ? { bytes: Buffer.from(v instanceof Uint8Array ? v : v.data).toString('utf8') }
      : typeof v === 'bigint'
        ? String(v)
        : v,
  );
}

/** Appends the entry's counts where the global teardown reads them for the summary table. */
function report(stats: EntryStats): void {
  appendFileSync(inject('fuzzStatsFile'), `${JSON.stringify(stats)}\n`);
}

/** One change to a byte string: flip a bit, set a byte, cut the rest, or insert a few bytes. */
export type ByteEdit =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'cut'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array };

export const byteEdits: fc.Arbitrary<ByteEdit[]> = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 8 }) }),
  ),
  { minLength: 1, maxLength: 4 },
);

/** Applies `edits` to a copy of `bytes` (positions wrap around its length). */
export function applyEdits(bytes: Uint8Array, edits: readonly ByteEdit[]): Uint8Array {
  let out = Uint8Array.from(bytes);
  for (const e of edits) {
    const at = out.length === 0 ? 0 : e.at % (out.length + 1);
    if (e.kind === 'flip' && at < out.length) out[at] = (out[at] as number) ^ (1 << e.bit);
    else if (e.kind === 'set' && at < out.length) out[at] = e.value;
    else if (e.kind === 'cut') out = out.subarray(0, at);
    else if (e.kind === 'insert')
      out = Uint8Array.from([...out.subarray(0, at), ...e.bytes, ...out.subarray(at)]);
  }
  return out;
}

/** Bytes that are mostly `valid` with a few changes, or anything at all: the two halves of every mix. */
export function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  const mutated = fc.tuple(valid, byteEdits).map(([bytes, edits]) => applyEdits(bytes, edits));
  return fc.oneof(mutated, fc.uint8Array({ maxLength: 256 }));
}

/**
 * JSON text for a message: the valid one, the valid one with one field replaced by any JSON value
 * or a word of the entry point's `vocabulary` (or removed, or an extra field added), a structural
 * mutation of its text, or random text.
 */
export function mutatedJson(
  valid: fc.Arbitrary<unknown>,
  vocabulary: readonly unknown[] = [],
): fc.Arbitrary<string> {
  const words =
    vocabulary.length > 0
      ? [fc.constantFrom(...vocabulary), fc.array(fc.constantFrom(...vocabulary), { maxLength: 4 })]
      : [];
  const replacement = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined), ...words);
  const fieldEdit = fc
    .tuple(valid, fc.nat(), replacement, fc.string())
    .map(([value, pick, replacement, extraKey]) =>
      JSON.stringify(editField(value, pick, replacement, extraKey)),
    );
  const textEdit = valid.chain((value) =>
    mutatedBytes(fc.constant(new TextEncoder().encode(JSON.stringify(value)))).map((b) =>
      Buffer.from(b).toString('utf8'),
    ),
  );
  return fc.oneof(
    { weight: 3, arbitrary: valid.map((v) => JSON.stringify(v)) },
    { weight: 4, arbitrary: fieldEdit },
    { weight: 2, arbitrary: textEdit },
    { weight: 1, arbitrary: fc.oneof(fc.json({ maxDepth: 3 }), fc.string({ maxLength: 64 })) },
  );
}

/** Replaces (or, with `undefined`, removes) one field found by a walk of `value`; or adds one. */
function editField(value: unknown, pick: number, replacement: unknown, extraKey: string): unknown {
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]) => {
    if (path.length > 0) paths.push(path);
    if (Array.isArray(v))
      v.forEach((item, i) => {
        walk(item, [...path, i]);
      });
    else if (v !== null && typeof v === 'object')
      for (const [k, item] of Object.entries(v)) walk(item, [...path, k]);
  };
  walk(value, []);
  const copy = structuredClone(value) as Record<string | number, unknown>;
  if (paths.length === 0 || pick % (paths.length + 1) === paths.length) {
    if (copy !== null && typeof copy === 'object' && !Array.isArray(copy))
      copy[extraKey] = replacement ?? null;
    return copy;
  }
  const path = paths[pick % paths.length] as (string | number)[];
  let parent = copy as Record<string | number, unknown>;
  for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, unknown>;
  const last = path[path.length - 1] as string | number;
  if (replacement === undefined && !Array.isArray(parent)) delete parent[last];
  else parent[last] = replacement ?? null;
  return copy;
}

function positiveInt(name: string, fallback: number): number {
  return process.env[name] ? integer(name, 1) : fallback;
}

function integer(name: string, min: number): number {
  const text = process.env[name] as string;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min)
    throw new Error(`${name} must be an integer >= ${min}, got '${text}'`);
  return n;
}
