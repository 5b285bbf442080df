import { z } from 'zod';
import { NodeView } from './netmap.js';
import { Hostname, Key } from './primitives.js';

// The node ↔ control HTTP API. Every /machine/ request is signed with the machine key: the header
// `Weft-Machine-Auth: <machineKey>.<unix seconds>.<base64 HMAC-SHA256>` where the HMAC key is the
// X25519 shared secret of the machine key and control's key (GET /machine/key), over
// `METHOD\nPATH\nSECONDS\nSHA256(body) hex`. Control rejects signatures older than 2 minutes.

export const MACHINE_AUTH_HEADER = 'weft-machine-auth';
export const MACHINE_AUTH_MAX_SKEW_SECONDS = 120;

export const ControlKeyResponse = z.strictObject({ publicKey: Key });

export const RegisterRequest = z.strictObject({
  nodeKey: Key,
  hostname: Hostname,
  os: z.string().max(64),
  /** A pre-auth key; without one, control answers with an auth URL (interactive login). */
  authKey: z.string().min(1).max(256).optional(),
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const RegisterResponse = z.discriminatedUnion('status', [
  z.strictObject({ status: z.literal('authorized'), node: NodeView }),
  z.strictObject({ status: z.literal('needs-auth'), authUrl: z.string().url() }),
]);
export type RegisterResponse = z.infer<typeof RegisterResponse>;

export const STREAM_PATH = '/machine/stream';
export const REGISTER_PATH = '/machine/register';
export const CONTROL_KEY_PATH = '/machine/key';
