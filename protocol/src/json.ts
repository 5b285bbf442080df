import type { z } from 'zod';

/** `text` as JSON of `schema`'s shape, or null when it is not JSON or not that shape. */
export function parseJsonAs<T extends z.ZodType>(schema: T, text: string): z.infer<T> | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}
