import type { DnsSettings } from '@weft/protocol';
import type { Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import type { NetmapHub } from '../netmap/hub.js';
import { CoalescingRefresh } from '../refresh.js';
import { loadDnsSettings } from './settings.js';

// The DNS settings in force follow the database like the policy does: `dns set` (another process)
// commits, the change feed calls refresh(), and every connected node is sent the new settings once.
// Stored settings that do not parse are logged and the previous ones stay.

export class DnsSync {
  private json = '';
  private readonly refresher = new CoalescingRefresh(() => this.load());

  constructor(
    private readonly store: Store,
    private readonly hub: NetmapHub,
    private readonly log: Logger,
  ) {}

  refresh(): Promise<void> {
    return this.refresher.run();
  }

  private async load(): Promise<void> {
    let settings: DnsSettings;
    try {
      settings = await loadDnsSettings(this.store);
    } catch (err) {
      this.log.error(`${errorText(err)}; the previous DNS settings stay`);
      return;
    }
    const json = JSON.stringify(settings);
    if (json === this.json) return;
    this.json = json;
    this.hub.dnsChanged(settings);
  }
}
