// Durations as admins type them: 90s, 30m, 1h, 7d, or combined like 1h30m.

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string): number | null {
  if (!/^([0-9]{1,6}[smhd])+$/.test(text)) return null;
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)([smhd])/g))
    ms += Number(n) * (UNIT_MS[unit as string] as number);
  return ms > 0 ? ms : null;
}
