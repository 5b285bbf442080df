import { parseAddr, parsePrefix } from '@weft/protocol';
import { z } from 'zod';

// The tailnet as the policy compiler sees it: users, and nodes with their identity (a user or
// tags), addresses and routes. This is the shape of a conformance case's `users` and `nodes`,
// which is also what control hands the engine.

const ip = (family: 4 | 6) =>
  z.string().refine((s) => parseAddr(s)?.family === family, { message: `not a valid IPv${family} address` });

const route = z.string().refine((s) => parsePrefix(s, { strict: true }) !== null, {
  message: 'not a valid CIDR prefix (host bits must be zero)',
});

export const TailnetUser = z.strictObject({
  name: z.string().min(1),
  email: z.string().optional(),
  /**
   * `group:NAME`s the user is in through the identity provider. A policy group declared in
   * `groups` holds its listed users and these; conformance cases have none.
   */
  groups: z.array(z.string()).optional(),
});
export type TailnetUser = z.infer<typeof TailnetUser>;

export const TailnetNode = z.strictObject({
  /** The owning user's name; ignored for tagged nodes, whose identity is their tags. */
  user: z.string().min(1).optional(),
  tags: z.array(z.string()).default([]),
  ipv4: ip(4).optional(),
  ipv6: ip(6).optional(),
  advertisedRoutes: z.array(route).default([]),
  /** Routes an admin approved; routes the policy's autoApprovers cover are approved too. */
  approvedRoutes: z.array(route).default([]),
  /**
   * Routes for which control elected this node the primary among routers sharing the exact
   * prefix (high availability). Without it the first such router in `nodes` order is primary,
   * as Tailscale makes the first advertiser primary.
   */
  primaryRoutes: z.array(route).optional(),
});
export type TailnetNodeInput = z.input<typeof TailnetNode>;
export type TailnetNode = z.infer<typeof TailnetNode>;

export const Tailnet = z.strictObject({
  users: z.array(TailnetUser),
  /** Node name to node, in registration order. */
  nodes: z.record(z.string().min(1), TailnetNode),
});
export type Tailnet = z.infer<typeof Tailnet>;
export type TailnetInput = z.input<typeof Tailnet>;

/** Validates a tailnet description; messages name the offending field. */
export function parseTailnet(value: unknown): Tailnet {
  const result = Tailnet.safeParse(value);
  if (result.success) return result.data;
  const details = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  throw new Error(`invalid tailnet: ${details.join('; ')}`);
}
