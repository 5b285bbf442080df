import type { NetMap } from '@weft/protocol';
import { describeError, type Logger } from '../log/logger.js';
import { LatestWriter } from './latest-writer.js';
import type { StateStore } from './store.js';

// The netmap kept on disk, so a restarted engine brings the tunnel up before control answers.
// Only a cache: the engine holds the netmap, and control sends a full one again.

export class NetmapCache {
  private readonly writer: LatestWriter<NetMap>;

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {
    this.writer = new LatestWriter(
      (m) => store.saveNetmap(m),
      (err) => log.warn(`could not cache the netmap: ${describeError(err)}`),
    );
  }

  /** The cached netmap; null when there is none or it cannot be read. */
  async load(): Promise<NetMap | null> {
    try {
      return await this.store.loadNetmap();
    } catch (err) {
      this.log.warn(`ignoring the cached netmap: ${describeError(err)}`);
      return null;
    }
  }

  save(netmap: NetMap): void {
    this.writer.push(netmap);
  }

  /** Deletes the cache, and a netmap saved just before that is not written yet (at logout). */
  async delete(): Promise<void> {
    this.writer.discard();
    await this.writer.flush();
    await this.store.deleteNetmap();
  }

  /** Resolves once every netmap saved so far is written (or has failed). */
  flush(): Promise<void> {
    return this.writer.flush();
  }
}
