// Durations as people type them on the command line of `weft` and `weftd`: 90s, 30m, 1h, 7d, or
// combined like 1h30m. A bare number counts as seconds.

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds, or null when `text` is not a positive duration. */
export function parseDuration(text: string): number | null {
  const t = text.trim();
  if (/^[0-9]{1,9}$/.test(t)) return Number(t) > 0 ? Number(t) * 1000 : null;
  if (!/^([0-9]{1,6}[smhd])+$/.test(t)) return null;
  let ms = 0;
  for (const [, n, unit] of t.matchAll(/([0-9]+)([smhd])/g))
    ms += Number(n) * (UNIT_MS[unit as string] as number);
  return ms > 0 ? ms : null;
}

/** A duration for people: "10m", "1h30m", "45s", "30d". */
export function formatDuration(ms: number): string {
  let left = Math.max(0, Math.round(ms / 1000));
  if (left === 0) return '0s';
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (left >= size) {
      parts.push(`${Math.floor(left / size)}${unit}`);
      left %= size;
    }
  }
  return parts.join('');
}
