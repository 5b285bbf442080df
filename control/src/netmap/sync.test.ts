import type { StreamServerMessage } from '@weft/protocol';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Store } from '../db/store.js';
import { cleanupAll, onCleanup } from '../testing/harness.js';
import { connectedHub, TEST_RANGES, testNode } from '../testing/nodes.js';
import { storeWithNode } from '../testing/store.js';
import { NetmapHub, type StreamSession } from './hub.js';
import { PolicyVisibility, wildcardSourcesOf } from './policy-visibility.js';
import { NetmapSync } from './sync.js';

// A writer commits and then asks for its nodes' rows; if that read fails (a PostgreSQL connection
// reset), the committed change must still reach the hub: the change feed skips this process's own
// commits, so nothing else would bring it.

afterEach(cleanupAll);

describe('NetmapSync', () => {
  it('reloads every node when reading the changed ones fails', async () => {
    const store = await storeWithNode();
    const hub = new NetmapHub(new PolicyVisibility(wildcardSourcesOf(TEST_RANGES)), TEST_RANGES);
    const warnings: string[] = [];
    const log = { info() {}, warn: (line: string) => void warnings.push(line), error() {} };
    const sync = new NetmapSync(store, hub, log);
    onCleanup(() => sync.close());
    await sync.refresh();

    await store.updateNode('n1', { endpoints: ['203.0.113.7:41641'] });
    vi.spyOn(store, 'nodesByIds').mockRejectedValueOnce(new Error('connection reset'));
    await sync.refreshNodes(['n1']);
    expect(hub.record('n1')?.endpoints).toEqual(['203.0.113.7:41641']);
    expect(warnings).toEqual([expect.stringMatching(/reloading all: connection reset/)]);
  });

  it("tells a stream's end to its peers when neither read succeeds", async () => {
    // The hub leaves a closed stream's news to the reload of its last seen (NetmapHub.disconnect).
    const messages: StreamServerMessage[] = [];
    const { hub, sessions } = connectedHub([testNode(1, null), testNode(2, null)], null, (nodeId) => ({
      nodeId,
      send: (m: StreamServerMessage) => void (nodeId === 'n1' && messages.push(m)),
      close() {},
    }));
    const down = async () => {
      throw new Error('connection reset');
    };
    const store = { nodesByIds: down, listNodes: down } as unknown as Store;
    const sync = new NetmapSync(store, hub, { info() {}, warn() {}, error() {} });
    onCleanup(() => sync.close());
    const before = messages.length;
    hub.disconnect(sessions.get('n2') as StreamSession, true);
    expect(messages.slice(before)).toEqual([]);
    await expect(sync.refreshNodes(['n2'])).rejects.toThrow('connection reset');
    expect(messages.slice(before)).toEqual([
      {
        type: 'delta',
        mapToken: expect.any(String),
        peersUpserted: [expect.objectContaining({ id: 'n2', online: false })],
      },
    ]);
  });
});
