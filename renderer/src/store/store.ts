import type { BridgeClient, CallInput, CallName, CallOutput } from '@weft/protocol';
import { useStore } from 'zustand';
import { createStore, type StoreApi } from 'zustand/vanilla';
import { type Action, initialData, reduce, type StoreData } from './reducers.js';

// One zustand store, slices `session` and `ui`, fed only by the bridge: boot from one snapshot,
// then follow events. Every change goes through the pure reducers.

export interface WeftStore extends StoreData {
  dispatch(action: Action): void;
  /** Runs a bridge call, marking it busy; a failure becomes an error toast and resolves undefined. */
  run<K extends CallName>(name: K, input?: CallInput<K>): Promise<CallOutput<K> | undefined>;
}

export function createWeftStore(bridge: BridgeClient): StoreApi<WeftStore> {
  const store = createStore<WeftStore>()((set, get) => ({
    ...initialData(),
    dispatch(action) {
      set((s) => reduce(s, action));
    },
    async run(name, input) {
      const { dispatch } = get();
      dispatch({ type: 'busy', call: name, on: true });
      try {
        const call = bridge[name] as (i?: unknown) => Promise<CallOutput<typeof name>>;
        return await call(input);
      } catch (e) {
        dispatch({ type: 'toast', level: 'error', message: (e as Error).message });
        return undefined;
      } finally {
        dispatch({ type: 'busy', call: name, on: false });
      }
    },
  }));
  return store;
}

/** Subscribes to events first, then asks for the snapshot (the reducer keeps the newest). */
export async function boot(store: StoreApi<WeftStore>, bridge: BridgeClient): Promise<void> {
  const { dispatch } = store.getState();
  bridge.on('state', (state) => dispatch({ type: 'state', state }));
  bridge.on('notice', (n) => dispatch({ type: 'toast', level: n.level, message: n.message }));
  bridge.on('navigate', (n) => dispatch({ type: 'navigate', view: n.view }));
  try {
    dispatch({ type: 'state', state: await bridge.getState() });
  } catch (e) {
    dispatch({ type: 'bootError', message: (e as Error).message });
  }
}

let current: StoreApi<WeftStore> | null = null;

export function setAppStore(s: StoreApi<WeftStore>): void {
  current = s;
}

export function useWeft<T>(selector: (s: WeftStore) => T): T {
  if (!current) throw new Error('store not set');
  return useStore(current, selector);
}
