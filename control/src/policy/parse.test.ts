import { describe, expect, it } from 'vitest';
import { PolicyError, type PolicyIssue } from './errors.js';
import { parsePolicy } from './parse.js';

/** The issues a refused policy reports, as `line:column message`. */
function refusal(text: string): string[] {
  try {
    parsePolicy(text);
  } catch (e) {
    if (e instanceof PolicyError)
      return e.issues.map((i: PolicyIssue) => `${i.pos?.line}:${i.pos?.column} ${i.message}`);
    throw e;
  }
  throw new Error('the policy was accepted');
}

const BASE = `{
  "groups": { "group:dev": ["alice@example.com"] },
  "tagOwners": { "tag:web": ["group:dev"] },
  "hosts": { "db": "10.1.2.3", "lan": "192.168.0.0/16" },
`;

describe('parsePolicy', () => {
  it('reads HuJSON: comments and trailing commas', () => {
    const policy = parsePolicy(`// who reaches what
{
  "tagOwners": { "tag:web": ["alice@example.com",], },
  /* one rule */
  "acls": [
    { "action": "accept", "src": ["alice@example.com"], "dst": ["tag:web:443,8000-8080"], },
  ],
}`);
    expect(policy.acls).toHaveLength(1);
    expect(policy.acls[0]?.dst[0]?.ports).toEqual([
      { first: 443, last: 443 },
      { first: 8000, last: 8080 },
    ]);
  });

  it('names the line and column of a syntax error', () => {
    expect(refusal('{\n  "acls": [\n    { "action": "accept" "src": [] }\n  ]\n}')).toEqual([
      '3:26 syntax error: expected ","',
    ]);
    expect(refusal('')).toEqual(['1:1 syntax error: expected a value']);
    expect(refusal('{ "acls": [] } []')).toEqual([
      '1:16 syntax error: unexpected text after the end of the document',
    ]);
  });

  it('refuses duplicate keys, which JSON leaves undefined', () => {
    expect(refusal('{\n  "hosts": {},\n  "hosts": {}\n}')).toEqual(['3:3 duplicate key "hosts"']);
  });

  it('refuses unknown and unsupported keys by name', () => {
    expect(refusal('{\n  "acl": []\n}')).toEqual([
      '2:3 unknown key "acl" in the policy (allowed: groups, hosts, tagOwners, acls, grants, autoApprovers, tests, ssh)',
    ]);
    expect(refusal('{ "nodeAttrs": [] }')).toEqual([
      '1:3 "nodeAttrs" is a Tailscale policy key that Weft does not support',
    ]);
    expect(
      refusal(`${BASE}"acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"], "users": [] }] }`),
    ).toEqual(['5:62 unknown key "users" in an ACL (allowed: action, src, dst, proto)']);
  });

  it('refuses undeclared tags, undefined groups and unknown hosts where they are used', () => {
    const text = `${BASE}"acls": [
    { "action": "accept", "src": ["tag:db", "group:ops"], "dst": ["webserver:22"] },
  ],
}`;
    expect(refusal(text)).toEqual([
      '6:35 src: tag "tag:db" is not declared in tagOwners',
      '6:45 src: group "group:ops" is not defined',
      '6:67 dst "webserver:22": unknown alias "webserver": not a user, group, tag, host, IP address or autogroup',
    ]);
  });

  it('refuses bad addresses, prefixes and port ranges', () => {
    const text = `{
  "hosts": { "a": "10.0.0.1/8", "b": "300.1.1.1" },
  "acls": [
    { "action": "accept", "src": ["*"], "dst": ["10.0.0.0/8:ssh", "*:80-22", "*:70000", "*"] },
  ],
}`;
    expect(refusal(text)).toEqual([
      '2:19 host "a": "10.0.0.1/8" has host bits set after the /8 prefix',
      '2:38 host "b": "300.1.1.1" is not a valid IP address',
      '4:49 dst "10.0.0.0/8:ssh": port range "ssh": invalid first port "ssh"',
      '4:67 dst "*:80-22": port range "80-22": first port is after last port',
      '4:78 dst "*:70000": port range "70000": invalid first port "70000"',
      '4:89 dst: "*": expected alias:ports, for example tag:web:443 or *:*',
    ]);
  });

  it('refuses what Tailscale refuses in rules', () => {
    const text = `${BASE}"acls": [
    { "action": "deny", "src": ["autogroup:self"], "dst": ["autogroup:danger-all:*"] },
    { "action": "accept", "src": ["tag:web"], "dst": ["autogroup:self:*"] },
  ],
  "grants": [
    { "src": ["*"], "dst": ["*"] },
    { "src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["*"] },
    { "src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["autogroup:tagged"] },
    { "src": ["*"], "dst": ["*"], "app": { "tailscale.com/cap/funnel": [{}] } },
    { "src": ["*"], "dst": ["autogroup:self"], "ip": ["tcp:22"] },
  ],
}`;
    expect(refusal(text)).toEqual([
      '6:17 action "deny" is not supported: rules only accept, everything else is denied',
      '6:33 "autogroup:self" is not valid on the src side of a rule',
      '6:60 "autogroup:danger-all" cannot be used as a dst (it would match every address)',
      '7:35 autogroup:self can only be used with users, groups or autogroup:member as sources, not "tag:web"',
      '10:5 a grant needs "ip" (network access) or "app" (capabilities); both are empty',
      '11:29 dst "0.0.0.0/0": to allow all IP addresses, use "*" or "autogroup:internet"',
      '12:65 via "autogroup:tagged": via can only name tags (the routers to go through)',
      '13:44 capability "tailscale.com/cap/funnel": names in the tailscale.com domain are reserved',
      '14:15 autogroup:self can only be used with users, groups or autogroup:member as sources, not "*"',
    ]);
  });

  it('refuses the grants Tailscale refuses: app on autogroup:internet, port 0', () => {
    const text = `${BASE}"grants": [
    { "src": ["*"], "dst": ["autogroup:internet"], "app": { "example.com/cap/web": [{}] } },
    { "src": ["autogroup:member"], "dst": ["lan", "autogroup:internet"], "ip": ["tcp:443"], "app": { "example.com/cap/web": [{}] } },
    { "src": ["*"], "dst": ["tag:web"], "ip": ["tcp:0", "0", "0-80", "udp:0"] },
  ],
  "acls": [{ "action": "accept", "src": ["*"], "dst": ["tag:web:0", "db:0-22"] }],
  "tests": [{ "src": "alice@example.com", "accept": ["db:0"] }],
}`;
    expect(refusal(text)).toEqual([
      '6:29 "app" capabilities cannot be granted on autogroup:internet (use "ip" for network access)',
      '7:51 "app" capabilities cannot be granted on autogroup:internet (use "ip" for network access)',
      '8:48 ip "tcp:0": port range "0": first port must be >0, or use "*" for all ports',
      '8:57 ip "0": port range "0": first port must be >0, or use "*" for all ports',
      '8:62 ip "0-80": port range "0-80": first port must be >0, or use "*" for all ports',
      '8:70 ip "udp:0": port range "0": first port must be >0, or use "*" for all ports',
      '10:56 dst "tag:web:0": port range "0": first port must be >0, or use "*" for all ports',
      '10:69 dst "db:0-22": port range "0-22": first port must be >0, or use "*" for all ports',
      '11:54 test destination "db:0": the port must be one number from 1 to 65535',
    ]);
  });

  it("reads grant ip entries in Tailscale's grammar: one port or range each, proto * or 0 for all", () => {
    const policy = parsePolicy(`${BASE}"grants": [{ "src": ["*"], "dst": ["tag:web"],
    "ip": ["*:22", "TCP:0443", "0:80-90", "6:22", "dccp:*", "icmpv4:*", "tsmp:*"] }],
}`);
    expect(policy.grants[0]?.ip).toEqual([
      { ports: [{ first: 22, last: 22 }] },
      { protos: [6], ports: [{ first: 443, last: 443 }] },
      { ports: [{ first: 80, last: 90 }] },
      { protos: [6], ports: [{ first: 22, last: 22 }] },
      { protos: [33], ports: [{ first: 0, last: 65535 }] },
      { protos: [1], ports: [{ first: 0, last: 65535 }] },
      { protos: [99], ports: [{ first: 0, last: 65535 }] },
    ]);
    const text = `${BASE}"grants": [{ "src": ["*"], "dst": ["tag:web"],
    "ip": ["22,80", "tcp:22,80", "tcp,udp:22", ":22", "tcp:", "constructor:22"] }],
}`;
    expect(refusal(text)).toEqual([
      '6:12 ip "22,80": "22,80": one port or range per entry (write "80", "443")',
      '6:21 ip "tcp:22,80": "22,80": one port or range per entry (write "80", "443")',
      '6:34 ip "tcp,udp:22": name one protocol (a name, a number or *)',
      '6:48 ip ":22": the protocol before ":" is empty',
      '6:55 ip "tcp:": port range "": invalid first port ""',
      '6:63 ip "constructor:22": unknown protocol "constructor" (use a name such as tcp, udp, icmp or a number 0-255)',
    ]);
  });

  it('reads null as a left-out grant field, as Tailscale does ("via": null)', () => {
    const policy = parsePolicy(`${BASE}"grants": [
    { "src": ["*"], "dst": ["tag:web"], "ip": ["tcp:443"], "via": null, "app": null },
    { "src": ["*"], "dst": ["tag:web"], "ip": null, "app": { "example.com/cap/web": [{}] } },
  ],
}`);
    expect(policy.grants.map((g) => [g.ip.length, g.via.length, g.app !== undefined])).toEqual([
      [1, 0, false],
      [0, 0, true],
    ]);
    expect(
      refusal(`${BASE}"grants": [{ "src": ["*"], "dst": ["tag:web"], "ip": null, "app": null }] }`),
    ).toEqual(['5:12 a grant needs "ip" (network access) or "app" (capabilities); both are empty']);
  });

  it('reads null sections, lists and protocols, and an empty proto, as left out', () => {
    const policy = parsePolicy(`{
  "groups": null, "hosts": null, "tagOwners": null, "grants": null, "ssh": null,
  "autoApprovers": { "routes": null, "exitNode": null },
  "acls": [{ "action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:22"], "proto": "" }],
  "tests": [{ "src": "alice@example.com", "accept": ["alice@example.com:22"], "deny": null, "proto": null }],
}`);
    expect(policy.acls[0]?.protos).toBeUndefined();
    expect(policy.tests[0]?.proto).toBeUndefined();
    expect(policy.grants).toEqual([]);
    expect(refusal(`{ "tests": [{ "src": "alice@example.com", "accept": null }] }`)).toEqual([
      '1:13 a test needs "accept" or "deny" destinations',
    ]);
  });

  it('refuses a test with empty accept and deny lists: it checks nothing', () => {
    expect(refusal(`{ "tests": [{ "src": "alice@example.com", "accept": [], "deny": [] }] }`)).toEqual([
      '1:13 a test needs "accept" or "deny" destinations',
    ]);
  });

  it('checks tests, autoApprovers and ssh rules', () => {
    const text = `${BASE}"autoApprovers": { "routes": { "10.0.0.0/33": ["tag:web"] }, "exitNode": ["tag:exit"] },
  "tests": [
    { "src": "alice@example.com", "accept": ["tag:web:*", "lan:22", "db/32:22"] },
    { "accept": ["db:22"] },
  ],
  "ssh": [{ "action": "allow", "src": ["group:dev"], "dst": ["tag:web"], "users": ["root"] }],
}`;
    expect(refusal(text)).toEqual([
      '5:32 autoApprovers route: "10.0.0.0/33" is not a valid CIDR prefix',
      '5:75 exitNode approvers: tag "tag:exit" is not declared in tagOwners',
      '7:46 test destination "tag:web:*": the port must be one number from 1 to 65535',
      '7:59 test destination "lan:22" must be a user, tag, host or single IP address with one port',
      '7:69 test destination "db/32:22": name one address (an IP without a /prefix, or a host)',
      '8:5 a test needs "src"',
      '10:23 ssh action "allow" must be "accept" or "check"',
    ]);
  });

  it('classifies every alias form', () => {
    const policy = parsePolicy(`${BASE}"grants": [{
    "src": ["alice@example.com", "bob@", "user:*@example.com", "group:dev", "tag:web", "db", "100.64.0.0/10",
            "fd7a:115c:a1e0::1", "autogroup:member", "autogroup:tagged", "autogroup:danger-all", "*"],
    "dst": ["autogroup:internet", "lan"],
    "ip": ["tcp:443", "udp:53", "icmp:*", "80-90", "*"],
  }],
}`);
    const grant = policy.grants[0];
    expect(grant?.src.map((s) => s.alias.kind)).toEqual([
      'user',
      'user',
      'userDomain',
      'group',
      'tag',
      'host',
      'ip',
      'ip',
      'autogroup',
      'autogroup',
      'autogroup',
      'wildcard',
    ]);
    expect(grant?.ip).toEqual([
      { protos: [6], ports: [{ first: 443, last: 443 }] },
      { protos: [17], ports: [{ first: 53, last: 53 }] },
      { protos: [1], ports: [{ first: 0, last: 65535 }] },
      { ports: [{ first: 80, last: 90 }] },
      { ports: [{ first: 0, last: 65535 }] },
    ]);
  });
});
