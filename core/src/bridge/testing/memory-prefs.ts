import type { Preferences } from '@weft/protocol';
import { DEFAULT_PREFERENCES, type PrefsStore } from '../controller.js';

/** Preferences kept in memory, starting from the defaults with `initial` over them. */
export function memoryPrefsStore(initial: Partial<Preferences> = {}): PrefsStore & { saved: Preferences } {
  const store = {
    saved: { ...DEFAULT_PREFERENCES, ...initial },
    load: () => ({ ...store.saved }),
    save: (prefs: Preferences) => {
      store.saved = prefs;
    },
  };
  return store;
}
