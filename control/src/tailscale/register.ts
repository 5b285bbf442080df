import {
  isZeroTailscaleKey,
  keyFromTailscale,
  TS_MIN_CAPABILITY_VERSION,
  type TsRegisterRequest,
  type TsRegisterResponse,
} from '@weft/protocol';
import { type RegistrationCaller, registerMachine, type UnprovenRegisterRequest } from '../auth/register.js';
import { ApiError } from '../errors.js';
import type { ControlContext } from '../server/context.js';
import { hostnameLabel } from '../tailnet/names.js';
import { isExpired } from '../tailnet/records.js';
import { tsUserProfile } from './tailcfg-views.js';

// POST /machine/register from a Tailscale client, on the machine key its ts2021 handshake proved:
// translated into Weft's RegisterRequest and passed through the same registration service as Weft
// nodes (pre-auth keys, the same browser sign-in, expiry, key rotation). Refusals come back in the
// response's Error, which the client prints; nothing is stored for a refused request.

/** How many times a follow-up is held (each LOGIN_WAIT_SECONDS) before the client is told to retry. */
const FOLLOWUP_ROUNDS = 5;
const ZERO_TIME = /^0001-01-01/;

export function tooOldMessage(version: number): string {
  return (
    `this Tailscale client is too old (capability version ${version}): Weft supports Tailscale ` +
    `v1.84 and later (capability version ${TS_MIN_CAPABILITY_VERSION}+); update the client`
  );
}

const refusal = (message: string): TsRegisterResponse => ({
  NodeKeyExpired: false,
  MachineAuthorized: false,
  AuthURL: '',
  Error: message,
});

export async function registerTailscale(
  ctx: ControlContext,
  caller: RegistrationCaller,
  req: TsRegisterRequest,
  gone: () => boolean = () => false,
): Promise<TsRegisterResponse> {
  if (req.Version < TS_MIN_CAPABILITY_VERSION) return refusal(tooOldMessage(req.Version));
  const { machineKey } = caller;
  const nodeKey = keyFromTailscale(req.NodeKey, 'nodekey');
  const now = ctx.registration.now();

  // An expiry in the past is `tailscale logout`: the key stops working, the node stays.
  if (req.Expiry && !ZERO_TIME.test(req.Expiry) && Date.parse(req.Expiry) <= now.getTime()) {
    const node = await ctx.store.nodeByMachineKey(machineKey);
    if (node !== undefined && node.nodeKey === nodeKey && !isExpired(node, now)) {
      await ctx.store.updateNode(node.id, { keyExpiry: now.toISOString() });
      await ctx.sync.refreshNodes([node.id]);
      ctx.log.info(`${node.name} (tailscale) logged out`);
    }
    return { NodeKeyExpired: true, MachineAuthorized: false, AuthURL: '' };
  }

  const oldNodeKey =
    req.OldNodeKey && !isZeroTailscaleKey(req.OldNodeKey) && req.OldNodeKey !== req.NodeKey
      ? keyFromTailscale(req.OldNodeKey, 'nodekey')
      : undefined;
  const authKey = req.Auth?.AuthKey ? req.Auth.AuthKey : undefined;
  const request: UnprovenRegisterRequest = {
    nodeKey,
    hostname: hostnameLabel(req.Hostinfo?.Hostname ?? ''),
    os: (req.Hostinfo?.OS ?? '').slice(0, 64),
    ...(authKey ? { authKey } : {}),
    ...(oldNodeKey ? { oldNodeKey } : {}),
    ...(req.Followup ? { wait: true } : {}),
  };

  let result: Awaited<ReturnType<typeof registerMachine>>;
  try {
    result = await registerMachine(ctx.registration, caller, request, { machineKeyOnly: true });
    // A follow-up is a long poll: hold it while the person is still signing in.
    for (let round = 1; result.status === 'needs-auth' && request.wait && round < FOLLOWUP_ROUNDS; round++) {
      if (gone()) break;
      result = await registerMachine(ctx.registration, caller, request, { machineKeyOnly: true });
    }
  } catch (err) {
    if (err instanceof ApiError) return refusal(err.message);
    throw err;
  }
  if (result.status === 'needs-auth') {
    return { NodeKeyExpired: false, MachineAuthorized: false, AuthURL: result.authUrl };
  }

  await ctx.store.updateNode(result.nodeId, {
    kind: 'tailscale',
    // A client that keeps no state (`--state=mem:`) asks to be removed once offline; asking can
    // only shorten its own life, so it is granted.
    ...(req.Ephemeral === true ? { ephemeral: true } : {}),
    ...(req.Hostinfo?.IPNVersion ? { clientVersion: req.Hostinfo.IPNVersion.slice(0, 128) } : {}),
  });
  await ctx.sync.refreshNodes([result.nodeId]);
  const node = await ctx.store.nodeById(result.nodeId);
  if (node === undefined) throw new Error(`registered node ${result.nodeId} vanished`);
  ctx.log.info(`registered ${node.name} (tailscale ${node.clientVersion ?? '?'}, ${node.ipv4})`);
  ctx.metrics.registrations.inc({ protocol: 'tailscale' });
  const profile = tsUserProfile(node.tags.length > 0 ? null : node.userName);
  return {
    User: { ...profile, Logins: [], Created: node.createdAt },
    Login: { ...profile, Provider: 'weft' },
    NodeKeyExpired: false,
    MachineAuthorized: true,
    AuthURL: '',
  };
}
