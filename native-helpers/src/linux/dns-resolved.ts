import { TAILNET_DNS_IPV4 } from '@weft/protocol';

// systemd-resolved, where it runs: per-link DNS on the WireGuard interface with `resolvectl` (the
// same settings its D-Bus API takes). `~.` makes the link the route for every name, so queries go to
// 100.100.100.100 (redirected to the engine) and the other links' servers stay as they are: taking
// the link's settings back (`resolvectl revert`, or the link going away) restores resolved exactly.

export type ResolvectlCommand = readonly string[];

/** The commands that make resolved send every query for this link to the tailnet resolver. */
export function resolvedApplyPlan(iface: string, searchDomains: readonly string[]): ResolvectlCommand[] {
  return [
    ['resolvectl', 'dns', iface, TAILNET_DNS_IPV4],
    ['resolvectl', 'domain', iface, ...searchDomains, '~.'],
    ['resolvectl', 'default-route', iface, 'true'],
  ];
}

export function resolvedRevertPlan(iface: string): ResolvectlCommand[] {
  return [['resolvectl', 'revert', iface]];
}

/** The command whose success says resolved is running (it fails when resolved is not there). */
export const RESOLVED_PROBE: ResolvectlCommand = ['resolvectl', '--no-pager', 'status'];
