import { z } from 'zod';
import { ApiError } from '../errors.js';

/** Parses a JSON message against its wire schema; a 400 with zod's description of what is wrong otherwise. */
export function parseMessage<T>(text: string, schema: z.ZodType<T>): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ApiError(
      400,
      'malformed-request',
      `not valid JSON: ${err instanceof Error ? err.message : err}`,
    );
  }
  return parseValue(value, schema);
}

/** Checks a value (a parsed query, a parsed body) against its wire schema; a 400 as parseMessage's otherwise. */
export function parseValue<T>(value: unknown, schema: z.ZodType<T>): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new ApiError(400, 'malformed-request', z.prettifyError(result.error));
  return result.data;
}
