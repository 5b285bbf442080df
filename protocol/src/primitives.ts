import { z } from 'zod';
import { parseAddr, parseEndpoint, parsePrefix } from './ip.js';

// Shared field schemas. Every one is strict: a value that is not exactly right is refused.

/** A WireGuard / X25519 key as `wg` prints it: 32 bytes in standard base64. */
export const Key = z
  .string()
  .regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/, 'must be a 32-byte key in base64 (44 characters)');

export const IpAddr = z.string().refine((s) => parseAddr(s) !== null, 'must be an IPv4 or IPv6 address');

/** A prefix whose host bits may be set (an interface address such as 100.64.0.1/10). */
export const IfaceAddr = z
  .string()
  .refine((s) => parsePrefix(s) !== null, 'must be an address/prefix-length');

/** A route: a prefix with no host bits set. */
export const Cidr = z
  .string()
  .refine((s) => parsePrefix(s, { strict: true }) !== null, 'must be a CIDR prefix with no host bits set');

export const Endpoint = z.string().refine((s) => parseEndpoint(s) !== null, 'must be ip:port or [ipv6]:port');

export const Port = z.number().int().min(0).max(65535);

/** A Linux-safe interface name: 1–15 characters, letters, digits, `_` and `-`, starting with a letter. */
export const InterfaceName = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_-]{0,14}$/, 'must be 1-15 letters, digits, _ or -, starting with a letter');

/** A DNS-label-like machine name, as shown to users and used in MagicDNS later. */
export const Hostname = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be lower-case letters, digits and -, at most 63');

export const Timestamp = z.iso.datetime({ offset: true });

export const ErrorBody = z.strictObject({
  error: z.strictObject({ code: z.string(), message: z.string() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
