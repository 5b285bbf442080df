import type { ErrorBody } from '@weft/protocol';

/** A refusal the client should see as it is: HTTP status plus a stable code and a plain message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}
