import { createPrivateKey, createPublicKey } from 'node:crypto';
import {
  canonicalPrefix,
  type DesiredState,
  describeExitRoute,
  exitRouteFamilies,
  formatAddr,
  HelperRequest,
  type Prefix,
  parseAddr,
  parsePrefix,
} from '@weft/protocol';
import { z } from 'zod';
import { inAny, UNASSIGNABLE, UNROUTABLE } from './reserved.js';

// Turns one request line into a validated HelperRequest or a message that names the field and the
// problem. Beyond the shared schema it refuses states that WireGuard or the kernel would silently
// reshape (a peer with our own key, one prefix given to two peers, kernel-managed addresses): those
// would never read back as asked, so applying them could not be idempotent.

export type ParsedLine =
  | { ok: true; request: HelperRequest }
  | { ok: false; id: number | null; message: string };

type Path = readonly PropertyKey[];

const MAX_REPORTED_PROBLEMS = 5;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function parseRequestLine(line: Buffer): ParsedLine {
  const decoded = decodeLine(line);
  return decoded.ok ? validateRequest(decoded.json) : decoded;
}

/** An apply request with its state left unchecked: what is around a state already checked. */
const ApplyEnvelope = HelperRequest.options[0].extend({ state: z.unknown() });

/**
 * parseRequestLine, remembering the state of the last apply it accepted. The engine sends its whole
 * state again every 30 s, mostly unchanged, and checking a 1,000-rule filter again costs 15–30 ms of
 * CPU (200 when V8 has let the code go cold), taken from the tunnel on a busy host. A state whose
 * JSON text is the one last accepted is that state, so only the request around it is checked.
 */
export class RequestParser {
  private last: { text: string; state: DesiredState } | null = null;

  parse(line: Buffer): ParsedLine {
    const decoded = decodeLine(line);
    if (!decoded.ok) return decoded;
    const { json } = decoded;
    const text = applyStateText(json);
    if (text !== null && text === this.last?.text) {
      const envelope = ApplyEnvelope.safeParse(json);
      // A copy, as a parse would give: what the backend does with one request's state stays there.
      if (envelope.success)
        return { ok: true, request: { ...envelope.data, state: structuredClone(this.last.state) } };
    }
    const parsed = validateRequest(json);
    if (parsed.ok && parsed.request.op === 'apply' && text !== null)
      this.last = { text, state: structuredClone(parsed.request.state) };
    return parsed;
  }
}

/** The JSON text of an apply request's state; null for anything else. */
function applyStateText(json: unknown): string | null {
  if (typeof json !== 'object' || json === null || !('op' in json) || json.op !== 'apply') return null;
  return 'state' in json ? JSON.stringify(json.state) : null;
}

function decodeLine(line: Buffer): { ok: true; json: unknown } | { ok: false; id: null; message: string } {
  let text: string;
  try {
    text = utf8.decode(line);
  } catch {
    return { ok: false, id: null, message: 'request is not valid UTF-8' };
  }
  try {
    return { ok: true, json: JSON.parse(text) };
  } catch (e) {
    return { ok: false, id: null, message: `request is not valid JSON (${(e as Error).message})` };
  }
}

function validateRequest(json: unknown): ParsedLine {
  const id = requestId(json);
  const parsed = HelperRequest.safeParse(json);
  if (!parsed.success) {
    return { ok: false, id, message: summarize(parsed.error.issues.map((i) => problem(i.path, i.message))) };
  }
  const problems = parsed.data.op === 'apply' ? checkState(parsed.data.state) : [];
  if (problems.length > 0) return { ok: false, id, message: summarize(problems) };
  return { ok: true, request: parsed.data };
}

/** The request's id when it has a usable one, so even a refusal can be matched to its request. */
function requestId(json: unknown): number | null {
  if (typeof json !== 'object' || json === null || !('id' in json)) return null;
  const id = json.id;
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : null;
}

function checkState(state: DesiredState): string[] {
  const problems: string[] = [];
  state.interface.addresses.forEach((text, i) => {
    const p = parsePrefix(text) as Prefix;
    if (inAny(p, UNASSIGNABLE)) {
      const path = ['state', 'interface', 'addresses', i];
      problems.push(problem(path, 'must not be an unspecified, loopback, link-local or multicast address'));
    }
  });
  // An address brings its subnet's route with it, so a wide one takes over the machine's traffic.
  problems.push(...exitRouteProblems(['state', 'interface', 'addresses'], state.interface.addresses, ''));
  state.routes.forEach((text, i) => {
    if (inAny(parsePrefix(text) as Prefix, UNROUTABLE)) {
      problems.push(problem(['state', 'routes', i], 'link-local and multicast prefixes are not routed'));
    }
  });
  problems.push(
    ...exitRouteProblems(
      ['state', 'routes'],
      state.routes,
      '; the default route goes through the tunnel with exitNode',
    ),
  );
  const exit = state.exitNode;
  if (exit !== undefined) {
    // These pass the kill switch: wide ones would switch it off.
    const wide = (['bypass', 'allowedLan'] as const).flatMap((field) =>
      exitRouteProblems(['state', 'exitNode', field], exit[field], ''),
    );
    problems.push(...wide);
    const both = exitRouteFamilies([...exit.bypass, ...exit.allowedLan]);
    if (wide.length === 0 && both.length > 0) {
      problems.push(
        problem(['state', 'exitNode'], `bypass and allowedLan together ${describeExitRoute(both)}`),
      );
    }
    if (state.router !== undefined && exitRouteFamilies(state.router.routes).length > 0) {
      problems.push(problem(['state', 'exitNode'], 'a node that offers itself as exit node cannot use one'));
    }
  }
  problems.push(...dnsResolverProblems(state));
  const ownKey = publicKeyOf(state.interface.privateKey);
  const peerByKey = new Map<string, number>();
  const peerByAllowedIP = new Map<string, number>();
  state.peers.forEach((peer, i) => {
    const keyPath = ['state', 'peers', i, 'publicKey'];
    if (peer.publicKey === ownKey) problems.push(problem(keyPath, "is the interface's own public key"));
    const first = peerByKey.get(peer.publicKey);
    if (first !== undefined) problems.push(problem(keyPath, `repeats state.peers[${first}].publicKey`));
    else peerByKey.set(peer.publicKey, i);
    peer.allowedIPs.forEach((cidr, j) => {
      const canonical = canonicalPrefix(cidr) as string;
      const owner = peerByAllowedIP.get(canonical);
      if (owner !== undefined && owner !== i) {
        const path = ['state', 'peers', i, 'allowedIPs', j];
        problems.push(problem(path, `${cidr} is already allowed for state.peers[${owner}]`));
      } else {
        peerByAllowedIP.set(canonical, i);
      }
    });
  });
  return problems;
}

/**
 * The OS's DNS may be redirected only to the engine's resolver on this interface's own addresses:
 * anything else would hand every local process's queries (root's too) to a host the request names.
 */
function dnsResolverProblems(state: DesiredState): string[] {
  const resolver = state.dns?.resolver;
  if (resolver === undefined) return [];
  const own = new Set(
    state.interface.addresses.map((text) => formatAddr((parsePrefix(text) as Prefix).addr)),
  );
  return (['ipv4', 'ipv6'] as const).flatMap((family) => {
    const text = resolver[family];
    const addr = text === undefined ? null : parseAddr(text);
    if (addr === null || own.has(formatAddr(addr))) return [];
    return [problem(['state', 'dns', 'resolver', family], 'must be one of state.interface.addresses')];
  });
}

/** X25519 public key of a WireGuard private key (both in base64), as `wg pubkey` computes it. */
export function publicKeyOf(privateKey: string): string {
  const pkcs8 = Buffer.concat([X25519_PKCS8_PREFIX, Buffer.from(privateKey, 'base64')]);
  const spki = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({
    format: 'der',
    type: 'spki',
  });
  return spki.subarray(-32).toString('base64');
}
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/**
 * Refuses an exit route (protocol/src/exit-route.ts) in a field outside the exit-node path: names the
 * entry when one prefix is one by itself, else the field, whose prefixes together are one.
 */
function exitRouteProblems(path: Path, prefixes: readonly string[], hint: string): string[] {
  const single = prefixes.flatMap((text, i) => {
    const families = exitRouteFamilies([text]);
    return families.length > 0 ? [problem([...path, i], `${describeExitRoute(families)}${hint}`)] : [];
  });
  if (single.length > 0) return single;
  const families = exitRouteFamilies(prefixes);
  return families.length > 0 ? [problem(path, `together ${describeExitRoute(families)}${hint}`)] : [];
}

function problem(path: Path, message: string): string {
  return `${formatPath(path)}: ${message}`;
}

/** `state.peers[2].allowedIPs[0]`; the request itself is `request`. */
export function formatPath(path: Path): string {
  if (path.length === 0) return 'request';
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
}

function summarize(problems: string[]): string {
  const shown = problems.slice(0, MAX_REPORTED_PROBLEMS).join('; ');
  const more = problems.length - MAX_REPORTED_PROBLEMS;
  return more > 0 ? `${shown}; and ${more} more` : shown;
}
