// One value read out of a Prometheus text exposition (format 0.0.4), as control's and the relay's
// /metrics serve it, for the tests and benchmarks that check them. A subpath export
// (@weft/protocol/prometheus): nothing of Weft reads metrics at run time.

/**
 * The value of the sample `name` with `labels` as the exposition writes them (`a="x",b="y"`, in
 * its order; no labels when empty), or undefined when it has no such sample.
 */
export function promSample(text: string, name: string, labels = ''): number | undefined {
  const prefix = labels === '' ? `${name} ` : `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  // The value may be followed by a timestamp.
  return line === undefined ? undefined : Number(line.slice(prefix.length).split(' ')[0]);
}
