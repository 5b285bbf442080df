// Command-line options of the relay's benchmarks: `--name N` pairs, whole numbers within bounds.

/** `defaults` with each `--name N` of `argv` over it; an unknown name or a value out of bounds throws `usage`. */
export function parseWholeOptions<K extends string>(
  argv: string[],
  defaults: Record<K, number>,
  bounds: Record<K, [number, number]>,
  usage: string,
): Record<K, number> {
  const opts = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i]?.replace(/^--/, '') as K;
    const value = Number(argv[i + 1]);
    const range = Object.hasOwn(bounds, name) ? bounds[name] : undefined;
    if (range === undefined || !Number.isInteger(value) || value < range[0] || value > range[1]) {
      throw new Error(`usage: ${usage}`);
    }
    opts[name] = value;
  }
  return opts;
}
