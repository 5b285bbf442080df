// The preload: the page's only way out. It exposes one object, `window.weft`, with two functions —
// call a bridge method, subscribe to bridge events — over two fixed IPC channels. Main validates
// every call against the bridge schema; the renderer validates every answer and event.
// A sandboxed preload is CommonJS and may require only 'electron', so the channel names are
// spelled here and a unit test checks them against protocol's BRIDGE_IPC.

import { contextBridge, type IpcRendererEvent, ipcRenderer } from 'electron';

const CALL = 'weft:bridge:call';
const EVENT = 'weft:bridge:event';

const api = {
  call(method: string, input: unknown): Promise<unknown> {
    if (typeof method !== 'string') return Promise.reject(new Error('method must be a string'));
    return ipcRenderer.invoke(CALL, method, input);
  },
  onEvent(listener: (message: unknown) => void): () => void {
    const wrapped = (_event: IpcRendererEvent, message: unknown) => listener(message);
    ipcRenderer.on(EVENT, wrapped);
    return () => {
      ipcRenderer.removeListener(EVENT, wrapped);
    };
  },
};

contextBridge.exposeInMainWorld('weft', api);

export type PreloadApi = typeof api;
export const PRELOAD_CHANNELS = { call: CALL, event: EVENT };
