import { type AddressInfo, createServer } from 'node:net';
import { REGISTER_PATH } from '@weft/protocol';
import { promSample } from '@weft/protocol/prometheus';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, freePort, onCleanup, startTestControl, TestMachine } from '../testing/harness.js';

afterEach(cleanupAll);

async function scrape(url: string | null): Promise<string> {
  if (url === null) throw new Error('no metrics listener');
  const res = await fetch(url);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

describe('control metrics', () => {
  it('count registrations, streams, online nodes, fan-outs, store calls and requests', async () => {
    const t = await startTestControl({ config: { metricsListen: { host: '127.0.0.1', port: 0 } } });
    const before = await scrape(t.control.metricsUrl);
    expect(promSample(before, 'weft_control_registrations_total', 'protocol="weft"')).toBeUndefined();
    expect(promSample(before, 'weft_control_streams_open')).toBe(0);
    expect(promSample(before, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    const key = await t.key('--reusable');
    const a = new TestMachine(t);
    await a.join('a', key);
    const sa = await a.stream();
    await sa.until('a full map', (c) => c.netmap !== null);
    const b = new TestMachine(t);
    await b.join('b', key);
    await sa.until('b in a’s map', (c) => c.peerNames().includes('b'));

    const after = await scrape(t.control.metricsUrl);
    expect(promSample(after, 'weft_control_registrations_total', 'protocol="weft"')).toBe(2);
    expect(promSample(after, 'weft_control_streams_open')).toBe(1);
    expect(promSample(after, 'weft_control_nodes_online')).toBe(1);
    // b's join reached a's stream as a delta: one fan-out observed at least.
    expect(promSample(after, 'weft_control_fanout_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(
      promSample(after, 'weft_control_db_query_seconds_count', 'operation="listNodes",outcome="ok"'),
    ).toBeGreaterThan(0);
    expect(
      promSample(
        after,
        'weft_control_http_requests_total',
        `route="${REGISTER_PATH}",method="POST",status="200"`,
      ),
    ).toBe(2);
  });

  it('are not served without --metrics-listen, nor ever on the public port', async () => {
    const t = await startTestControl();
    expect(t.control.metricsUrl).toBeNull();
    const res = await fetch(`${t.control.url}/metrics`);
    expect(res.status).toBe(404);
  });

  it('on a taken address stop the start with the public port closed', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const metricsPort = (taken.address() as AddressInfo).port;
    const publicPort = await freePort();
    await expect(
      startTestControl({
        config: {
          listen: { host: '127.0.0.1', port: publicPort },
          metricsListen: { host: '127.0.0.1', port: metricsPort },
        },
      }),
    ).rejects.toThrow(/^cannot start control: .*EADDRINUSE/);
    await expect(fetch(`http://127.0.0.1:${publicPort}/healthz`)).rejects.toThrow();
  });
});
