import { describe, expect, it } from 'vitest';
import type { Logger } from '../log.js';
import type { Sysctl } from './sysctl.js';
import { UdpBuffers } from './udp-buffers.js';

function setup(rmem: string, wmem: string, readOnly = false) {
  const values = new Map([
    ['net.core.rmem_max', rmem],
    ['net.core.wmem_max', wmem],
  ]);
  const writes: string[] = [];
  const sysctl: Sysctl = {
    read: async (k) => values.get(k) as string,
    write: async (k, v) => {
      if (readOnly) throw new Error(`EACCES: permission denied, open '/proc/sys/${k.replaceAll('.', '/')}'`);
      writes.push(`${k}=${v}`);
      values.set(k, v);
    },
  };
  const logged: string[] = [];
  const log: Logger = {
    info: (m) => logged.push(m),
    warn: (m) => logged.push(`warn: ${m}`),
    error: () => {},
  };
  return { values, writes, logged, buffers: new UdpBuffers(sysctl, log) };
}

describe('UdpBuffers', () => {
  it('raises low limits for the first holder and restores them after the last', async () => {
    const { values, writes, buffers } = setup('212992', '212992');
    await buffers.raise('wg0');
    await buffers.raise('wg1');
    expect(writes).toEqual(['net.core.rmem_max=7340032', 'net.core.wmem_max=7340032']);
    await buffers.release('wg0');
    expect(values.get('net.core.rmem_max')).toBe('7340032');
    await buffers.release('wg1');
    expect(values.get('net.core.rmem_max')).toBe('212992');
    expect(values.get('net.core.wmem_max')).toBe('212992');
  });

  it('leaves limits that are already high enough untouched', async () => {
    const { writes, buffers } = setup('16777216', '212992');
    await buffers.raise('wg0');
    await buffers.release('wg0');
    expect(writes).toEqual(['net.core.wmem_max=7340032', 'net.core.wmem_max=212992']);
  });

  it('does not restore a limit someone else changed meanwhile', async () => {
    const { values, buffers, logged } = setup('212992', '212992');
    await buffers.raise('wg0');
    values.set('net.core.rmem_max', '33554432');
    await buffers.release('wg0');
    expect(values.get('net.core.rmem_max')).toBe('33554432');
    expect(logged).toContain(
      'leaving net.core.rmem_max at 33554432: changed by someone else since it was raised',
    );
  });

  it('warns once and goes on when /proc/sys is read-only (a network namespace)', async () => {
    const { buffers, logged } = setup('212992', '212992', true);
    await buffers.raise('wg0');
    await buffers.release('wg0');
    await buffers.raise('wg1');
    expect(logged.filter((m) => m.startsWith('warn:'))).toEqual([
      "warn: cannot raise net.core.rmem_max (EACCES: permission denied, open '/proc/sys/net/core/rmem_max'); wireguard-go may drop packets under load",
    ]);
  });

  it('ignores a release from a holder that never raised', async () => {
    const { writes, buffers } = setup('212992', '212992');
    await buffers.raise('wg0');
    await buffers.release('wg9');
    expect(writes).toHaveLength(2);
  });
});
