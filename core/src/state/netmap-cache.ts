import type { NetMap } from '@weft/protocol';
import { describeError, type Logger } from '../log/logger.js';
import { LatestWriter } from './latest-writer.js';
import type { CachedNetmap, Login } from './schemas.js';
import type { StateStore } from './store.js';

// The netmap kept on disk with its map token, so a restarted engine brings the tunnel up before
// control answers and asks control to resume that map. Only a cache: anything unreadable, of
// another format or of another login is ignored, and control sends a whole map.

/** A map the engine holds and the token of its peers (null: none, a whole map is wanted). */
export interface HeldMap {
  netmap: NetMap;
  mapToken: string | null;
}

export class NetmapCache {
  private readonly writer: LatestWriter<CachedNetmap>;

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {
    this.writer = new LatestWriter(
      (m) => store.saveNetmap(m),
      (err) => log.warn(`could not cache the netmap: ${describeError(err)}`),
    );
  }

  /** The map cached under `login`; null when there is none, or it cannot be read or is another's. */
  async load(login: Login): Promise<HeldMap | null> {
    let cached: CachedNetmap | null;
    try {
      cached = await this.store.loadNetmap();
    } catch (err) {
      this.log.warn(`ignoring the cached netmap: ${describeError(err)}`);
      return null;
    }
    if (!cached) return null;
    // Another login's map (a logout that ended before deleting it, then a new sign-in) is not this
    // node's, nor its token. A key rotation rewrites the record under the new key; a crash before
    // that costs only the start before control answers.
    if (cached.controlUrl !== login.controlUrl || cached.nodePublicKey !== login.nodePublicKey) {
      this.log.warn(
        `ignoring the cached netmap: it is of another login (${cached.controlUrl}, node key ${cached.nodePublicKey})`,
      );
      return null;
    }
    return { netmap: cached.netmap, mapToken: cached.mapToken };
  }

  /** Writes the map and its token as one record (the latest of a burst), tied to `login`. */
  save(login: Login, held: HeldMap): void {
    this.writer.push({
      format: 2,
      controlUrl: login.controlUrl,
      nodePublicKey: login.nodePublicKey,
      mapToken: held.mapToken,
      netmap: held.netmap,
    });
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
