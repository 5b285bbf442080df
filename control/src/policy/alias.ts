import { parseAddr, parsePrefix } from '@weft/protocol';
import { IPSet } from './ipset.js';
import {
  ALL_PORTS,
  type Alias,
  AUTOGROUPS,
  type AutogroupName,
  type NetSpec,
  type PortRange,
} from './types.js';

// Classifying the words of the policy language: aliases, port lists and protocols.
// Each function returns the value or an error message; the caller attaches the position.

export type Result<T> = { ok: true; value: T } | { ok: false; error: string };

const ok = <T>(value: T): Result<T> => ({ ok: true, value });
const fail = <T>(error: string): Result<T> => ({ ok: false, error });

export interface AliasScope {
  groups: ReadonlySet<string>;
  hosts: ReadonlyMap<string, IPSet>;
  tags: ReadonlySet<string>;
}

const TAG = /^tag:[A-Za-z][A-Za-z0-9-]*$/;
const GROUP = /^group:[A-Za-z0-9][A-Za-z0-9._-]*$/;
const EMAIL = /^[^@\s:]+@[^@\s:]+$/;
const USER_NAME = /^[^@\s:]+@$/;
const DOMAIN = /^[A-Za-z0-9.-]+$/;
const HOST = /^[A-Za-z][A-Za-z0-9._-]*$/;

export function isTagName(text: string): boolean {
  return TAG.test(text);
}

export function isGroupName(text: string): boolean {
  return GROUP.test(text);
}

export function isHostName(text: string): boolean {
  return HOST.test(text);
}

/** Parses an address or a prefix; a prefix with host bits set is refused, as in Tailscale. */
export function parseIPAlias(text: string): Result<IPSet> {
  if (text.includes('/')) {
    const loose = parsePrefix(text);
    if (loose === null) return fail(`"${text}" is not a valid CIDR prefix`);
    if (parsePrefix(text, { strict: true }) === null) {
      return fail(`"${text}" has host bits set after the /${loose.bits} prefix`);
    }
    return ok(IPSet.fromPrefixes([loose]));
  }
  const addr = parseAddr(text);
  return addr === null ? fail(`"${text}" is not a valid IP address`) : ok(IPSet.fromAddrs([addr]));
}

function looksLikeIP(text: string): boolean {
  return /^[0-9.]+(\/.*)?$/.test(text) || (text.includes(':') && /^[0-9a-fA-F:.]+(\/.*)?$/.test(text));
}

export function classifyAlias(text: string, scope: AliasScope): Result<Alias> {
  if (text === '*') return ok({ kind: 'wildcard' });
  if (text.startsWith('autogroup:')) {
    const name = text.slice('autogroup:'.length);
    return (AUTOGROUPS as readonly string[]).includes(name)
      ? ok({ kind: 'autogroup', name: name as AutogroupName })
      : fail(`unknown autogroup "${text}" (known: ${AUTOGROUPS.map((a) => `autogroup:${a}`).join(', ')})`);
  }
  if (text.startsWith('group:')) {
    if (!GROUP.test(text)) return fail(`"${text}" is not a valid group name`);
    return scope.groups.has(text)
      ? ok({ kind: 'group', name: text })
      : fail(`group "${text}" is not defined`);
  }
  if (text.startsWith('tag:')) {
    if (!TAG.test(text)) return fail(`"${text}" is not a valid tag name`);
    return scope.tags.has(text)
      ? ok({ kind: 'tag', name: text })
      : fail(`tag "${text}" is not declared in tagOwners`);
  }
  if (text.startsWith('user:')) {
    const m = /^user:\*@(.+)$/.exec(text);
    if (!m || !DOMAIN.test(m[1] as string))
      return fail(`"${text}" is not a valid user alias (use user:*@domain)`);
    return ok({ kind: 'userDomain', domain: (m[1] as string).toLowerCase() });
  }
  if (text.includes('@')) {
    if (USER_NAME.test(text)) return ok({ kind: 'user', name: text.slice(0, -1) });
    if (EMAIL.test(text)) return ok({ kind: 'user', email: text.toLowerCase() });
    return fail(`"${text}" is not a valid user`);
  }
  const host = scope.hosts.get(text);
  if (host) return ok({ kind: 'host', name: text, set: host });
  if (looksLikeIP(text)) {
    const ip = parseIPAlias(text);
    return ip.ok ? ok({ kind: 'ip', set: ip.value }) : ip;
  }
  return fail(`unknown alias "${text}": not a user, group, tag, host, IP address or autogroup`);
}

function parsePort(text: string, which: string, spec: string): Result<number> {
  // Decimal digits only; leading zeros are fine, as Go's ParseUint reads them.
  if (!/^[0-9]+$/.test(text) || Number(text) > 65535)
    return fail(`port range "${spec}": invalid ${which} port "${text}"`);
  return ok(Number(text));
}

/**
 * `*`, or a comma-separated list of ports and `first-last` ranges. Port 0 cannot start a range:
 * Tailscale refuses it (all ports are `*`, and a FilterRule's port 0 means something else).
 */
export function parsePorts(text: string): Result<PortRange[]> {
  if (text === '*') return ok([ALL_PORTS]);
  const out: PortRange[] = [];
  for (const part of text.split(',')) {
    const dash = part.indexOf('-');
    const first = parsePort(dash < 0 ? part : part.slice(0, dash), 'first', text);
    if (!first.ok) return first;
    if (first.value === 0)
      return fail(`port range "${part}": first port must be >0, or use "*" for all ports`);
    const last = dash < 0 ? first : parsePort(part.slice(dash + 1), 'last', text);
    if (!last.ok) return last;
    if (last.value < first.value) return fail(`port range "${part}": first port is after last port`);
    out.push({ first: first.value, last: last.value });
  }
  return ok(out);
}

/** IANA protocol numbers of the names Tailscale's policy language accepts (any case). */
const PROTOCOLS: Record<string, number> = {
  icmp: 1,
  icmpv4: 1,
  igmp: 2,
  ipv4: 4,
  'ip-in-ip': 4,
  tcp: 6,
  egp: 8,
  igp: 9,
  udp: 17,
  dccp: 33,
  gre: 47,
  esp: 50,
  ah: 51,
  'ipv6-icmp': 58,
  icmpv6: 58,
  tsmp: 99,
  sctp: 132,
};

export function parseProto(text: string): Result<number> {
  if (/^[0-9]+$/.test(text) && Number(text) <= 255) return ok(Number(text));
  const n = Object.hasOwn(PROTOCOLS, text.toLowerCase()) ? PROTOCOLS[text.toLowerCase()] : undefined;
  return n === undefined
    ? fail(`unknown protocol "${text}" (use a name such as tcp, udp, icmp or a number 0-255)`)
    : ok(n);
}

/**
 * A grant `ip` entry, in Tailscale's grammar: `*`, or `[proto:]ports` where proto is `*`, a name
 * or a number (0 and `*` mean TCP, UDP and ICMP) and ports is `*`, one port or one `first-last`
 * range (no lists: give several entries).
 */
export function parseProtoPorts(text: string): Result<NetSpec> {
  if (text === '*') return ok({ ports: [ALL_PORTS] });
  const colon = text.lastIndexOf(':');
  const protoText = colon < 0 ? '*' : text.slice(0, colon);
  const portText = colon < 0 ? text : text.slice(colon + 1);
  if (protoText === '') return fail('the protocol before ":" is empty');
  if (protoText.includes(',')) return fail('name one protocol (a name, a number or *)');
  let protos: number[] | undefined;
  if (protoText !== '*') {
    const proto = parseProto(protoText);
    if (!proto.ok) return proto;
    if (proto.value !== 0) protos = [proto.value];
  }
  if (portText.includes(',')) return fail(`"${portText}": one port or range per entry (write "80", "443")`);
  const ports = parsePorts(portText);
  if (!ports.ok) return ports;
  return ok({ ...(protos ? { protos } : {}), ports: ports.value });
}

/**
 * Splits `alias:ports`. The ports follow the last colon, so IPv6 prefixes work as written
 * (`fd00::/64:443`); a bare IPv6 address needs brackets (`[fd00::1]:443`).
 */
export function splitAliasPorts(text: string): Result<{ alias: string; ports: string }> {
  if (text.startsWith('[')) {
    const close = text.indexOf(']:');
    if (close < 0) return fail(`"${text}": expected [address]:ports`);
    return ok({ alias: text.slice(1, close), ports: text.slice(close + 2) });
  }
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return fail(`"${text}": expected alias:ports, for example tag:web:443 or *:*`);
  return ok({ alias: text.slice(0, colon), ports: text.slice(colon + 1) });
}
