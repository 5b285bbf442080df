import { expect, it } from 'vitest';
import { MAX_QUEUED, RelayProxy } from './relay-proxy.js';

// The trial queue's bounds: no sockets needed, a held peer's packets are kept before any is sent.

const KEY = Buffer.alloc(32, 7).toString('base64');

it('keeps at most 256 KiB of large relay frames for a held peer, dropping the rest', () => {
  const proxy = new RelayProxy({ send: () => true });
  proxy.hold(KEY, 'queue');
  const frame = 64 * 1024; // the largest relay frame: four fit in 256 KiB
  const fits = 4;
  for (let i = 0; i < fits + 2; i++) proxy.deliver(KEY, new Uint8Array(frame));
  expect(proxy.queued).toBe(fits);
  expect(proxy.dropped).toBe(2);
  // Dropping the queue frees its bytes: the next trial queues as many again.
  proxy.hold(KEY, 'drop');
  proxy.hold(KEY, 'queue');
  for (let i = 0; i < fits + 1; i++) proxy.deliver(KEY, new Uint8Array(frame));
  expect(proxy.queued).toBe(2 * fits);
});

it('keeps at most MAX_QUEUED small packets for a held peer', () => {
  const proxy = new RelayProxy({ send: () => true });
  proxy.hold(KEY, 'queue');
  for (let i = 0; i < MAX_QUEUED + 3; i++) proxy.deliver(KEY, new Uint8Array(100));
  expect(proxy.queued).toBe(MAX_QUEUED);
  expect(proxy.dropped).toBe(3);
});
