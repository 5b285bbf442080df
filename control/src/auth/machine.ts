import { verifyMachineRequest } from '@weft/protocol';
import { x25519SharedBase64 } from '../crypto/x25519.js';
import { ApiError } from '../errors.js';
import type { ReplayWindow } from './replay-window.js';

/**
 * Checks the machine-key signature of a control request, and that it is not a replay, and returns
 * the machine's public key. The signed path excludes the query string unless `signedQuery`: a route
 * that reads its query (the netmap stream's map token) has it signed; the others read nothing from
 * it, so nothing unsigned matters.
 */
export function authenticateMachine(args: {
  header: string | string[] | undefined;
  controlPrivateKey: string;
  replay: ReplayWindow;
  method: string;
  url: string;
  body: string;
  signedQuery?: boolean;
}): string {
  const result = verifyMachineRequest({
    header: typeof args.header === 'string' ? args.header : undefined,
    controlPrivateKey: args.controlPrivateKey,
    method: args.method,
    path: args.signedQuery === true ? args.url : (args.url.split('?')[0] ?? ''),
    body: args.body,
    secret: (machineKey) => x25519SharedBase64(args.controlPrivateKey, machineKey),
  });
  if ('error' in result) throw new ApiError(401, 'bad-signature', result.error);
  if (!args.replay.admit(result.machineKey, result.nonce, result.seconds)) {
    throw new ApiError(
      401,
      'replayed-signature',
      'this signed request was sent before: sign each request anew',
    );
  }
  return result.machineKey;
}
